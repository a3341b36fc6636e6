"""``office_home``: Office-Home, 4 domains = 4 tasks, 65 everyday object classes (15,588 images).

Venkateswara, Eusebio, Chakraborty & Panchanathan, "Deep hashing network for unsupervised domain
adaptation", CVPR 2017. A dataset of the GTTN paper (VGG-19 fc7 / pool5 features).
"""

from __future__ import annotations

from .download import TSINGHUA_MIRROR, domain_archives
from .images import ImageDatasetSource
from .source import register_source


@register_source
class OfficeHome(ImageDatasetSource):
    name = "office_home"
    folder = "office_home"
    task_folders = {"Art": "Art", "Clipart": "Clipart", "Product": "Product", "Real_World": "Real_World"}
    classes = (
        "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator", "Calendar",
        "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp", "Drill", "Eraser",
        "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork", "Glasses", "Hammer",
        "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade", "Laptop", "Marker", "Monitor", "Mop", "Mouse",
        "Mug", "Notebook", "Oven", "Pan", "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer", "Push_Pin",
        "Radio", "Refrigerator", "Ruler", "Scissors", "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda",
        "Speaker", "Spoon", "TV", "Table", "Telephone", "ToothBrush", "Toys", "Trash_Can", "Webcam",
    )
    expected_images = {"Art": 2427, "Clipart": 4365, "Product": 4439, "Real_World": 4357}
    downloads = domain_archives({
        "Art": TSINGHUA_MIRROR.format("4691878067d04755beab"),
        "Clipart": TSINGHUA_MIRROR.format("0d41e7da4558408ea5aa"),
        "Product": TSINGHUA_MIRROR.format("76186deacd7c4fa0a679"),
        "Real_World": TSINGHUA_MIRROR.format("dee961894cc64b1da1d7"),
    }, ".tgz")
    licence = "research and educational use only (Office-Home fair-use notice)"
    how_to_get = (
        "Get OfficeHomeDataset_10072016.zip from https://www.hemanthdv.org/officeHomeDataset.html "
        "and place the domains as <data-dir>/office_home/{Art,Clipart,Product,Real_World}"
        "/<class>/*.jpg. See datasets/office_home/README.md."
    )

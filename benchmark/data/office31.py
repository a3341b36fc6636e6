"""``office31``: Office-31, 3 domains = 3 tasks, 31 office object classes (4110 images).

Saenko, Kulis, Fritz & Darrell, "Adapting visual category models to new domains", ECCV 2010.
The GTTN paper's Office-31 experiments train on VGG-19 fc7 / pool5 features of these images.
"""

from __future__ import annotations

from .download import TSINGHUA_MIRROR, domain_archives
from .images import ImageDatasetSource
from .source import register_source


@register_source
class Office31(ImageDatasetSource):
    name = "office31"
    folder = "office31"
    task_folders = {"amazon": "amazon", "dslr": "dslr", "webcam": "webcam"}
    classes = (
        "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
        "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray",
        "mobile_phone", "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector",
        "punchers", "ring_binder", "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can",
    )
    expected_images = {"amazon": 2817, "dslr": 498, "webcam": 795}
    downloads = domain_archives({  # each unpacks to <domain>/images/<class>/
        "amazon": TSINGHUA_MIRROR.format("ec12dfcddade43ab8101"),
        "dslr": TSINGHUA_MIRROR.format("a41d818ae2f34da7bb32"),
        "webcam": TSINGHUA_MIRROR.format("8a41009a166e4131adcd"),
    }, ".tgz")
    licence = "for non-commercial research use (as distributed by the authors)"
    how_to_get = (
        "Get Office-31 (domain_adaptation_images.tar.gz from https://faculty.cc.gatech.edu/~judy/domainadapt/) "
        "and place the domains as <data-dir>/office31/{amazon,dslr,webcam}/images/<class>/*.jpg. "
        "See datasets/office31/README.md."
    )

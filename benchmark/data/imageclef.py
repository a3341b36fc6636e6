"""``imageclef``: ImageCLEF-DA, 4 domains = 4 tasks, 12 classes, 600 images each.

The ImageCLEF 2014 domain adaptation challenge: Caltech-256 (c), ImageNet ILSVRC 2012 (i),
Pascal VOC 2012 (p) and Bing (b) images of 12 shared classes. A dataset of the GTTN paper.
"""

from __future__ import annotations

from pathlib import Path

from .images import ImageDatasetSource
from .source import DataUnavailableError, register_source


@register_source
class ImageClef(ImageDatasetSource):
    name = "imageclef"
    folder = "imageclef"
    task_folders = {"c": "c", "i": "i", "p": "p", "b": "b"}
    classes = ("aeroplane", "bike", "bird", "boat", "bottle", "bus", "car", "dog", "horse", "monitor",
               "motorbike", "people")
    expected_images = {"c": 600, "i": 600, "p": 600, "b": 600}
    licence = "research use; images keep the licences of Caltech-256, ImageNet, Pascal VOC and Bing"
    how_to_get = (
        "ImageCLEF-DA has no direct download URL (it is shared through the challenge page "
        "https://www.imageclef.org/2014/adaptation and a Google Drive archive image_CLEF.zip). Unpack it so that "
        "<data-dir>/imageclef/{c,i,p,b}/ hold the images and <data-dir>/imageclef/list/{c,i,p,b}List.txt the "
        "'<path> <label>' lists; a <domain>/<class>/*.jpg layout is accepted too. See datasets/imageclef/README.md."
    )

    def task_images(self, root: Path, task: str) -> list[tuple[str, int]]:
        """From ``list/<task>List.txt`` when present (the released layout), else class folders."""
        listing = root / "list" / f"{task}List.txt"
        if not listing.is_file():
            return super().task_images(root, task)
        entries = []
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            path, _, label = line.strip().rpartition(" ")
            if not path or not label.isdigit() or int(label) >= len(self.classes):
                raise DataUnavailableError(f"{listing}:{number}: expected '<path> <label 0-11>', got {line!r}")
            # The released lists name images relative to the archive's parent folder in some copies.
            relative = path if (root / path).is_file() else f"{task}/{Path(path).name}"
            entries.append((relative, int(label)))
        return sorted(entries)

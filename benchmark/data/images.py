"""Image datasets of domains x classes (Office-31, Office-Home, ...): their layout and what is present.

A source lists its tasks (domains), its class names in label order, the image count each domain
has when complete, and its public downloads. Images are found in either of the layouts the
public archives unpack to: ``<domain>/<class>/*.jpg`` or ``<domain>/images/<class>/*.jpg``.
The multi-task networks train on backbone features of these images (:mod:`.features`).
"""

from __future__ import annotations

from pathlib import Path

from .source import DatasetSource, DataUnavailableError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class ImageDatasetSource(DatasetSource):
    """A dataset whose tasks are domains of images sharing one label set."""

    task_folders: dict[str, str] = {}  # task name -> its folder, relative to the dataset folder
    classes: tuple[str, ...] = ()  # label i is classes[i]
    expected_images: dict[str, int] = {}  # per task, when complete
    native_features = ()
    default_features = "fc7"
    licence: str = ""

    @property
    def task_names(self) -> list[str]:
        return list(self.task_folders)

    def images_present(self, data_dir: Path) -> bool:
        return all((self.root(data_dir) / folder).is_dir() for folder in self.task_folders.values())

    def task_images(self, root: Path, task: str) -> list[tuple[str, int]]:
        """(path relative to ``root``, label) of one task's images, sorted; raises if the folder is absent."""
        folder = root / self.task_folders[task]
        class_root = folder / "images" if (folder / "images").is_dir() else folder
        if not class_root.is_dir():
            raise DataUnavailableError(f"{self.name}: image folder {folder} of task {task} not found.\n{self.how_to_get}")
        labels = {name: label for label, name in enumerate(self.classes)}
        entries = []
        for class_dir in sorted(p for p in class_root.iterdir() if p.is_dir()):
            if class_dir.name not in labels:
                raise DataUnavailableError(f"{self.name}: {class_dir} is not a class of {self.name}; "
                                           f"valid: {', '.join(self.classes)}")
            entries += [(str(p.relative_to(root)), labels[class_dir.name]) for p in sorted(class_dir.iterdir())
                        if p.suffix.lower() in IMAGE_SUFFIXES]
        return entries

    def image_list(self, data_dir: Path) -> dict[str, list[tuple[str, int]]]:
        images = {task: self.task_images(self.root(data_dir), task) for task in self.task_names}
        empty = [task for task, entries in images.items() if not entries]
        if empty:
            raise DataUnavailableError(f"{self.name}: no images found for task(s) {empty} under "
                                       f"{self.root(data_dir)}.\n{self.how_to_get}")
        return images

    def image_counts(self, data_dir: Path) -> dict[str, list[tuple[str, int]] | None]:
        """Each task's images, or None where its folder is absent."""
        counts: dict[str, list[tuple[str, int]] | None] = {}
        for task in self.task_names:
            try:
                counts[task] = self.task_images(self.root(data_dir), task)
            except DataUnavailableError:
                counts[task] = None
        return counts

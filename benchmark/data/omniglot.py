"""``omniglot``: 50 alphabets as 50 tasks, each character a class (Lake, Salakhutdinov & Tenenbaum,
Science 2015), as in Table 1 of Yang & Hospedales (the June 2016 draft, arXiv 1606.04038v1).
1623 characters x 20 drawings, 105 x 105.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .download import Download
from .source import DatasetSource, MultiTaskDataset, TaskData, register_source

_NPZ = "https://github.com/bitsandscraps/omniglot/raw/HEAD/{}"

# Global character ids 1..964 are in the background file, 965..1623 in the evaluation file.
FIRST_EVALUATION_ID = 965


@register_source
class Omniglot(DatasetSource):
    name = "omniglot"
    folder = "omniglot"
    files = {
        "images_background.npz": "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
        "images_evaluation.npz": "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
        "alphabet_ranges.csv": "ad226857961ff7ec2dc0d9e9ab3b39f34c34afa6e99295ca1bcbf47183fc1936",
    }
    downloads = (
        Download(_NPZ.format("images_background.npz"), "images_background.npz", files["images_background.npz"]),
        Download(_NPZ.format("images_evaluation.npz"), "images_evaluation.npz", files["images_evaluation.npz"]),
    )  # alphabet_ranges.csv has no download: datasets/omniglot/README.md says how to make it
    how_to_get = (
        "Get images_background.npz and images_evaluation.npz (https://github.com/bitsandscraps/omniglot, an npz "
        "conversion of https://github.com/brendenlake/omniglot) and alphabet_ranges.csv, and place them in "
        "<data-dir>/omniglot/. See datasets/omniglot/README.md."
    )

    def read(self, root: Path, alphabets: int | None = None, image_size: int = 105) -> MultiTaskDataset:
        """``alphabets``: use only the first N alphabets; ``image_size``: resize (105 = the paper's)."""
        with open(root / "alphabet_ranges.csv", newline="") as handle:
            ranges = list(csv.DictReader(handle))[: alphabets or None]
        images = {
            "background": np.load(root / "images_background.npz")["images"],
            "evaluation": np.load(root / "images_evaluation.npz")["images"],
        }
        tasks = []
        for row in ranges:
            first, last = int(row["first_char_id"]), int(row["last_char_id"])
            offset = 1 if row["set"] == "background" else FIRST_EVALUATION_ID
            chars = images[row["set"]][first - offset : last - offset + 1]  # (C, 20, 105, 105), True = paper
            ink = torch.from_numpy(~chars).to(torch.uint8).reshape(-1, 1, 105, 105)
            if image_size != 105:
                ink = F.interpolate(ink.float(), size=(image_size, image_size), mode="area")
            labels = torch.arange(len(chars)).repeat_interleave(chars.shape[1])
            tasks.append(TaskData(row["alphabet"], ink, labels, len(chars)))
        return MultiTaskDataset(self.name, tuple(tasks), kind="images", network="omniglot_cnn")

"""``office_caltech``: Office-Caltech-10, 4 domains = 4 tasks: 800-d SURF bag-of-words features, or images.

Gong, Shi, Sha & Grauman, "Geodesic flow kernel for unsupervised domain adaptation", CVPR 2012.
10 classes shared by amazon, caltech10, dslr and webcam (958 / 1123 / 157 / 295 images). The SURF
files are the default input (``features=surf``); backbone features of the raw images (``fc7``,
``pool5``) come from ``mtlbench features office_caltech``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from .images import ImageDatasetSource
from .source import MultiTaskDataset, TaskData, register_source

DOMAIN_FILES = {
    "amazon": "surf/amazon_SURF_L10.mat",
    "caltech10": "surf/Caltech10_SURF_L10.mat",
    "dslr": "surf/dslr_SURF_L10.mat",
    "webcam": "surf/webcam_SURF_L10.mat",
}


@register_source
class OfficeCaltech(ImageDatasetSource):
    name = "office_caltech"
    native_features = ("surf",)
    default_features = "surf"
    folder = "office_caltech10"
    task_folders = {"amazon": "images/amazon", "caltech10": "images/caltech10", "dslr": "images/dslr",
                    "webcam": "images/webcam"}
    # SURF label k is classes[k - 1]; the image folders carry these names.
    classes = ("backpack", "bike", "calculator", "headphones", "keyboard", "laptop", "monitor", "mouse", "mug",
               "projector")
    expected_images = {"amazon": 958, "caltech10": 1123, "dslr": 157, "webcam": 295}
    licence = "for academic research use"
    files = {
        "surf/amazon_SURF_L10.mat": "df32548b994e18d364c99e1f317e1fae100597259f0423a41b90f4f68187bb1f",
        "surf/Caltech10_SURF_L10.mat": "4f9334c8ced489d5054de97a5fd51a61f017f3bcd1f38c9a85c6d78cb9d7bda5",
        "surf/dslr_SURF_L10.mat": "44d673c68e1d07b837893aa74dba3b986e4a6cc3fd66f0dd357683bdef059216",
        "surf/webcam_SURF_L10.mat": "a6a9c78b4b7181dfbb58bcfd351d4ebd737f171c31247b8884948aa156d3f700",
    }
    how_to_get = (
        "Get the four <domain>_SURF_L10.mat files from "
        "https://github.com/jindongwang/transferlearning/tree/master/data (Office+Caltech SURF) and place "
        "them in <data-dir>/office_caltech10/surf/; the images (for fc7/pool5 features) go in "
        "<data-dir>/office_caltech10/images/<domain>/<class>/*.jpg. See datasets/office_caltech/README.md."
    )

    def read(self, root: Path) -> MultiTaskDataset:
        tasks = []
        for domain, relative in DOMAIN_FILES.items():
            mat = scipy.io.loadmat(root / relative)
            features = torch.from_numpy(np.asarray(mat["fts"], dtype=np.float32))
            labels = torch.from_numpy(np.asarray(mat["labels"], dtype=np.int64).reshape(-1) - 1)
            tasks.append(TaskData(domain, features, labels, len(self.classes)))
        return MultiTaskDataset(self.name, tuple(tasks), kind="features", network="features")

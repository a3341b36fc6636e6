"""``synthetic``: generated tasks that share a known low-rank weight tensor (the offline default).

Task t labels x ~ N(0, I_D) by argmax_c (x W_t)_c + noise, with W_t = sum_k c_tk B_k: every task's
weights mix K shared prototypes, so the D x C x T weight tensor has task-flattening rank K. With
few samples per task an independent model (STL) overfits, while a trace norm can find the shared
prototypes. Seeded: the same parameters give the same data on every machine.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .source import DatasetSource, MultiTaskDataset, TaskData, register_source


@register_source
class Synthetic(DatasetSource):
    name = "synthetic"
    folder = ""
    how_to_get = "synthetic data is generated, nothing to download"

    def read(
        self,
        root: Path,
        n_tasks: int = 10,
        n_features: int = 20,
        n_classes: int = 4,
        samples_per_task: int = 50,
        rank: int = 1,
        noise: float = 0.1,
        data_seed: int = 1234,
    ) -> MultiTaskDataset:
        generator = torch.Generator().manual_seed(data_seed)
        prototypes = torch.randn(rank, n_features, n_classes, generator=generator)
        mixing = torch.randn(n_tasks, rank, generator=generator)
        tasks = []
        for t in range(n_tasks):
            weight = torch.einsum("k,kdc->dc", mixing[t], prototypes)
            inputs = torch.randn(samples_per_task, n_features, generator=generator)
            scores = inputs @ weight + noise * torch.randn(samples_per_task, n_classes, generator=generator)
            tasks.append(TaskData(f"task{t}", inputs, scores.argmax(dim=1), n_classes))
        return MultiTaskDataset(self.name, tuple(tasks), kind="features", network="features")

"""What a training loop iterates: fresh shape-level views per epoch (``kdpc train``), the deterministic evaluation
view, and the DataLoader that shards an epoch over torchrun ranks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..augment import AugmentConfig, PointAugmentConfig, apply_point_level_with_index, draw_params, params_at
from ..augment import replay_view
from ..errors import KdpcError


def point_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Point-level randomness keyed by (seed, epoch, record): independent of worker count and resumable."""
    return np.random.default_rng([seed & 0xFFFFFFFF, 0x70696E74, epoch, index])


class EpochViews(Dataset):
    """Training views for plain supervised training: a fresh shape-level view of every sample each epoch.

    The view of sample i in epoch e is ``draw_params(seed, i, view=e, stream="train")``, so an epoch is reproducible and a resumed
    run sees the same data as an uninterrupted one.
    """

    def __init__(self, dataset: Any, augment: AugmentConfig, point_augment: PointAugmentConfig, seed: int) -> None:
        self.dataset = dataset
        self.augment = augment
        self.point_augment = point_augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        params = params_at(draw_params(self.augment, self.seed, np.array([index]), np.array([self.epoch]),
                                       stream="train"), 0)
        points, parts = replay_view(self.dataset, index, params)
        points, order = apply_point_level_with_index(points, self.point_augment, point_rng(self.seed, self.epoch, index))
        item = {"points": points, "label": int(self.dataset.labels[index]), "index": index}
        if parts is not None:
            item["parts"] = parts[order].astype(np.int64)
        return item


class EvalViews(Dataset):
    """The deterministic evaluation view of each sample: the first ``num_points`` points, unaugmented, with every
    channel of the data (a model takes its first ``in_channels``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = self.dataset.num_points
        item = {"points": self.dataset.points[index, :n].astype(np.float32), "label": int(self.dataset.labels[index])}
        if getattr(self.dataset, "part_labels", None) is not None:
            item["parts"] = self.dataset.part_labels[index, :n].astype(np.int64)
        return item


def train_loader(dataset: Dataset, global_batch: int, world: Any, seed: int, *, workers: int = 0,
                 pin_memory: bool = False, collate_fn: Any = None) -> DataLoader:
    """The training DataLoader of one rank: a ``DistributedSampler`` shuffle keyed by ``(seed, epoch)`` (call
    ``loader.sampler.set_epoch``), ``global_batch // world.size`` items per rank and step.

    The union of the ranks' k-th batches is the k-th batch of a single process with the same ``global_batch``, so
    DDP's averaged gradient is the single-process gradient. A world of one is a plain shuffled loader.
    """
    from torch.utils.data.distributed import DistributedSampler

    if global_batch < 1:
        raise KdpcError("--batch-size must be >= 1")
    if global_batch % world.size:
        raise KdpcError(f"--batch-size {global_batch} is the global batch; it must be divisible by the "
                        f"{world.size} processes (per-process batch = batch size / processes)")
    per_rank = global_batch // world.size
    # drop_last in the sampler gives every rank the same number of items (DDP needs equal step counts)
    sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=True,
                                 seed=seed * 1000003, drop_last=True)
    # the generator only seeds the workers' base seed: iterating leaves the global torch RNG (dropout) alone
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=len(sampler) > per_rank,
                      num_workers=workers, pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
                      collate_fn=collate_fn)


"""``RecordsDataset``: a store as a plain torch ``Dataset`` for your own training loop (``kdpc.RecordsDataset``).

Item ``i`` is record ``i`` of the store (view-major: records ``[v * S, (v + 1) * S)`` are view ``v`` of the ``S``
samples), replayed exactly from its stored parameters: ``(points [N, C] float32, label int64, teacher_logprobs [K]
float32)``, the same view the teacher saw when it was recorded (``kdpc.augment.replay_view``). ``point_augment``
adds kdpc's point-level jitter and shuffle on top (never recorded), keyed by ``(seed, epoch, record)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from ..augment import PointAugmentConfig, apply_point_level_with_index, params_at, replay_view
from ..errors import KdpcError
from ..training.data import point_rng
from .dataset import check_provenance, recorded_dataset


class RecordsDataset(Dataset):
    """Args:
        store: a record store (path or URL) made by ``kdpc record`` / ``kdpc.record``.
        dataset: the training split it was recorded from (default: loaded from the store's provenance, with
            ``data_root`` for file datasets); it must be exactly that data (fingerprint, classes, points).
        views: use only the first ``views`` recorded views of every sample (default all).
        point_augment: ``None``/``False`` for the exact recorded views; ``True`` or a mapping of
            ``PointAugmentConfig`` options for jitter + shuffle on top (call ``set_epoch`` every epoch).
        seed: keys the point-level augmentation.
    """

    def __init__(self, store: Any, dataset: Any = None, *, data_root: str | None = None, views: int | None = None,
                 point_augment: bool | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        from ..store import RecordReader

        self.reader = RecordReader(store)
        header = self.reader.header
        if header.task != "cls":
            raise KdpcError(f"RecordsDataset serves classification stores; {store} is {header.task} (its per-point "
                            "outputs and anchor features are read by kdpc distill)")
        if dataset is None:
            dataset = recorded_dataset(header, store, data_root)
        else:
            check_provenance(header, dataset)
        self.dataset = dataset
        self.num_views = header.num_views if views is None else int(views)
        if not 1 <= self.num_views <= header.num_views:
            raise KdpcError(f"views={views}: the store holds {header.num_views} views per sample")
        if point_augment is None or point_augment is False:
            self.point_augment = None
        else:
            self.point_augment = PointAugmentConfig.from_dict({} if point_augment is True else point_augment)
        self.seed = int(seed)
        self.epoch = 0
        self.reader.load_all()

    @property
    def class_names(self) -> list[str]:
        return list(self.reader.header.class_names)

    @property
    def num_classes(self) -> int:
        return self.reader.header.num_classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.reader.num_samples * self.num_views

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        header = self.reader.header
        row = self.reader.get(np.asarray([index]))
        params = params_at({spec.name: row[spec.name] for spec in header.params}, 0)
        sample = int(row["sample"][0])
        points, _ = replay_view(self.dataset, sample, params)
        if self.point_augment is not None:
            points, _ = apply_point_level_with_index(points, self.point_augment,
                                                     point_rng(self.seed, self.epoch, index))
        return (torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
                torch.tensor(int(self.dataset.labels[sample]), dtype=torch.long),
                torch.from_numpy(np.ascontiguousarray(row["logprobs"][0], dtype=np.float32)))

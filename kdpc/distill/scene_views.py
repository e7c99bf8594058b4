"""The distill data path for scenes: recorded scene views replayed exactly, the teacher's per-point answers for
exactly their points, anchor features, then point-level jitter and colour noise (never recorded)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..augment import params_at
from ..errors import KdpcError
from ..recorder.scenes import anchor_rows
from ..scenes.batch import collate_scenes
from ..scenes.transforms import (SceneAugmentConfig, ScenePointAugmentConfig, apply_scene_point_noise,
                                 draw_scene_params, replay_scene_view)
from ..store.schema import record_index
from ..training.data import point_rng
from ..training.scene_data import view_item
from .dataset import RecordedViews


class SceneRecordedViews(RecordedViews):
    """Item i of an epoch is scene i at its scheduled view (``view_schedule``, as for objects), rebuilt from the
    stored parameters by ``replay_scene_view`` (the points and order the teacher saw), with the teacher's
    ``teacher_logprobs`` [m, C] and, when the store has anchors, ``teacher_features`` [a, D] / ``anchors`` [a];
    then ``apply_scene_point_noise`` keyed by ``(seed, epoch, record)``.

    Without a ``reader`` (the ``--online-teacher`` baseline) the same parameters are drawn from
    ``(run_seed, scene, view)`` on the recorder's stream, so both modes train on identical views."""

    def __init__(self, dataset: Any, point_augment: ScenePointAugmentConfig, seed: int, *, reader: Any = None,
                 augment: SceneAugmentConfig | None = None, run_seed: int = 0, num_views: int | None = None) -> None:
        if reader is not None:  # the crop shape the views were recorded with
            augment = SceneAugmentConfig.from_dict(reader.header.augment)
        super().__init__(dataset, point_augment, seed, reader=reader, augment=augment, run_seed=run_seed,
                         num_views=num_views)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]

    def __getitem__(self, index: int) -> dict[str, Any]:
        view_id = int(self._views[index])
        record = int(record_index(np.array([index]), np.array([view_id]), len(self.dataset))[0])
        recorded = None
        if self.reader is not None:
            recorded = self.reader.get_view(record)
            params = {spec.name: recorded[spec.name] for spec in self.reader.header.params}
        else:
            params = params_at(draw_scene_params(self.augment, self.run_seed, np.array([index]), np.array([view_id]),
                                                 stream="record"), 0)
        view = replay_scene_view(self.dataset, index, params, self.augment)
        if recorded is not None and recorded["logprobs"].shape[0] != view.num_points:
            raise KdpcError(f"{self.reader.header.describe_record(record)} holds {recorded['logprobs'].shape[0]} "
                            f"points but its replayed view has {view.num_points}: the data changed since recording")
        view = apply_scene_point_noise(view, self.point_augment, point_rng(self.seed, self.epoch, record))
        item = view_item(view, self.dataset.channels, index)
        item["record"] = record
        if recorded is not None:
            item["teacher_logprobs"] = recorded["logprobs"]
            if "features" in recorded:
                item["teacher_features"] = recorded["features"]
                item["seed"] = int(params["seed"])
        return item


def collate_scene_records(items: list[dict[str, Any]], num_anchors: int = 0) -> dict[str, Any]:
    """``collate_scenes`` plus ``record`` [B], ``teacher_logprobs`` [N, C] (concatenated like the points) and, with
    anchors, ``teacher_features`` [B, M, D] (zero past a small view's anchors) and ``anchor_rows`` [B, M] (rows of
    the concatenated points, -1 there)."""
    batch: dict[str, Any] = collate_scenes(items)
    batch["record"] = torch.tensor([item["record"] for item in items], dtype=torch.long)
    if "teacher_logprobs" in items[0]:
        batch["teacher_logprobs"] = torch.from_numpy(np.concatenate([item["teacher_logprobs"] for item in items]))
    if num_anchors and "teacher_features" in items[0]:
        counts = np.array([item["coord"].shape[0] for item in items])
        rows, _ = anchor_rows(np.array([item["seed"] for item in items], dtype=np.uint32), counts, num_anchors)
        dim = items[0]["teacher_features"].shape[-1]
        features = np.zeros((len(items), num_anchors, dim), dtype=np.float32)
        for k, item in enumerate(items):
            features[k, : item["teacher_features"].shape[0]] = item["teacher_features"]
        batch["teacher_features"] = torch.from_numpy(features)
        batch["anchor_rows"] = torch.from_numpy(rows)
    return batch


class SceneCollate:
    """A picklable ``collate_fn`` (DataLoader workers) that knows the store's anchors per view."""

    def __init__(self, num_anchors: int) -> None:
        self.num_anchors = int(num_anchors)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_scene_records(items, self.num_anchors)

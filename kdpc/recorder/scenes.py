"""Recording a scene-segmentation teacher: per-point log-probs of variable-size scene views, stored ragged, and
features at each view's anchor points.

Record ``r`` is view ``r // S`` of scene ``r % S`` (the view-major rule), drawn with
``draw_scene_params(augment, seed, scene, view, stream="record")`` and rebuilt by ``replay_scene_view``: the
recorder, ``records verify --teacher`` and ``kdpc distill`` all rebuild the same points in the same order, so the
``m`` stored rows of a record are the teacher's answers for exactly the points the student sees (before its
point-level noise). Anchors: ``anchor_indices(seed, m, min(M, m))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..augment import anchor_indices, params_at
from ..errors import KdpcError
from ..models.base import unwrap_model
from ..scenes.transforms import SceneAugmentConfig, draw_scene_params, replay_scene_view
from ..store.schema import DEFAULT_SCENE_CHUNK_RECORDS, StoreHeader, sample_view
from .views import RecordViews
from .seg import DEFAULT_FEATURE_DIM, DEFAULT_PROJECTION_SEED, _cfg, project_features, projection_info

DEFAULT_SCENE_ANCHORS = 256  # M per view: the relation terms compare M x M affinities (cross-sample: (B M)^2)


def max_view_points(dataset: Any, augment: SceneAugmentConfig) -> int:
    """The most points a recorded view can have: the crop's ``num_points``, or (no crop) the largest scene."""
    if augment.crop != "none":
        return int(dataset.num_points)
    return max(int(dataset[i].coord.shape[0]) for i in range(len(dataset)))


def scene_header_fields(teacher: Any, dataset: Any, cfg: Any, augment: SceneAugmentConfig) -> dict[str, Any]:
    """The ``StoreHeader`` fields a semseg store needs beyond the common ones: task, codec, chunking, the most points
    of a view, anchors (``cfg.anchors``, default 256; 0 keeps no features), feature width and projection."""
    ckpt = teacher.loaded.checkpoint
    if ckpt is None or ckpt.task != "semseg":
        raise KdpcError("recording scenes needs a kdpc scene-segmentation checkpoint (kdpc train --dataset "
                        "synthetic-rooms|s3dis|scannet)")
    num_points = max_view_points(dataset, augment)
    anchors = int(_cfg(cfg, "anchors", DEFAULT_SCENE_ANCHORS))
    if anchors < 0:
        raise KdpcError(f"--anchors must be >= 0, got {anchors}")
    fields: dict[str, Any] = {
        "task": "semseg",
        "num_points": num_points,
        "chunk_records": int(_cfg(cfg, "chunk_records", None) or DEFAULT_SCENE_CHUNK_RECORDS),
        "num_anchors": min(anchors, num_points),
        "feature_dim": 0,
        "feature_projection": {},
        "augment": augment.to_dict(),
        "params": [],  # the scene parameters (schema.default_params)
    }
    if anchors:
        feature_dim = int(_cfg(cfg, "feature_dim", DEFAULT_FEATURE_DIM))
        if feature_dim < 1:
            raise KdpcError(f"--feature-dim must be >= 1, got {feature_dim}")
        teacher_dim = int(unwrap_model(teacher.module).num_features)
        proj = projection_info(teacher_dim, feature_dim, int(_cfg(cfg, "projection_seed", DEFAULT_PROJECTION_SEED)))
        fields["feature_dim"] = feature_dim if proj else teacher_dim
        fields["feature_projection"] = proj
    return fields


def record_scene_params(augment: SceneAugmentConfig, run_seed: int, records: np.ndarray,
                        num_samples: int) -> dict[str, np.ndarray]:
    """The stored parameters of record ids ``records`` (stream ``record``)."""
    samples, views = sample_view(np.asarray(records, dtype=np.int64), num_samples)
    return draw_scene_params(augment, run_seed, samples, views, stream="record")


class SceneRecordViews(RecordViews):
    """Item r is the exact teacher input of record r: ``coord`` [m, 3], ``feat`` [m, C], ``seed`` (anchors).
    ``augment`` is a ``SceneAugmentConfig``."""

    def __getitems__(self, records: list[int]) -> list[dict[str, Any]]:
        params = record_scene_params(self.augment, self.run_seed, np.asarray(records), len(self.dataset))
        samples, _ = sample_view(np.asarray(records, dtype=np.int64), len(self.dataset))
        items = []
        for k, (record, sample) in enumerate(zip(records, samples)):
            view = replay_scene_view(self.dataset, int(sample), params_at(params, k), self.augment)
            items.append({"coord": view.coord, "feat": view.features(self.dataset.channels), "record": int(record),
                          "seed": int(params["seed"][k])})
        return items


def collate_record_views(items: list[dict[str, Any]]) -> dict[str, Any]:
    counts = [int(item["coord"].shape[0]) for item in items]
    return {"coord": torch.from_numpy(np.concatenate([i["coord"] for i in items])),
            "feat": torch.from_numpy(np.concatenate([i["feat"] for i in items])),
            "offset": torch.tensor(np.cumsum(counts), dtype=torch.long),
            "record": torch.tensor([i["record"] for i in items], dtype=torch.long),
            "seed": np.asarray([i["seed"] for i in items], dtype=np.uint32)}


def anchor_rows(seeds: np.ndarray, counts: np.ndarray, num_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the concatenated batch holding each view's anchors, ``[n, M]`` (-1 past a small view's
    ``min(M, m)``), and the validity mask."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.full((counts.size, num_anchors), -1, dtype=np.int64)
    for i, (seed, m, lo) in enumerate(zip(seeds, counts, starts)):
        a = min(num_anchors, int(m))
        rows[i, :a] = lo + anchor_indices(seed, int(m), a)
    return rows, rows >= 0


@torch.inference_mode()
def teacher_scene_outputs(model: torch.nn.Module, batch: dict[str, Any], header: StoreHeader,
                          device: torch.device) -> dict[str, np.ndarray]:
    """One teacher forward over a batch of recorded scene views (concatenated, Pointcept-style).

    Returns ``point_count`` [n], ``logprobs`` float32 [sum m, C] and, with anchors, ``features`` float32
    [n, M, D] (zero past a small view's anchors), projected with the header's fixed projection."""
    inner = unwrap_model(model)
    coord = batch["coord"].to(device, non_blocking=True)
    feat = batch["feat"].to(device, non_blocking=True)
    offset = batch["offset"].to(device, non_blocking=True)
    feats = inner.forward_features(coord, feat, offset)
    logits = inner.forward_head(feats)
    counts = torch.diff(batch["offset"], prepend=batch["offset"].new_zeros(1)).numpy()
    out = {"point_count": counts.astype(np.int64),
           "logprobs": F.log_softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float32)}
    if header.num_anchors:
        rows, valid = anchor_rows(batch["seed"], counts, header.num_anchors)
        picked = feats.float()[torch.from_numpy(np.maximum(rows, 0)).to(feats.device)]  # [n, M, Dt]
        projected = project_features(picked, header)
        projected = projected * torch.from_numpy(valid).to(projected.device)[..., None]
        out["features"] = projected.cpu().numpy().astype(np.float32)
    return out


def concat_scene_outputs(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-batch ``teacher_scene_outputs`` into a block's ``point_count`` / ``logprobs`` / ``features``."""
    if not outputs:
        raise ValueError("no teacher outputs to join")
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}

"""Recording teacher features: a part-segmentation teacher's per-point log-probs and features at the view's anchor
points, and a classifier's embedding of each view.

Integration (the recorder loop in ``kdpc/recorder/run.py``), for ``ckpt.task == "partseg"``:

* header: ``StoreHeader(**{..., **make_seg_header_fields(ckpt, dataset, cfg, teacher)})`` (task, parts, codec,
  chunk size, anchors, feature width, projection);
* per batch: ``teacher_seg_outputs(teacher, points, label, seeds, header)`` instead of ``log_softmax(model_forward)``,
  with ``seeds = view_seeds(batch["record"], len(dataset), augment, cfg.seed)``;
* per block: ``columns.update(concat_seg_outputs(outputs))`` (``logprobs`` [n, N, P], ``features`` [n, M, D]).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..augment import AugmentConfig, anchor_indices, draw_params
from ..errors import KdpcError
from ..hashing import splitmix64, unit_interval
from ..store.codecs import DEFAULT_SEG_CODEC
from ..store.schema import DEFAULT_SEG_CHUNK_RECORDS, StoreHeader, sample_view
from ..models.base import category_input, model_inputs, unwrap_model

DEFAULT_ANCHORS = 128  # M: points per view whose teacher features are kept (at most a quarter of the points)
DEFAULT_FEATURE_DIM = 32  # D: stored feature width; wider teachers are randomly projected down to it
DEFAULT_PROJECTION_SEED = 0
# classification: the width of the teacher's embedding kept per view (512 bytes a record as float16); the student's
# embedding matching term (kdpc.distill.embedding) was measured with it (docs/method.md)
DEFAULT_CLASSIFIER_FEATURE_DIM = 256


def _cfg(cfg: Any, name: str, default: Any) -> Any:
    value = cfg.get(name) if isinstance(cfg, Mapping) else getattr(cfg, name, None)
    return default if value is None else value


PROJECTION_STREAM = 0x70726F6A65637421  # "project!"


def projection_matrix(seed: int, in_dim: int, out_dim: int) -> np.ndarray:
    """The fixed random projection ``[in_dim, out_dim]`` float32 a partseg store applies to teacher features.

    Regenerated from ``(seed, in_dim, out_dim)`` (never stored): ``base = splitmix64(uint64(seed) ^ PROJECTION_STREAM)``,
    ``u_k = (splitmix64(base + k) >> 11) 2^-53`` for ``k = 0 .. 2 in_dim out_dim - 1``; Box-Muller
    ``z_j = sqrt(-2 ln(1 - u_{2j})) cos(2 pi u_{2j+1})`` in float64, row-major ``[in_dim, out_dim]``;
    ``W = float32(z / sqrt(out_dim))`` (Johnson-Lindenstrauss scaling: inner products are kept in expectation).
    """
    if in_dim < 1 or out_dim < 1:
        raise KdpcError(f"projection dimensions must be positive, got {in_dim} -> {out_dim}")
    base = splitmix64(np.asarray([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) ^ np.uint64(PROJECTION_STREAM))
    with np.errstate(over="ignore"):
        h = splitmix64(base + np.arange(2 * in_dim * out_dim, dtype=np.uint64))
    u = unit_interval(h)
    z = np.sqrt(-2.0 * np.log1p(-u[0::2])) * np.cos(2.0 * math.pi * u[1::2])
    return (z.reshape(in_dim, out_dim) / math.sqrt(out_dim)).astype(np.float32)


def projection_info(teacher_dim: int, feature_dim: int, seed: int = DEFAULT_PROJECTION_SEED) -> dict[str, Any]:
    """The header's ``feature_projection``: ``{}`` (features kept as they are) when the teacher is at most
    ``feature_dim`` wide, else a fixed Gaussian projection ``teacher_dim -> feature_dim`` regenerated from ``seed``."""
    if teacher_dim <= feature_dim:
        return {}
    return {"kind": "gaussian", "seed": int(seed), "in_dim": int(teacher_dim), "out_dim": int(feature_dim)}


def make_seg_header_fields(ckpt: Any, dataset: Any, cfg: Any, teacher: torch.nn.Module | None = None) -> dict[str, Any]:
    """The ``StoreHeader`` fields a partseg store needs beyond the common ones.

    ``cfg`` (a RecordConfig or a mapping) may carry ``codec``, ``chunk_records``, ``anchors`` (M, default
    ``min(128, N // 4)``; 0 keeps no features), ``feature_dim`` (D, default 32) and ``projection_seed`` (default 0).
    The teacher's feature width
    comes from ``teacher.num_features`` (the model is built from ``ckpt`` on the CPU if not given).
    """
    if getattr(ckpt, "task", None) != "partseg":
        raise KdpcError(f"make_seg_header_fields needs a part-segmentation teacher, got task {getattr(ckpt, 'task', None)!r}")
    num_points = int(dataset.num_points)
    anchors = int(_cfg(cfg, "anchors", min(DEFAULT_ANCHORS, max(1, num_points // 4))))
    if anchors < 0:
        raise KdpcError(f"--anchors must be >= 0, got {anchors}")
    anchors = min(anchors, num_points)
    fields: dict[str, Any] = {
        "task": "partseg",
        "num_classes": int(ckpt.num_classes),
        "class_names": list(ckpt.class_names),
        "codec": _cfg(cfg, "codec", None) or DEFAULT_SEG_CODEC,
        "chunk_records": int(_cfg(cfg, "chunk_records", None) or DEFAULT_SEG_CHUNK_RECORDS),
        "num_points": num_points,
        "num_anchors": anchors,
        "feature_dim": 0,
        "feature_projection": {},
    }
    if anchors:
        feature_dim = int(_cfg(cfg, "feature_dim", DEFAULT_FEATURE_DIM))
        if feature_dim < 1:
            raise KdpcError(f"--feature-dim must be >= 1, got {feature_dim}")
        model = teacher if teacher is not None else ckpt.build_model("cpu")
        teacher_dim = int(getattr(model, "num_features"))
        proj = projection_info(teacher_dim, feature_dim, int(_cfg(cfg, "projection_seed", DEFAULT_PROJECTION_SEED)))
        fields["feature_dim"] = feature_dim if proj else teacher_dim
        fields["feature_projection"] = proj
    return fields


def view_seeds(records: Any, num_samples: int, augment: AugmentConfig, run_seed: int) -> np.ndarray:
    """The stored ``seed`` parameter of each record id (what ``anchor_indices`` is keyed by)."""
    r = np.asarray(records, dtype=np.int64).reshape(-1)
    return draw_params(augment, run_seed, *sample_view(r, num_samples), stream="record",
                       num_samples=num_samples)["seed"]


_PROJECTIONS: dict[tuple[int, int, int], np.ndarray] = {}


def _projection(proj: Mapping[str, Any]) -> np.ndarray:
    key = (int(proj["seed"]), int(proj["in_dim"]), int(proj["out_dim"]))
    if key not in _PROJECTIONS:
        _PROJECTIONS[key] = projection_matrix(*key)
    return _PROJECTIONS[key]


def project_features(features: torch.Tensor, header: StoreHeader) -> torch.Tensor:
    """``[..., Dt] -> [..., feature_dim]`` float32 with the header's fixed projection (identity without one)."""
    x = features.float()
    proj = header.feature_projection
    if not proj:
        if x.shape[-1] != header.feature_dim:
            raise KdpcError(f"the teacher's features are {x.shape[-1]} wide but the store keeps {header.feature_dim}")
        return x
    if x.shape[-1] != proj["in_dim"]:
        raise KdpcError(f"the teacher's features are {x.shape[-1]} wide but the store's projection expects {proj['in_dim']}")
    w = torch.from_numpy(_projection(proj)).to(x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return x @ w


@torch.inference_mode()
def teacher_seg_outputs(model: torch.nn.Module, points: torch.Tensor, category: torch.Tensor | None,
                        seeds: np.ndarray, header: StoreHeader) -> dict[str, np.ndarray]:
    """One teacher forward on a batch of recorded views.

    Args:
        model: the part-segmentation teacher (eval mode); ``forward_features(x, category) -> [B, N, Dt]`` and
            ``forward_head(features) -> [B, N, P]``.
        points: ``[B, N, C]`` the exact views (``kdpc.augment.replay_view``), on the model's device; the model
            takes their first ``in_channels`` columns.
        category: ``[B]`` object categories (ignored by models built without ``num_categories``).
        seeds: ``[B]`` the views' stored ``seed`` parameter (``view_seeds``), which fixes the anchors.
        header: the store's header (``num_points``, ``num_anchors``, ``feature_dim``, ``feature_projection``).

    Returns:
        ``logprobs`` float32 ``[B, N, P]`` (log-softmax) and, if the store keeps anchors, ``features`` float32
        ``[B, M, D]``: the teacher's per-point features at ``anchor_indices(seed, N, M)``, projected. Runs under the
        caller's autocast (the projection and log-softmax in float32).
    """
    inner = unwrap_model(model)
    if points.dim() != 3 or points.shape[1] != header.num_points:
        raise KdpcError(f"views must be [B, {header.num_points}, C], got {tuple(points.shape)}")
    points = model_inputs(inner, points)  # the data's first in_channels columns
    seeds = np.asarray(seeds).reshape(-1)
    if seeds.shape[0] != points.shape[0]:
        raise KdpcError(f"{seeds.shape[0]} seeds for a batch of {points.shape[0]} views")
    cat = category_input(inner, category)
    feats = inner.forward_features(points, cat)  # [B, N, Dt]
    logits = inner.forward_head(feats)
    out = {"logprobs": F.log_softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float32)}
    if header.num_anchors:
        anchors = torch.from_numpy(anchor_indices(seeds, header.num_points, header.num_anchors)).to(feats.device)
        picked = torch.gather(feats.float(), 1, anchors[..., None].expand(-1, -1, feats.shape[-1]))
        out["features"] = project_features(picked, header).cpu().numpy().astype(np.float32)
    return out


def global_feature_fields(teacher: Any, feature_dim: int | None) -> dict[str, Any]:
    """The header fields of a classification store that keeps the teacher's embedding of every view (``feature_dim``
    wide, randomly projected down when the teacher is wider); ``{}`` for 0. None (auto) is
    ``DEFAULT_CLASSIFIER_FEATURE_DIM`` for a kdpc checkpoint teacher and ``{}`` for the others, which give class
    scores only (asking them for a width is an error)."""
    if feature_dim is not None and feature_dim < 0:
        raise KdpcError(f"--feature-dim must be >= 0, got {feature_dim}")
    if feature_dim == 0:
        return {}
    model = unwrap_model(teacher.module) if teacher.loaded.checkpoint is not None else None
    if model is None or not callable(getattr(model, "forward_features", None)) or not getattr(model, "num_features", 0):
        if feature_dim is None:
            return {}
        raise KdpcError(f"--feature-dim {feature_dim}: recording the teacher's embedding needs a kdpc checkpoint "
                        f"teacher (this one is {teacher.kind}, which gives class scores only); record with "
                        "--feature-dim 0")
    teacher_dim = int(model.num_features)
    feature_dim = DEFAULT_CLASSIFIER_FEATURE_DIM if feature_dim is None else feature_dim
    proj = projection_info(teacher_dim, int(feature_dim))
    return {"feature_dim": int(feature_dim) if proj else teacher_dim, "feature_projection": proj}


@torch.inference_mode()
def teacher_cls_outputs(model: torch.nn.Module, points: torch.Tensor, header: StoreHeader) -> dict[str, np.ndarray]:
    """One forward of a kdpc classifier on a batch of recorded views: ``logprobs`` float32 ``[B, C]`` and
    ``features`` float32 ``[B, D]``, its embedding right before the classifier head, projected as the header says."""
    inner = unwrap_model(model)
    feats = inner.forward_features(model_inputs(inner, points))
    logprobs = F.log_softmax(inner.forward_head(feats).float(), dim=-1)
    return {"logprobs": logprobs.cpu().numpy().astype(np.float32),
            "features": project_features(feats, header).cpu().numpy().astype(np.float32)}


def concat_seg_outputs(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the per-batch results of ``teacher_seg_outputs`` into a block's ``logprobs`` / ``features`` columns."""
    if not outputs:
        raise ValueError("no teacher outputs to join")
    return {k: np.concatenate([o[k] for o in outputs]).astype(np.float32) for k in outputs[0]}

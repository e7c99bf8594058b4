"""Offline SRKD for part segmentation: the student's loss from recorded per-point outputs and anchor features.

SRKD (Li et al., arXiv:2506.17290) trains a small segmenter with four terms; kdpc computes all of them from a
partseg record store instead of an online teacher (formulas, defaults and sources: docs/method.md, section
"Segmentation (SRKD, offline)"):

    total = ce_weight * CE(logits, parts)                                  ground truth (label-smoothed CE)
          + pointwise_weight * T_p^2 mean_points KL(p_t^{T_p} || p_s^{T_p})  per-point KD to the recorded log-probs
          + affinity_weight * L_aff(g(F_s[anchors]), F_t)                    affinity-matrix relation alignment
          + cross_weight * L_cs(g(F_s[anchors]), F_t)                        cross-sample relations over the batch

``F_t`` are the recorded teacher features at the view's anchor points (already projected to the store's
``feature_dim``); ``g`` is the learned ``FeatureProjector`` (student width -> ``feature_dim``) this module owns, so
the trainer must optimise ``SrkdLoss.parameters()`` together with the student's and save ``state_dict()`` with
its training state. Anchors that point-level dropout removed from the student's input are masked out.

Data path: ``seg_item_fields`` gives the per-item keys (``teacher_features``, ``anchor_positions``) from a
``RecordReader.get`` batch and the point-level ``point_index``; ``anchor_positions`` maps view-order anchors to
positions in the shuffled student input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import KdpcError
from ..models import model_features_and_logits
from .losses import (
    AFFINITY_MODES,
    FeatureProjector,
    affinity_alignment_loss,
    check_temperature,
    cross_sample_relation_loss,
    label_smoothing_ce,
    pointwise_kd_loss,
)

__all__ = ["SrkdConfig", "SrkdLoss", "anchor_positions", "seg_item_fields"]


OUTSIDE_CATEGORY = -1e4  # logit of a part outside the object's category: exp() is 0, the KL term stays finite
# every distillation term of SrkdConfig off: the CE-only baseline on the same recorded views
CE_ONLY_WEIGHTS = {"pointwise_weight": 0.0, "affinity_weight": 0.0, "cross_weight": 0.0}


@dataclass
class SrkdConfig:
    """Weights and temperatures of the offline SRKD loss (YAML key ``srkd:`` of a distill config).

    ``pointwise_weight`` / ``pointwise_temperature`` / ``cross_weight`` / ``cross_temperature``: SRKD's settings as
    given in the project brief. ``affinity_weight = 1.0`` with ``affinity_mode = "mse"`` is kdpc's choice (see
    docs/method.md: the squared error of two cosine-affinity matrices starts at O(1e-2) per entry, so weight 1 makes
    it a few percent of the CE and comparable to the per-point KD term). ``label_smoothing = 0``: plain CE, as the
    part-segmentation references train. ``ce_weight`` 0 gives pure distillation.
    """

    ce_weight: float = 1.0
    label_smoothing: float = 0.0
    ignore_index: int = -100
    pointwise_weight: float = 0.3
    pointwise_temperature: float = 2.0
    affinity_weight: float = 1.0
    affinity_mode: str = "mse"  # "mse" | "kl"
    affinity_temperature: float = 1.0  # for affinity_mode "kl"
    cross_weight: float = 1e-3
    cross_temperature: float = 2.0
    projector_hidden: int | None = None  # hidden width of the projector; None: the store's feature_dim
    category_kl: bool = True  # parts: the per-point KL over the object category's parts only (what is scored)

    def __post_init__(self) -> None:
        if self.affinity_mode not in AFFINITY_MODES:
            raise KdpcError(f"srkd affinity_mode must be one of {AFFINITY_MODES}, got {self.affinity_mode!r}")
        for name in ("pointwise_temperature", "affinity_temperature", "cross_temperature"):
            check_temperature(getattr(self, name), f"srkd {name}")
        for name in ("ce_weight", "pointwise_weight", "affinity_weight", "cross_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise KdpcError(f"srkd {name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.category_kl, bool):
            raise KdpcError(f"srkd category_kl must be true or false, got {self.category_kl!r}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise KdpcError(f"srkd label_smoothing must be in [0, 1), got {self.label_smoothing!r}")

    @property
    def uses_features(self) -> bool:
        return self.affinity_weight > 0 or self.cross_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SrkdConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KdpcError(f"unknown srkd option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


# Scenes: the per-point KL at T = 1 unless set. Chosen on a pilot seed's validation mIoU (docs/benchmarks.md,
# "Scenes: offline SRKD"): T = 2 spreads the target over classes a point is nowhere near, which cost accuracy.
SCENE_POINTWISE_TEMPERATURE = 1.0


def srkd_options(task: str, given: Mapping[str, Any], online: bool = False) -> dict[str, Any]:
    """The ``srkd:`` options of a run: the user's, with the scene default temperature; the online baseline has
    per-point outputs but no recorded anchor features, so its relation terms are off."""
    options = dict(given)
    if task == "semseg":
        options.setdefault("pointwise_temperature", SCENE_POINTWISE_TEMPERATURE)
    if online:
        options.update(affinity_weight=0.0, cross_weight=0.0)
    return options


# ---------------------------------------------------------------------------------------------- data path
def anchor_positions(anchors: np.ndarray, point_index: np.ndarray) -> np.ndarray:
    """Where each anchor of a view sits in the student's (point-level augmented) input.

    Args:
        anchors: ``[M]`` point positions in VIEW order (``RecordReader.get(...)["anchors"][k]``).
        point_index: ``[N']`` with ``student_input[k] = view[point_index[k]]`` (``apply_point_level_with_index``:
            a shuffle, and dropout that replaces dropped points by copies of a kept one).

    Returns:
        int64 ``[M]``: the first ``k`` with ``point_index[k] == anchors[m]``, or ``-1`` when the anchor's point is
        not in the input (dropped).
    """
    anchors = np.asarray(anchors, dtype=np.int64).reshape(-1)
    point_index = np.asarray(point_index, dtype=np.int64).reshape(-1)
    size = int(max(point_index.max(initial=-1), anchors.max(initial=-1))) + 1
    first = np.full(size, point_index.size, dtype=np.int64)
    np.minimum.at(first, point_index, np.arange(point_index.size, dtype=np.int64))
    pos = first[anchors] if anchors.size else np.zeros(0, dtype=np.int64)
    return np.where(pos == point_index.size, -1, pos).astype(np.int64)


def seg_item_fields(batch: Mapping[str, np.ndarray], k: int, point_index: np.ndarray) -> dict[str, np.ndarray]:
    """The SRKD keys of item ``k`` of a ``RecordReader.get`` batch: ``teacher_features`` float32 ``[M, D]`` and
    ``anchor_positions`` int64 ``[M]`` (empty dict for stores without anchors). ``teacher_logprobs`` is permuted
    by the dataset already (``teacher[point_index]``)."""
    if "features" not in batch:
        return {}
    return {"teacher_features": np.asarray(batch["features"][k], dtype=np.float32),
            "anchor_positions": anchor_positions(batch["anchors"][k], point_index)}


# -------------------------------------------------------------------------------------------------- loss
class SrkdLoss(nn.Module):
    """The offline SRKD objective; owns the student-side ``FeatureProjector`` (``student_dim -> teacher_dim``).

    Args:
        config: ``SrkdConfig``.
        student_dim: the student's per-point feature width (``student.num_features``).
        teacher_dim: the store's ``feature_dim`` (width of the recorded, projected teacher features); 0 when the
            store keeps no features (then ``affinity_weight`` and ``cross_weight`` must be 0).
    """

    def __init__(self, config: SrkdConfig | Mapping[str, Any] | None, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.config = config if isinstance(config, SrkdConfig) else SrkdConfig.from_dict(config)
        self.student_dim = int(student_dim)
        self.teacher_dim = int(teacher_dim)
        self.projector: FeatureProjector | None = None
        self.register_buffer("part_mask", None, persistent=False)  # [categories, P] bool: set_category_parts
        if self.config.uses_features:
            if self.teacher_dim < 1:
                raise KdpcError("srkd affinity_weight / cross_weight need teacher features, but the store keeps none "
                                "(record with anchors > 0) - or set both weights to 0")
            self.projector = FeatureProjector(self.student_dim, self.teacher_dim, self.config.projector_hidden)

    def set_category_parts(self, mask: Tensor) -> None:
        """Restrict the per-point KL of part segmentation to each object's category parts (``category_kl``): both
        distributions are renormalised over those parts, as the ShapeNetPart evaluation restricts predictions."""
        self.part_mask = mask.bool()

    @classmethod
    def for_student(cls, student: nn.Module, header: Any, config: SrkdConfig | Mapping[str, Any] | None = None) -> "SrkdLoss":
        """Sized from the student (``num_features``) and a store header (``feature_dim``)."""
        inner = student.module if isinstance(student, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else student
        return cls(config, int(inner.num_features), int(getattr(header, "feature_dim", 0) or 0))

    def forward(self, student: nn.Module, points: Tensor, category: Tensor | None,
                batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One student forward and the loss.

        Args:
            student: a part-segmentation model (``forward_features(points, category) -> [B, N, Ds]`` and
                ``forward_head``), or a DDP wrapper of one (see ``kdpc.models.model_features_and_logits``).
            points: ``[B, N, 3]`` the student's input (point-level augmented).
            category: ``[B]`` object categories (ignored by students built without ``num_categories``).
            batch: ``parts`` ``[B, N]`` targets; ``teacher_logprobs`` ``[B, N, P]``; with feature terms
                ``teacher_features`` ``[B, M, D]`` and ``anchor_positions`` ``[B, M]`` (-1 = dropped); optional
                ``point_mask`` ``[B, N]`` bool restricting the per-point KD (default: every point).

        Returns:
            ``(logits [B, N, P] float32, terms, total)``: ``terms`` maps ``ce``, ``kd`` and, when their weight is
            non-zero, ``aff`` and ``cross`` to their unweighted scalar values (attached to the graph),
            ``anchors_valid`` to the detached fraction of anchors present in the input; ``total`` is the weighted
            sum. Terms with weight 0 are not computed (the cross-sample term costs O(B^2 M^2)).
        """
        feats, logits = model_features_and_logits(student, points, category)
        teacher = batch["teacher_logprobs"]
        if self.part_mask is not None and self.config.category_kl and category is not None:
            allowed = self.part_mask[category.to(self.part_mask.device).long()][:, None, :]  # [B, 1, P]
            kd_logits = logits.masked_fill(~allowed, OUTSIDE_CATEGORY)
            teacher = teacher.to(logits.device).masked_fill(~allowed, OUTSIDE_CATEGORY)
        else:
            kd_logits = logits
        pos = batch.get("anchor_positions")
        picked = valid = None
        if self.projector is not None:
            pos = pos.to(feats.device).long()
            valid = pos >= 0
            picked = torch.gather(feats, 1, pos.clamp_min(0)[..., None].expand(-1, -1, feats.shape[-1]))
        mask = batch.get("point_mask")
        terms, total = self.terms(logits, batch["parts"], teacher, picked, batch.get("teacher_features"), valid,
                                  None if mask is None else mask.to(logits.device), kd_logits=kd_logits)
        return logits, terms, total

    def scene_forward(self, student: nn.Module, coord: Tensor, feat: Tensor, offset: Tensor,
                      batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The same objective on a scene batch (points of all scenes concatenated, ``offset`` their running ends).

        ``batch``: ``segment`` ``[N]`` (-1 = unlabelled, never a CE target), ``teacher_logprobs`` ``[N, P]``; with
        feature terms ``teacher_features`` ``[B, M, D]`` and ``anchor_rows`` ``[B, M]`` (rows of the concatenated
        points, -1 where a view has fewer than M points). The cross-sample term relates the anchors of all scenes
        of the batch. Returns ``(logits [N, P], terms, total)``."""
        feats, logits = model_features_and_logits(student, coord, feat, offset)
        picked = valid = None
        if self.projector is not None:
            rows = batch["anchor_rows"].to(feats.device).long()
            valid = rows >= 0
            picked = feats[rows.clamp_min(0)]  # [B, M, Ds]
        terms, total = self.terms(logits[None], batch["segment"][None], batch["teacher_logprobs"][None], picked,
                                  batch.get("teacher_features"), valid, ignore_index=-1)
        return logits, terms, total

    def terms(self, logits: Tensor, target: Tensor, teacher_logprobs: Tensor, student_anchors: Tensor | None,
              teacher_features: Tensor | None, valid: Tensor | None, mask: Tensor | None = None,
              ignore_index: int | None = None, kd_logits: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """The weighted terms from the student's logits ``[B, N, P]`` and its features at the anchors
        ``[B, M, Ds]`` (``valid`` ``[B, M]``: the anchor is in the input)."""
        cfg = self.config
        terms: dict[str, Tensor] = {}
        ignore = cfg.ignore_index if ignore_index is None else ignore_index
        terms["ce"] = label_smoothing_ce(logits, target.to(logits.device), smoothing=cfg.label_smoothing,
                                         ignore_index=ignore)
        terms["kd"] = pointwise_kd_loss(logits if kd_logits is None else kd_logits, teacher_logprobs.to(logits.device),
                                        cfg.pointwise_temperature, mask=mask)
        total = cfg.ce_weight * terms["ce"] + cfg.pointwise_weight * terms["kd"]
        if self.projector is not None:
            assert student_anchors is not None and teacher_features is not None and valid is not None
            projected = self.projector(student_anchors)
            t_feats = teacher_features.to(projected.device)
            if t_feats.shape[:2] != projected.shape[:2] or t_feats.shape[-1] != self.teacher_dim:
                raise KdpcError(f"teacher features {tuple(t_feats.shape)} do not fit anchors {tuple(valid.shape)} and "
                                f"feature_dim {self.teacher_dim}")
            if cfg.affinity_weight > 0:
                terms["aff"] = affinity_alignment_loss(projected, t_feats, cfg.affinity_mode, cfg.affinity_temperature,
                                                       valid=valid)
                total = total + cfg.affinity_weight * terms["aff"]
            if cfg.cross_weight > 0:
                terms["cross"] = cross_sample_relation_loss(projected, t_feats, cfg.cross_temperature, valid=valid)
                total = total + cfg.cross_weight * terms["cross"]
            terms["anchors_valid"] = valid.float().mean().detach()
        return terms, total

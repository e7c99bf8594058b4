"""Accuracy metrics: overall / mean-class accuracy, and ShapeNetPart-style instance and class mIoU."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def classification_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    pred = np.asarray(pred).reshape(-1)
    target = np.asarray(target).reshape(-1)
    oa = float((pred == target).mean()) if target.size else 0.0
    per_class = [float((pred[target == c] == c).mean()) for c in range(num_classes) if (target == c).any()]
    return {"oa": oa, "macc": float(np.mean(per_class)) if per_class else 0.0}


def part_seg_metrics(
    pred: np.ndarray, target: np.ndarray, categories: np.ndarray, category_parts: Mapping[int, Sequence[int]]
) -> dict[str, float]:
    """``pred``/``target`` [n, N] part ids; IoU of a part absent from both prediction and truth counts as 1."""
    shape_ious: list[float] = []
    per_category: dict[int, list[float]] = {}
    for p, t, c in zip(pred, target, categories):
        ious = []
        for part in category_parts[int(c)]:
            inter = np.sum((p == part) & (t == part))
            union = np.sum((p == part) | (t == part))
            ious.append(1.0 if union == 0 else inter / union)
        shape_iou = float(np.mean(ious))
        shape_ious.append(shape_iou)
        per_category.setdefault(int(c), []).append(shape_iou)
    return {
        "inst_miou": float(np.mean(shape_ious)) if shape_ious else 0.0,
        "cls_miou": float(np.mean([np.mean(v) for v in per_category.values()])) if per_category else 0.0,
        "point_acc": float((pred == target).mean()) if target.size else 0.0,
    }

"""Accuracy metrics: overall / mean-class accuracy, ShapeNetPart-style instance and class mIoU, and scene
semantic segmentation (confusion matrix -> mIoU, per-class IoU, OA)."""

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


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """``[K, K]`` int64 counts, rows = truth, columns = prediction; points labelled ``ignore_index`` are left out."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    target = np.asarray(target, dtype=np.int64).reshape(-1)
    keep = target != ignore_index
    flat = target[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def semseg_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """mIoU, OA, mean class accuracy and ``iou/<class>`` from a confusion matrix (rows = truth).

    IoU_c = TP / (TP + FP + FN). The means run over the classes present in the ground truth; a class with no
    labelled point is left out of the means and of the per-class IoUs (its false positives still lower the IoU of
    the classes they were taken from)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    truth = confusion.sum(1)
    union = truth + confusion.sum(0) - tp
    present = truth > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    acc = np.divide(tp, truth, out=np.zeros_like(tp), where=truth > 0)
    total = truth.sum()
    out = {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "oa": float(tp.sum() / total) if total else 0.0,
        "macc": float(acc[present].mean()) if present.any() else 0.0,
    }
    out.update({f"iou/{name}": float(iou[c]) for c, name in enumerate(class_names) if present[c]})
    return out

"""Scoring a scene segmenter on whole scenes: each scene's deterministic grid-sampled view goes through the model,
every original point takes the prediction of the view point standing for its voxel, and one confusion matrix over
all labelled original points gives mIoU, per-class IoU, OA and mean class accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..metrics import confusion_matrix, semseg_metrics
from ..models import unwrap_model
from .runtime import autocast
from .scene_data import SceneEvalViews


@torch.inference_mode()
def scene_predictions(model: torch.nn.Module, dataset: Any, device: torch.device, amp: bool = True):
    """``(scene index, per-point prediction on every original point, labels)`` for every scene, one at a time."""
    model = unwrap_model(model)
    model.eval()
    views = SceneEvalViews(dataset)
    for index in range(len(views)):
        item = views[index]
        coord = torch.from_numpy(item["coord"]).to(device)
        feat = torch.from_numpy(item["feat"]).to(device)
        offset = torch.tensor([coord.shape[0]], dtype=torch.long, device=device)
        with autocast(device, amp):
            logits = model(coord, feat, offset)
        pred = logits.float().argmax(-1).cpu().numpy()
        yield index, pred[item["inverse"]], item["target"]


def evaluate_scenes(model: torch.nn.Module, dataset: Any, device: torch.device, amp: bool = True) -> dict[str, float]:
    k = dataset.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    for _, pred, target in scene_predictions(model, dataset, device, amp):
        confusion += confusion_matrix(pred, target, k)
    return semseg_metrics(confusion, dataset.class_names)

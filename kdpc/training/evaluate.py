"""Scoring a model: overall / mean-class accuracy (instance / class mIoU for part segmentation, mIoU and per-class
IoU on whole scenes for scene segmentation) on a split's deterministic evaluation views, and ``kdpc eval`` (of one
checkpoint, or of an ensemble of classifiers by the rule of ``kdpc.ensemble``)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..checkpoint import check_checkpoint_data, dataset_for_checkpoint, load_checkpoint
from ..ensemble import mix_log_probs, parse_weights
from ..errors import KdpcError
from ..metrics import classification_metrics, part_seg_metrics
from ..models import model_forward, unwrap_model
from .data import EvalViews
from .runtime import autocast, resolve_device


@torch.inference_mode()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool = True) -> Iterator[tuple[dict, torch.Tensor]]:
    model.eval()
    for batch in loader:
        points = batch["points"].to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model_forward(model, points, batch["label"].to(device))
        yield batch, logits.float()


def evaluate(model: torch.nn.Module, dataset: Any, device: torch.device, batch_size: int = 64, workers: int = 0) -> dict[str, float]:
    model = unwrap_model(model)  # never through DDP: evaluation runs on one rank, with no gradient sync
    if getattr(model, "task", "cls") == "semseg":
        from .scene_eval import evaluate_scenes  # whole scenes, one at a time: batch_size does not apply

        return evaluate_scenes(model, dataset, device)
    loader = DataLoader(EvalViews(dataset), batch_size=batch_size, shuffle=False, num_workers=workers)
    preds, targets, cats = [], [], []
    task = getattr(model, "task", "cls")
    part_mask = None
    if task == "partseg":
        part_mask = category_part_mask(dataset.category_parts, dataset.num_classes, model.num_classes).to(device)
    for batch, logits in predict(model, loader, device):
        if task == "partseg":
            # ShapeNetPart protocol: the prediction is restricted to the parts of the known object category.
            allowed = part_mask[batch["label"].to(device)]  # [B, P]
            logits = logits.masked_fill(~allowed[:, None, :], float("-inf"))
            targets.append(batch["parts"].numpy())
            cats.append(batch["label"].numpy())
        else:
            targets.append(batch["label"].numpy())
        preds.append(logits.argmax(-1).cpu().numpy())
    pred = np.concatenate(preds)
    if task == "partseg":
        return part_seg_metrics(pred, np.concatenate(targets), np.concatenate(cats), dataset.category_parts)
    return classification_metrics(pred, np.concatenate(targets), dataset.num_classes)


def evaluate_file(path: Any, dataset: Any, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """``evaluate`` on the model saved in checkpoint ``path``."""
    return evaluate(load_checkpoint(path).build_model(device), dataset, device, batch_size=batch_size)


def category_part_mask(category_parts: dict[int, list[int]], num_categories: int, num_parts: int) -> torch.Tensor:
    mask = torch.zeros(num_categories, num_parts, dtype=torch.bool)
    for cat, parts in category_parts.items():
        mask[int(cat), list(parts)] = True
    return mask


def primary_metric(task: str) -> str:
    return {"partseg": "inst_miou", "semseg": "miou"}.get(task, "oa")



def evaluate_checkpoint(path: str, dataset: str | None = None, data_root: str | None = None, split: str = "test",
                        batch_size: int = 64, device: str = "auto",
                        dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score one checkpoint on ``split`` of its own data, or of ``dataset`` / ``dataset_options`` where given
    (options override the checkpoint's own)."""
    ckpt = load_checkpoint(path)
    data = dataset_for_checkpoint(ckpt, dataset, data_root, split, options=dataset_options)
    dev = resolve_device(device)
    model = ckpt.build_model(dev)
    metrics = evaluate(model, data, dev, batch_size=batch_size)
    out = {**metrics, "model": ckpt.arch, "params": ckpt.num_params, "dataset": data.name, "split": split,
           "num_samples": len(data), "checkpoint": str(path)}
    if ckpt.task == "semseg":
        out["num_points"] = data.total_points  # every original point is scored
    return out


def class_log_probs(model: torch.nn.Module, dataset: Any, device: torch.device, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A classifier's log-probabilities ``[N, C]`` (float64) and the labels ``[N]`` on ``dataset``'s evaluation views."""
    loader = DataLoader(EvalViews(dataset), batch_size=batch_size, shuffle=False)
    scores, labels = [], []
    for batch, logits in predict(unwrap_model(model), loader, device):
        scores.append(torch.log_softmax(logits.double(), -1).cpu().numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(scores), np.concatenate(labels)


def evaluate_ensemble(paths: Sequence[str], weights: Any = None, dataset: str | None = None,
                      data_root: str | None = None, split: str = "test", batch_size: int = 64,
                      device: str = "auto", dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score each classifier of ``paths`` and their ensemble (the weighted mean of their probabilities, as
    ``kdpc records merge`` records it) on the first checkpoint's split."""
    ckpts = [load_checkpoint(p) for p in paths]
    w = parse_weights(weights, len(ckpts), "checkpoints")
    for ck in ckpts:
        if ck.task != "cls":
            raise KdpcError(f"checkpoint {ck.path} is a {ck.task} model: ensembles are evaluated (and recorded) for "
                            f"classifiers only")
    data = dataset_for_checkpoint(ckpts[0], dataset, data_root, split, options=dataset_options)
    dev = resolve_device(device)
    members, log_probs = [], []
    labels = None
    for ck in ckpts:
        check_checkpoint_data(ck, data)
        lp, labels = class_log_probs(ck.build_model(dev), data, dev, batch_size)
        log_probs.append(lp)
        members.append({**classification_metrics(lp.argmax(-1), labels, data.num_classes), "model": ck.arch,
                        "params": ck.num_params, "checkpoint": str(ck.path)})
    mix = mix_log_probs(np.stack(log_probs), w)
    return {**classification_metrics(mix.argmax(-1), labels, data.num_classes), "model": "ensemble",
            "params": int(sum(ck.num_params for ck in ckpts)), "dataset": data.name, "split": split,
            "num_samples": len(data), "weights": w, "members": members}

"""Pieces every training loop shares: device, seeding, per-epoch views, evaluation, optimiser and schedule."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .augment import AugmentConfig, PointAugmentConfig, apply_params, apply_point_level_with_index, draw_params
from .augment import params_at, subset_indices
from .errors import KdpcError
from .metrics import classification_metrics, part_seg_metrics


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdpcError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise KdpcError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_workers(device: torch.device) -> int:
    return min(4, (os.cpu_count() or 2) // 2) if device.type == "cuda" else 0


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def point_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Point-level randomness keyed by (seed, epoch, record): independent of worker count and resumable."""
    return np.random.default_rng([seed & 0xFFFFFFFF, 0x70696E74, epoch, index])


def replay_view(dataset: Any, sample: int, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The exact teacher input of a recorded view (and its part labels for segmentation)."""
    points = apply_params(dataset.points[sample], params, dataset.num_points)
    parts = None
    if getattr(dataset, "part_labels", None) is not None:
        idx = subset_indices(int(params["seed"]), dataset.num_raw_points, dataset.num_points)
        parts = dataset.part_labels[sample][idx]
    return points, parts


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
    """The deterministic evaluation view of each sample: the first ``num_points`` points, unaugmented."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = self.dataset.num_points
        item = {"points": self.dataset.points[index, :n, :3].astype(np.float32), "label": int(self.dataset.labels[index])}
        if getattr(self.dataset, "part_labels", None) is not None:
            item["parts"] = self.dataset.part_labels[index, :n].astype(np.int64)
        return item


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel (``.module``) or torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def model_forward(model: torch.nn.Module, points: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
    """Classification models take points; part-segmentation models also take the object category.

    ``model`` may be a DDP wrapper: the call goes through it (gradient sync) and the attributes come from the
    module inside."""
    inner = unwrap_model(model)
    if getattr(inner, "task", "cls") == "partseg":
        return model(points, label if getattr(inner, "num_categories", 0) else None)
    return model(points)


def train_loader(dataset: Dataset, global_batch: int, world: Any, seed: int, *, workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
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
                      num_workers=workers, pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))


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
    from .checkpoint import load_checkpoint

    return evaluate(load_checkpoint(path).build_model(device), dataset, device, batch_size=batch_size)


def category_part_mask(category_parts: dict[int, list[int]], num_categories: int, num_parts: int) -> torch.Tensor:
    mask = torch.zeros(num_categories, num_parts, dtype=torch.bool)
    for cat, parts in category_parts.items():
        mask[int(cat), list(parts)] = True
    return mask


def primary_metric(task: str) -> str:
    return "inst_miou" if task == "partseg" else "oa"


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.01):
    import math

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors/lists only, so they fit a weights-only checkpoint."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

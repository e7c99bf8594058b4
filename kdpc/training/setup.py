"""What ``kdpc train`` and ``kdpc distill`` share: the config fields of a training run and the setup around a model
(the splits it is scored on, the loader, the optimiser and schedule), written once."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ..data import create_dataset, has_validation
from ..distributed import World, sync_batchnorm
from ..errors import KdpcError
from ..models import create_model
from .data import train_loader
from ..training.evaluate import evaluate, evaluate_file
from .optim import make_optimizer, make_scheduler
from .runtime import default_workers


@dataclass
class FitConfig:
    """Fields every training command has (``TrainConfig`` and ``DistillConfig`` add their own)."""

    data_root: str | None = None
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.0  # a teacher meant to be recorded keeps its class similarities (docs/method.md)
    point_augment: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 1
    select: str = "auto"  # which epoch is kept: val (best validation score), last, auto (val if there is one)
    device: str = "auto"
    amp: bool = True
    workers: int | None = None
    seed: int = 0
    sync_bn: bool = True  # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "eval_every": self.eval_every}
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise KdpcError(f"--{name.replace('_', '-')} must be a number > 0, got {value!r}")
        for name in ("weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise KdpcError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise KdpcError(f"--label-smoothing must lie in [0, 1), got {self.label_smoothing!r}")


@dataclass
class Splits:
    """The splits a run uses: it trains on ``train``, chooses its epoch on ``val`` (None: it takes the last) and is
    scored on ``test`` once, at the end."""

    train: Any
    val: Any | None
    test: Any


def load_splits(name: str, root: str | None, num_points: int | None, cfg: dict[str, Any],
                train_split: str = "train") -> Splits:
    def load(split: str) -> Any:
        return create_dataset(name, root=root, split=split, num_points=num_points, **cfg)

    return Splits(train=load(train_split), val=load("val") if has_validation(name, cfg) else None, test=load("test"))


def build_model(name: str, data: Any, model_cfg: dict[str, Any], device: torch.device, world: World,
                sync_bn: bool) -> tuple[torch.nn.Module, dict[str, Any], int]:
    """The model for ``data`` (its head sized to the classes, or parts and categories): ``(model, its config as
    stored in checkpoints, number of outputs)``."""
    cfg = dict(model_cfg)
    if data.task == "partseg":
        cfg.setdefault("num_categories", data.num_classes)
    if data.task == "semseg":  # input channels and voxel size come from the data unless given
        cfg.setdefault("in_channels", data.num_channels)
        cfg.setdefault("grid_size", data.grid_size)
    num_outputs = data.num_parts if data.task == "partseg" else data.num_classes
    model = create_model(name, num_classes=num_outputs, **cfg).to(device)
    if sync_bn:
        model = sync_batchnorm(model, device, world)  # BatchNorm statistics over the global batch
    return model, cfg, num_outputs


def build_optimisation(cfg: FitConfig, views: Dataset, trainable: torch.nn.Module, world: World,
                       device: torch.device, collate_fn: Callable | None = None
                       ) -> tuple[DataLoader, torch.optim.Optimizer, Any]:
    """The epoch loader (sharded over ranks), AdamW and the warm-up + cosine schedule of one run."""
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    loader = train_loader(views, cfg.batch_size, world, cfg.seed, workers=workers, pin_memory=device.type == "cuda",
                          collate_fn=collate_fn)
    steps = max(1, len(loader))
    optimizer = make_optimizer(trainable, cfg.lr, cfg.weight_decay)
    return loader, optimizer, make_scheduler(optimizer, cfg.epochs * steps, cfg.warmup_epochs * steps)


def epoch_loader(views: Any, loader: DataLoader) -> Callable[[int], DataLoader]:
    """``loader_for_epoch``: the views and the shuffle of epoch ``e`` are keyed by ``(seed, e)``, so a resumed run sees
    the batches an uninterrupted one would."""

    def for_epoch(epoch: int) -> DataLoader:
        views.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        return loader

    return for_epoch


def scorers(model: torch.nn.Module, splits: Splits, device: torch.device, batch_size: int
            ) -> tuple[Callable[[], dict[str, float]] | None, Callable[[Path], dict[str, float]]]:
    """``(validate, test)`` hooks of ``fit``: the live model on ``val``; a saved checkpoint on ``test``. Validation
    keeps the headline numbers (scene segmentation: not the per-class IoUs, which the test scores carry)."""
    eval_batch = max(batch_size, 64)

    def validate() -> dict[str, float]:
        metrics = evaluate(model, splits.val, device, batch_size=eval_batch)
        return {k: v for k, v in metrics.items() if not k.startswith("iou/")}

    return (None if splits.val is None else validate), lambda path: evaluate_file(path, splits.test, device,
                                                                                   batch_size=eval_batch)


def prepare_out_file(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KdpcError(f"cannot create the output folder {out.parent}: {exc.strerror}") from None
    if out.is_dir():
        raise KdpcError(f"--out {out} is a folder; give a checkpoint file name like {out}/teacher.pt")
    try:  # found out now, not after the first epoch
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise KdpcError(f"cannot write into {out.parent} ({exc.strerror or exc}); pick a writable --out") from None

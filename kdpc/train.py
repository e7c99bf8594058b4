"""``kdpc train``: supervised training with the standard recipe; produces teacher (or baseline) checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .augment import AugmentConfig, PointAugmentConfig
from .checkpoint import Checkpoint, save_checkpoint
from .data import create_dataset
from .distributed import World, decorrelate_rng, distributed, everywhere, main_log, on_main, rank_device
from .distributed import sync_batchnorm, wrap_ddp
from .data import has_validation
from .engine import EpochViews, default_workers, evaluate, make_optimizer, make_scheduler, model_forward
from .engine import evaluate_file, primary_metric, resolve_device, seed_everything, train_loader
from .errors import KdpcError
from .loop import LoopHooks, LoopState, fit, resolve_select
from .models import count_parameters, create_model, model_task


@dataclass
class TrainConfig:
    model: str = "pointmlp-tiny"
    model_cfg: dict[str, Any] = field(default_factory=dict)
    dataset: str = "synthetic"
    data_root: str | None = None
    dataset_cfg: dict[str, Any] = field(default_factory=dict)
    num_points: int | None = None
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0  # a teacher meant to be recorded keeps its class similarities (docs/method.md)
    warmup_epochs: int = 1
    augment: dict[str, Any] = field(default_factory=dict)
    point_augment: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 1
    select: str = "auto"  # which epoch becomes `out`: val (best validation score), last, auto (val if there is one)
    device: str = "auto"
    workers: int | None = None
    amp: bool = True
    seed: int = 0
    sync_bn: bool = True  # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)
    out: str = "runs/teacher.pt"


def load_split(name: str, root: str | None, split: str, num_points: int | None, cfg: dict[str, Any]):
    return create_dataset(name, root=root, split=split, num_points=num_points, **cfg)


def train(cfg: TrainConfig, log=print) -> tuple[LoopState, Path]:
    """Supervised training. Under torchrun: DDP, ``batch_size`` is the global batch, rank 0 writes ``out``."""
    device = resolve_device(cfg.device)
    with distributed(device) as world:
        return _train(cfg, rank_device(device, world), world, main_log(world, log))


def _train(cfg: TrainConfig, device: torch.device, world: World, log) -> tuple[LoopState, Path]:
    seed_everything(cfg.seed)

    select = resolve_select(cfg.select, has_validation(cfg.dataset, cfg.dataset_cfg))

    def setup():
        train_set = load_split(cfg.dataset, cfg.data_root, "train", cfg.num_points, cfg.dataset_cfg)
        val_set = load_split(cfg.dataset, cfg.data_root, "val", cfg.num_points, cfg.dataset_cfg) \
            if has_validation(cfg.dataset, cfg.dataset_cfg) else None
        test_set = load_split(cfg.dataset, cfg.data_root, "test", cfg.num_points, cfg.dataset_cfg)
        task = model_task(cfg.model)
        if task != train_set.task:
            raise KdpcError(f"model {cfg.model} is a {task} model but dataset {cfg.dataset} is a {train_set.task} dataset")
        return train_set, val_set, test_set, task

    train_set, val_set, test_set, task = everywhere(world, setup)
    num_outputs = train_set.num_parts if task == "partseg" else train_set.num_classes
    model_cfg = dict(cfg.model_cfg)
    if task == "partseg":
        model_cfg.setdefault("num_categories", train_set.num_classes)
    model = create_model(cfg.model, num_classes=num_outputs, **model_cfg).to(device)
    if cfg.sync_bn:
        model = sync_batchnorm(model, device, world)
    log(f"{cfg.model}: {count_parameters(model):,} parameters; {cfg.dataset} train {len(train_set)} / "
        f"{f'val {len(val_set)} / ' if val_set is not None else ''}test {len(test_set)} samples"
        f" (checkpoint chosen by: {'best validation ' + primary_metric(task) if select == 'val' else 'last epoch'})"
        f", {train_set.num_points} points, device {device}"
        + (f", {world.size} processes (global batch {cfg.batch_size})" if world.enabled else ""))

    augment = AugmentConfig.from_dict(cfg.augment)
    views = EpochViews(train_set, augment, PointAugmentConfig.from_dict(cfg.point_augment), cfg.seed)
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    loader = train_loader(views, cfg.batch_size, world, cfg.seed, workers=workers, pin_memory=device.type == "cuda")
    steps_per_epoch = max(1, len(loader))
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch)

    ddp = wrap_ddp(model, device, world)  # `model` stays the plain module (evaluation, checkpoints)
    decorrelate_rng(world, cfg.seed)

    def loader_for_epoch(epoch: int):
        views.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        return loader

    def step(batch: dict[str, Any]):
        points = batch["points"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        logits = model_forward(ddp, points, label)
        if task == "partseg":
            target = batch["parts"].to(device, non_blocking=True)
            loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), label_smoothing=cfg.label_smoothing)
        else:
            target = label
            loss = F.cross_entropy(logits.float(), label, label_smoothing=cfg.label_smoothing)
        return loss, {"ce": loss.detach(), "train/acc": (logits.argmax(-1) == target).float().mean()}

    dataset_info = train_set.describe()

    def save(path: Path, metrics: dict[str, float], training_state: dict[str, Any] | None) -> None:
        save_checkpoint(path, Checkpoint(
            arch=cfg.model, model_config=model_cfg, num_classes=num_outputs,
            class_names=list(train_set.part_names if task == "partseg" else train_set.class_names), task=task,
            dataset=dataset_info, state_dict=model.state_dict(), metrics=metrics,
            provenance={"trained_by": "kdpc train", "config": _plain(cfg.__dict__),
                        # the views it was fitted on: kdpc record draws from another stream (kdpc.augment)
                        "training_views": {"stream": "train", "seed": cfg.seed, "epochs": cfg.epochs,
                                           "augment": augment.to_dict()},
                        "categories": list(train_set.class_names),
                        **({"category_parts": {str(k): list(v) for k, v in train_set.category_parts.items()}} if task == "partseg" else {})},
            training_state=training_state))

    out = Path(cfg.out)
    on_main(world, lambda: _check_writable(out))
    eval_batch = max(cfg.batch_size, 64)
    hooks = LoopHooks(loader_for_epoch=loader_for_epoch, step=step,
                      validate=None if val_set is None else lambda: evaluate(model, val_set, device, batch_size=eval_batch),
                      test=lambda path: evaluate_file(path, test_set, device, batch_size=eval_batch),
                      save_checkpoint=save)
    state = fit(ddp, optimizer, scheduler, hooks, epochs=cfg.epochs, device=device, primary=primary_metric(task),
                select=select, best_path=out, eval_every=cfg.eval_every, amp=cfg.amp, desc=f"train {cfg.model}",
                world=world)
    return state, out


def _check_writable(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KdpcError(f"cannot create the output folder {out.parent}: {exc.strerror}") from None
    if out.is_dir():
        raise KdpcError(f"--out {out} is a folder; give a checkpoint file name like {out}/teacher.pt")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

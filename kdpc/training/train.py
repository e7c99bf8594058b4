"""``kdpc train``: supervised training with the standard recipe; produces teacher (or baseline) checkpoints.

``--out X.pt`` is the chosen epoch; ``X.last.pt``, ``X.metrics.jsonl`` and ``X.curves.png`` are written next to it
(``run_files``) and ``--resume`` continues an interrupted run from ``X.last.pt``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..augment import AugmentConfig, PointAugmentConfig
from ..checkpoint import Checkpoint, save_checkpoint
from ..config import config_to_dict
from ..distributed import World, barrier, decorrelate_rng, distributed, everywhere, main_log, on_main, rank_device
from ..distributed import wrap_ddp
from ..errors import KdpcError
from ..secrets import shareable
from ..models import count_parameters, model_forward, model_task
from .data import EpochViews
from .evaluate import primary_metric
from .loop import LoopHooks, LoopState, fit, resolve_select
from .run_files import check_resumable, resume_state, run_files, start_fresh
from .runtime import resolve_device, seed_everything
from .setup import FitConfig, build_model, build_optimisation, epoch_loader, load_splits, prepare_out_file, scorers

IGNORE_INDEX = -1  # unlabelled scene points


@dataclass
class TrainConfig(FitConfig):
    model: str = "pointmlp-tiny"
    model_cfg: dict[str, Any] = field(default_factory=dict)
    dataset: str = "synthetic"
    dataset_cfg: dict[str, Any] = field(default_factory=dict)
    num_points: int | None = None
    augment: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/teacher.pt"
    resume: bool = False


def train(cfg: TrainConfig, log=print) -> tuple[LoopState, Path]:
    """Supervised training. Under torchrun: DDP, ``batch_size`` is the global batch, rank 0 writes ``out``."""
    device = resolve_device(cfg.device)
    with distributed(device) as world:
        return _train(cfg, rank_device(device, world), world, main_log(world, log))


def _object_views(cfg: TrainConfig, data: Any) -> tuple[Any, None, dict[str, Any]]:
    augment = AugmentConfig.from_dict(cfg.augment)
    if augment.mix:
        raise KdpcError("mix views are recorded views (kdpc record --mix P) that distillation learns from; "
                        "kdpc train draws plain views - leave augment.mix out")
    views = EpochViews(data, augment, PointAugmentConfig.from_dict(cfg.point_augment), cfg.seed)
    return views, None, augment.to_dict()


def _scene_views(cfg: TrainConfig, data: Any) -> tuple[Any, Callable, dict[str, Any]]:
    from ..scenes.batch import collate_scenes
    from ..scenes.transforms import SceneAugmentConfig, ScenePointAugmentConfig
    from .scene_data import SceneEpochViews

    augment = SceneAugmentConfig.from_dict(cfg.augment)
    views = SceneEpochViews(data, augment, ScenePointAugmentConfig.from_dict(cfg.point_augment), cfg.seed)
    return views, collate_scenes, augment.to_dict()


def _train(cfg: TrainConfig, device: torch.device, world: World, log) -> tuple[LoopState, Path]:
    seed_everything(cfg.seed)

    def setup():
        splits = load_splits(cfg.dataset, cfg.data_root, cfg.num_points, cfg.dataset_cfg)
        if model_task(cfg.model) != splits.train.task:
            raise KdpcError(f"model {cfg.model} is a {model_task(cfg.model)} model but dataset {cfg.dataset} is a "
                            f"{splits.train.task} dataset")
        return splits

    splits = everywhere(world, setup)
    data, task = splits.train, splits.train.task
    select = resolve_select(cfg.select, splits.val is not None)
    model, model_cfg, num_outputs = build_model(cfg.model, data, cfg.model_cfg, device, world, cfg.sync_bn)
    sizes = (f"{data.total_points:,} points, views of at most {data.num_points:,} points on a {data.grid_size} m grid"
             if task == "semseg" else f"{data.num_points} points")
    log(f"{cfg.model}: {count_parameters(model):,} parameters; {cfg.dataset} train {len(data)} / "
        f"{f'val {len(splits.val)} / ' if splits.val is not None else ''}test {len(splits.test)} samples"
        f" (checkpoint chosen by: {'best validation ' + primary_metric(task) if select == 'val' else 'last epoch'})"
        f", {sizes}, device {device}"
        + (f", {world.size} processes (global batch {cfg.batch_size})" if world.enabled else ""))

    views, collate, augment_dict = (_scene_views if task == "semseg" else _object_views)(cfg, data)
    loader, optimizer, scheduler = build_optimisation(cfg, views, model, world, device, collate_fn=collate)

    out = Path(cfg.out)
    files = run_files(out)
    on_main(world, lambda: prepare_out_file(out))
    if cfg.resume:
        on_main(world, lambda: check_resumable(files))
        fingerprint = data.fingerprint()
        resumed = everywhere(world, lambda: resume_state(files, model, cfg.model, fingerprint, device, world.is_main))
    else:
        on_main(world, lambda: start_fresh(files))
        resumed = None
    ddp = wrap_ddp(model, device, world)  # `model` stays the plain module (evaluation, checkpoints)
    decorrelate_rng(world, cfg.seed)

    def step(batch: dict[str, Any]):
        if task == "semseg":
            target = batch["segment"].to(device, non_blocking=True)
            logits = ddp(batch["coord"].to(device, non_blocking=True), batch["feat"].to(device, non_blocking=True),
                         batch["offset"].to(device, non_blocking=True)).float()
        else:
            points = batch["points"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            logits = model_forward(ddp, points, label).float()
            target = batch["parts"].to(device, non_blocking=True) if task == "partseg" else label
        loss = F.cross_entropy(logits.flatten(0, -2), target.flatten(), label_smoothing=cfg.label_smoothing,
                               ignore_index=IGNORE_INDEX)
        labelled = target != IGNORE_INDEX  # every point of object data
        acc = ((logits.argmax(-1) == target) & labelled).sum() / labelled.sum().clamp(min=1)
        return loss, {"ce": loss.detach(), "train/acc": acc.float()}

    def save(path: Path, metrics: dict[str, Any], training_state: dict[str, Any] | None) -> None:
        save_checkpoint(path, Checkpoint(
            arch=cfg.model, model_config=model_cfg, num_classes=num_outputs, class_names=data.output_names,
            task=task, dataset=data.describe(), state_dict=model.state_dict(), metrics=metrics,
            provenance={"trained_by": "kdpc train", "config": shareable(config_to_dict(cfg)),
                        # the views it was fitted on: kdpc record draws from another stream (kdpc.augment)
                        "training_views": {"stream": "train", "seed": cfg.seed, "epochs": cfg.epochs,
                                           "augment": augment_dict},
                        **data.category_provenance()},
            training_state=training_state))

    validate, test = scorers(model, splits, device, cfg.batch_size)
    hooks = LoopHooks(loader_for_epoch=epoch_loader(views, loader), step=step, validate=validate, test=test,
                      save_checkpoint=save)
    state = fit(ddp, optimizer, scheduler, hooks, epochs=cfg.epochs, device=device, primary=primary_metric(task),
                select=select, best_path=out, last_path=files["last"], metrics_path=files["metrics"],
                eval_every=cfg.eval_every, amp=cfg.amp, resume_state=resumed, desc=f"train {cfg.model}", log=log,
                world=world)
    if world.is_main:
        from ..distill.plots import plot_curves

        plot_curves(files["metrics"], files["curves"], title=f"{cfg.model} on {cfg.dataset}")
    barrier(world)
    return state, out

"""The one epoch loop shared by ``kdpc train`` and ``kdpc distill``.

It owns stepping, the schedule, AMP, progress, evaluation, best/last checkpoints, ``metrics.jsonl`` and resume;
the caller supplies the data per epoch and a step function that returns the loss and its terms.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm

from ..checkpoint import update_checkpoint_metrics
from ..distributed import World, all_reduce_sum, barrier, broadcast_object, decorrelate_rng, gather_objects
from ..errors import KdpcError
from ..progress import progress
from .runtime import autocast, rng_state, set_rng_state

StepFn = Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


SELECT_MODES = ("auto", "val", "last")


@dataclass
class LoopState:
    epoch: int = 0  # epochs finished
    best_metric: float = -math.inf
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopHooks:
    """What a training command plugs into :func:`fit`.

    ``validate`` scores the current model on the validation split (``None``: the data has none, so the last epoch is
    taken); ``test`` scores the checkpoint file that was chosen, once, after training. The test split never
    drives a choice."""

    loader_for_epoch: Callable[[int], Iterable[dict[str, Any]]]
    step: StepFn
    validate: Callable[[], dict[str, float]] | None
    test: Callable[[Path], dict[str, float]]
    save_checkpoint: Callable[[Path, dict[str, Any], dict[str, Any] | None], None]
    after_step: Callable[[], None] = lambda: None
    extra_state: Callable[[], dict[str, Any]] = dict
    load_extra_state: Callable[[dict[str, Any]], None] = lambda state: None


def resolve_select(select: str, has_validation: bool) -> str:
    """``auto`` -> ``val`` where the data has a validation split, else ``last``."""
    if select not in SELECT_MODES:
        raise KdpcError(f"--select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    if select == "auto":
        return "val" if has_validation else "last"
    if select == "val" and not has_validation:
        raise KdpcError("--select val needs a validation split; this dataset has none: add --dataset-opt "
                        "holdout=0.1 (a deterministic hold-out from train) or use --select last")
    return select


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    hooks: LoopHooks,
    *,
    epochs: int,
    device: torch.device,
    primary: str,
    select: str,
    best_path: Path,
    last_path: Path | None = None,
    metrics_path: Path | None = None,
    eval_every: int = 1,
    amp: bool = True,
    grad_clip: float | None = 10.0,
    resume_state: dict[str, Any] | None = None,
    desc: str = "train",
    log: Callable[[str], None] = lambda line: tqdm.write(line),
    world: World = World(),
) -> LoopState:
    """Train for ``epochs`` and keep, as ``best_path``, the epoch chosen by ``select``: ``val`` (best validation
    ``primary``) or ``last``. The chosen checkpoint is then scored once on the test split; its metrics say how it
    was chosen (``selected_by``). Under torchrun (``world.enabled``) ``model`` is the DDP-wrapped module, every rank
    runs this loop on its shard of each epoch, loss terms are averaged over ranks, and only rank 0 evaluates (the
    others wait for its metrics), logs, and writes checkpoints and ``metrics.jsonl``."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise KdpcError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    if select not in ("val", "last") or (select == "val" and hooks.validate is None):
        raise ValueError(f"select {select!r} needs resolve_select() and, for 'val', a validate hook")
    state = LoopState()
    main = world.is_main
    if not main:
        log = _quiet
    if resume_state is not None:
        state = _restore(resume_state, model, optimizer, scheduler, hooks, world)
        log(f"resuming after epoch {state.epoch}/{epochs}")
    for epoch in range(state.epoch, epochs):
        model.train()
        started = time.perf_counter()
        sums: dict[str, float] = {}
        count = 0
        bar = progress(hooks.loader_for_epoch(epoch), desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                       disable=None if main else True)
        for batch in bar:
            with autocast(device, amp):
                loss, terms = hooks.step(batch)
            shown = loss.detach().float().reshape(1)
            if world.enabled:  # every rank stops together when any rank's loss is not finite
                shown = all_reduce_sum(shown.clone(), world) / world.size
            if not torch.isfinite(shown).all():
                raise KdpcError(f"loss became {shown.item()} at epoch {epoch + 1}; lower --lr or check the inputs")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            hooks.after_step()
            count += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.set_postfix(loss=f"{shown.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0]}
        # terms named "group/what" (train/acc, train/agree) keep their name; the rest are loss terms
        record.update({k if "/" in k else f"loss/{k}": v for k, v in _mean_terms(sums, count, world, device).items()})
        record["train_time_s"] = time.perf_counter() - started
        is_last = epoch + 1 == epochs
        line = f"epoch {epoch + 1}/{epochs}"
        if hooks.validate is not None and ((epoch + 1) % eval_every == 0 or is_last):
            val = {f"val/{k}": v for k, v in broadcast_object(world, hooks.validate() if main else None).items()}
            record.update(val)
            line += " " + " ".join(f"{k}={v:.4f}" for k, v in val.items())
            if select == "val" and val[f"val/{primary}"] > state.best_metric:
                state.best_metric = val[f"val/{primary}"]
                state.best_metrics = {**val, "epoch": epoch + 1, "selected_by": f"best val/{primary}"}
                if main:
                    hooks.save_checkpoint(best_path, state.best_metrics, None)
        if select == "last" and is_last:
            state.best_metrics = {**{k: v for k, v in record.items() if k.startswith("val/")}, "epoch": epoch + 1,
                                  "selected_by": "last epoch"}
            if main:
                hooks.save_checkpoint(best_path, state.best_metrics, None)
        log(f"{line} ({record['train_time_s']:.1f}s)")
        state.epoch = epoch + 1
        state.history.append(record)
        if metrics_path is not None and main:
            with open(metrics_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if last_path is not None:
            snapshot = _snapshot(state, optimizer, scheduler, hooks, world)  # a collective: every rank takes part
            if main:
                hooks.save_checkpoint(last_path, {**record, "selected_by": "last epoch"}, snapshot)
    state.best_metrics = broadcast_object(world, _score_on_test(state, hooks, best_path) if main else None)
    barrier(world)  # nobody returns before rank 0 has written everything
    return state


def _score_on_test(state: LoopState, hooks: LoopHooks, best_path: Path) -> dict[str, Any]:
    """Test metrics of the chosen checkpoint, written into it (once: a resumed, finished run keeps them)."""
    if any(k.startswith("test/") for k in state.best_metrics):
        return state.best_metrics
    metrics = {**state.best_metrics, **{f"test/{k}": v for k, v in hooks.test(best_path).items()}}
    update_checkpoint_metrics(best_path, metrics)
    return metrics


def _quiet(line: str) -> None:
    pass


def _mean_terms(sums: dict[str, float], count: int, world: World, device: torch.device) -> dict[str, float]:
    """Per-step means of the loss terms; under torchrun averaged over ranks (equal per-rank batches: the
    global-batch mean)."""
    if not world.enabled:
        return {k: v / max(count, 1) for k, v in sums.items()}
    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64, device=device)
    all_reduce_sum(values, world)  # nccl reduces device tensors only
    values = values.cpu()
    steps = max(float(values[-1]), 1.0)
    return {k: float(values[i]) / steps for i, k in enumerate(keys)}


def _snapshot(state: LoopState, optimizer, scheduler, hooks: LoopHooks, world: World = World()) -> dict[str, Any]:
    rng = rng_state()
    ranks = gather_objects(world, rng) if world.enabled else None
    return {
        "epoch": state.epoch,
        "best_metric": state.best_metric,
        "best_metrics": state.best_metrics,
        "history_json": json.dumps(state.history),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        **({"rng_ranks": ranks} if ranks is not None else {}),
        "extra": hooks.extra_state(),
    }


def _restore(snapshot: dict[str, Any], model, optimizer, scheduler, hooks: LoopHooks, world: World = World()) -> LoopState:
    optimizer.load_state_dict(snapshot["optimizer"])
    scheduler.load_state_dict(snapshot["scheduler"])
    per_rank = snapshot.get("rng_ranks")
    if per_rank is not None and len(per_rank) == world.size:
        set_rng_state(per_rank[world.rank])  # the same world size: every rank continues its own streams
    else:
        set_rng_state(snapshot["rng"])
        decorrelate_rng(world, int(snapshot["epoch"]))
    hooks.load_extra_state(snapshot.get("extra", {}))
    return LoopState(
        epoch=int(snapshot["epoch"]),
        best_metric=float(snapshot["best_metric"]),
        best_metrics=dict(snapshot["best_metrics"]),
        history=json.loads(snapshot["history_json"]),
    )

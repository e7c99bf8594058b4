"""``kdpc record``: the frozen teacher, batched under inference_mode, over every pending block of a store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import __version__
from ..augment import AugmentConfig, draw_params, param_specs
from ..training.runtime import default_workers, resolve_device
from .precision import check_precision, teacher_precision
from ..distributed import World, distributed, everywhere, on_main, raise_if_any, rank_device
from ..errors import KdpcError
from ..progress import progress
from ..teachers import Teacher, load_teacher
from ..store import RecordWriter, StoreHeader
from ..store.schema import default_params, sample_view
from ..scenes.transforms import SceneAugmentConfig
from .scenes import (SceneRecordViews, collate_record_views, concat_scene_outputs, record_scene_params,
                     scene_header_fields, teacher_scene_outputs)
from .seg import (concat_seg_outputs, global_feature_fields, make_seg_header_fields, teacher_cls_outputs,
                  teacher_seg_outputs, view_seeds)
from .views import BlockBatches, RecordViews
from .writer_thread import BackgroundBlockWriter


RANK_TIMEOUT = timedelta(hours=12)


@dataclass
class RecordConfig:
    teacher: str = ""  # a file (kdpc checkpoint, TorchScript, torch.export, ONNX) or package.module:build_fn
    teacher_weights: str | None = None  # the state dict / safetensors file of a package.module:build_fn teacher
    teacher_cfg: dict[str, Any] = field(default_factory=dict)  # keyword arguments of build_fn
    adapter: dict[str, Any] = field(default_factory=dict)  # how a foreign teacher is fed and read (kdpc.teachers)
    dataset: str | None = None
    dataset_cfg: dict[str, Any] = field(default_factory=dict)
    num_points: int | None = None  # default: the teacher checkpoint's, else the dataset's
    data_root: str | None = None
    split: str = "train"
    views: int = 40  # one view per epoch of `kdpc distill`'s default 40 epochs
    out: str | None = None
    codec: str | None = None
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    precision: str = "fp32"  # fp32 (TF32 off) | bf16 | fp16 (autocast): kdpc.recorder.precision
    seed: int = 0
    chunk_records: int | None = None
    augment: dict[str, Any] = field(default_factory=dict)
    anchors: int | None = None  # segmentation: points per view whose teacher features are kept
    # width of the stored (projected) teacher features: per anchor for parts and scenes (default 32); for
    # classification the teacher's embedding of each view (default 256 for kdpc checkpoint teachers, none for the
    # others; 0: none; resuming keeps what the store has)
    feature_dim: int | None = None
    resume: bool = False
    overwrite: bool = False
    break_lease: bool = False  # take the store's writer lease even though another process holds it


@dataclass
class RecordResult:
    path: Path
    records_written: int
    records_total: int
    seconds: float
    header: StoreHeader


def default_out(dataset_name: str, suffix: str = ".zarr") -> str:
    return str(Path("records") / f"{dataset_name}{suffix}")


def build_header(cfg: RecordConfig, teacher: Teacher, dataset: Any, augment: Any) -> StoreHeader:
    fields: dict[str, Any] = {
        "task": teacher.task,
        "num_samples": len(dataset),
        "num_views": cfg.views,
        "num_classes": teacher.num_classes,
        "class_names": list(teacher.class_names or []),
        "codec": cfg.codec or "",  # "": the task's default
        "params": default_params(teacher.task, augment.to_dict()),
        "augment": augment.to_dict(),
        "run_seed": cfg.seed,
        "num_points": dataset.num_points,
        "teacher": {**teacher.provenance(), "precision": cfg.precision},
        "dataset": dataset.describe(),
        "kdpc_version": __version__,
    }
    if cfg.chunk_records:
        fields["chunk_records"] = cfg.chunk_records
    if teacher.task == "partseg":  # per-point codec, anchors, feature projection (kdpc checkpoints only)
        fields.update(make_seg_header_fields(teacher.loaded.checkpoint, dataset, cfg, teacher.module))
    elif teacher.task == "semseg":  # ragged per-point outputs of scene views, anchors, projection
        fields.update(scene_header_fields(teacher, dataset, cfg, augment))
    else:
        if cfg.anchors:
            raise KdpcError("--anchors is for part and scene teachers; a classifier's store keeps one embedding per "
                            "view (--feature-dim)")
        fields.update(global_feature_fields(teacher, cfg.feature_dim))
    return StoreHeader(**fields)


def view_augment(cfg: RecordConfig, dataset: Any) -> Any:
    """The recorded views' augmentation: scene views for scene data, shape-level views otherwise."""
    if getattr(dataset, "task", "cls") == "semseg":
        return SceneAugmentConfig.from_dict(cfg.augment)
    augment = AugmentConfig.from_dict(cfg.augment)
    check_views(dataset, augment)
    return augment


def check_views(dataset: Any, augment: AugmentConfig) -> None:
    """Recorded views rotate columns 3:6 as normals (``kdpc.augment.apply_params``): refuse to rotate colours."""
    channels = tuple(getattr(dataset, "channels", ("xyz",)))
    if augment.rotation != "none" and len(channels) > 1 and channels[1] != "normals":
        raise KdpcError(f"--rotation {augment.rotation} would turn the {channels[1]} columns of dataset "
                        f"{dataset.name} like normals; record with --rotation none (or load normals too, "
                        "channels=xyz+normals+rgb)")


def record(cfg: RecordConfig, log=print, show_progress: bool = True, *, teacher: Teacher | None = None,
           dataset: Any = None) -> RecordResult:
    """Record a store. Under torchrun every rank records its share of the pending blocks into the same store.

    ``teacher`` / ``dataset`` (the Python API, ``kdpc.record``) replace ``cfg.teacher`` / the dataset named by the
    config; a given teacher is bound to the data here."""
    if cfg.resume and cfg.overwrite:
        raise KdpcError("--resume and --overwrite exclude each other")
    if cfg.views < 1 or cfg.views > 65535:
        raise KdpcError("--views must be between 1 and 65535")
    if cfg.batch_size < 1:
        raise KdpcError("--batch-size must be >= 1")
    check_precision(cfg.precision)
    if cfg.chunk_records is not None and cfg.chunk_records < 1:
        raise KdpcError(f"--chunk-records must be >= 1 (or left out: the default), got {cfg.chunk_records}")
    device = resolve_device(cfg.device)
    # The ranks exchange only small messages (errors, the pending list, "done"): gloo, even on GPUs, with a timeout
    # long enough for the slowest rank to finish its share while the others wait at the final barrier.
    with distributed(device, backend="gloo", timeout=RANK_TIMEOUT) as world:
        return _record(cfg, rank_device(device, world), world, log if world.is_main else _quiet,
                       show_progress and world.is_main, teacher, dataset)


def _recorded_feature_dim(out: Any) -> int | None:
    """The embedding width of the classification store being resumed (0: none); None when there is no store to
    read (the writer then says so)."""
    from ..store.backends import open_store, read_header

    try:
        return int(read_header(open_store(out, "r")).feature_dim)
    except (KdpcError, OSError):
        return None


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    pass


def _record(cfg: RecordConfig, device: torch.device, world: World, log, show_progress: bool,
            given_teacher: Teacher | None = None, given_dataset: Any = None) -> RecordResult:
    def prepare():
        # everything that can refuse the run (teacher, data, adapter, a probe forward) before the store exists
        teacher = given_teacher or load_teacher(cfg.teacher, weights=cfg.teacher_weights, options=cfg.teacher_cfg,
                                                adapter=cfg.adapter, device=device)
        dataset = given_dataset if given_dataset is not None else teacher.dataset_for(
            cfg.dataset, cfg.data_root, cfg.split, cfg.num_points, cfg.dataset_cfg)
        teacher.bind(dataset, device)
        augment = view_augment(cfg, dataset)
        out = cfg.out or default_out(dataset.name)
        run_cfg = cfg
        if cfg.resume and cfg.feature_dim is None and teacher.task == "cls":  # auto keeps what the store has
            run_cfg = replace(cfg, feature_dim=_recorded_feature_dim(out))
        return teacher, dataset, augment, out, build_header(run_cfg, teacher, dataset, augment)

    teacher, dataset, augment, out, header = everywhere(world, prepare)
    mode = "resume" if cfg.resume else "overwrite" if cfg.overwrite else "create"
    # Rank 0 alone creates / overwrites / resumes the store and lists its pending blocks (before anyone writes);
    # a failure there (the store exists, other settings...) is raised on every rank with the same message.
    writer: RecordWriter | None = None

    def open_store():
        nonlocal writer
        writer = RecordWriter.open(out, header, mode=mode, labels=dataset.labels, command="kdpc record",
                                   break_lease=cfg.break_lease)
        return writer.pending_blocks()

    try:
        pending = on_main(world, open_store)
        if not world.is_main:
            writer = everywhere(world, lambda: RecordWriter.attach(out))
        else:
            everywhere(world, lambda: None)
        assert writer is not None and pending is not None
        return _record_pending(cfg, teacher, dataset, augment, writer, pending, device, world, log, show_progress)
    finally:
        if writer is not None:
            writer.close()


def _record_pending(cfg, teacher, dataset, augment, writer, pending, device, world, log, show_progress) -> RecordResult:
    total = writer.header.num_records
    todo = sum(stop - start for start, stop in (writer.block_range(b) for b in pending))
    if todo < total:
        log(f"resuming: {total - todo} of {total} records already recorded, {todo} to go")
    mine = pending[world.rank::world.size]  # each rank writes only its own blocks (one block = one chunk)
    ranges = [writer.block_range(b) for b in mine]
    my_todo = sum(stop - start for start, stop in ranges)
    if world.enabled and pending:
        log(f"{world.size} processes share {len(pending)} blocks")
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    scenes = writer.header.task == "semseg"
    views = SceneRecordViews(dataset, augment, cfg.seed) if scenes else RecordViews(dataset, augment, cfg.seed)
    loader = DataLoader(views, batch_sampler=BlockBatches(ranges, cfg.batch_size), num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        collate_fn=collate_record_views if scenes else None)
    started = time.perf_counter()
    failure = None
    desc = f"record {Path(str(writer.path)).name}" + (f" (rank 0 of {world.size})" if world.enabled else "")
    bar = progress(total=my_todo, unit="rec", desc=desc, smoothing=0.1, disable=None if show_progress else True)
    try:
        _run_teacher(cfg, teacher, dataset, augment, writer, loader, zip(mine, ranges), device, bar)
    except KdpcError as exc:
        if not world.enabled:
            raise
        failure = f"rank {world.rank}: {exc}"
    finally:
        bar.close()
    raise_if_any(world, failure)  # also the barrier: every rank has written all of its blocks
    seconds = time.perf_counter() - started
    path = on_main(world, writer.finalize)  # one process marks the store complete (h5: assembles the file)
    path = str(path) if path is not None else str(writer.path)
    if todo:
        log(f"recorded {todo} records in {seconds:.1f}s ({todo / max(seconds, 1e-9):.0f} rec/s) -> {path}")
    return RecordResult(Path(path), todo, total, seconds, writer.header)


def _run_teacher(cfg, teacher, dataset, augment, writer, loader, blocks, device, bar) -> None:
    background = BackgroundBlockWriter(writer)
    block_iter = iter(blocks)
    current: tuple[int, tuple[int, int]] | None = None
    outputs: list[np.ndarray] = []
    finished = False
    try:
        with torch.inference_mode():
            for batch in loader:
                if current is None:
                    current = next(block_iter)
                if writer.header.task == "semseg":
                    with teacher_precision(device, cfg.precision):
                        outputs.append(teacher_scene_outputs(teacher.module, batch, writer.header, device))
                    bar.update(len(batch["record"]))
                    if _block_finished(current, batch, background, outputs, dataset, augment, cfg.seed):
                        outputs, current = [], None
                    continue
                points = batch["points"].to(device, non_blocking=True)
                with teacher_precision(device, cfg.precision):
                    if writer.header.task == "partseg":
                        seeds = view_seeds(batch["record"].numpy(), len(dataset), augment, cfg.seed)
                        outputs.append(teacher_seg_outputs(teacher.module, points, batch["label"].to(device), seeds,
                                                           writer.header))
                    elif writer.header.feature_dim:
                        outputs.append(teacher_cls_outputs(teacher.module, points, writer.header))
                    else:
                        outputs.append(teacher(points, batch["label"].to(device)).cpu().numpy())
                bar.update(points.shape[0])
                if _block_finished(current, batch, background, outputs, dataset, augment, cfg.seed):
                    outputs, current = [], None
        finished = True
    finally:
        if finished:
            background.close()  # waits for the last blocks; re-raises a write error


def _block_finished(current, batch, background, outputs, dataset, augment, seed) -> bool:
    """Hand a block to the writer once its last record's batch is in; True when it was handed over."""
    block, (start, stop) = current
    if int(batch["record"][-1]) != stop - 1:
        return False
    background.submit(block, _block_columns(start, stop, outputs, dataset, augment, seed))
    return True


def _block_columns(start: int, stop: int, outputs: list, dataset, augment: Any, seed: int):
    records = np.arange(start, stop)
    samples, views = sample_view(records, len(dataset))
    columns: dict[str, np.ndarray] = {"sample": samples.astype(np.int32), "view": views.astype(np.uint16)}
    if isinstance(augment, SceneAugmentConfig):
        columns.update(record_scene_params(augment, seed, records, len(dataset)))
        columns.update(concat_scene_outputs(outputs))
        return columns
    columns.update(draw_params(augment, seed, samples, views, stream="record", num_samples=len(dataset)))
    if isinstance(outputs[0], dict):
        columns.update(concat_seg_outputs(outputs))
    else:
        columns["logprobs"] = np.concatenate(outputs).astype(np.float32)
    return columns

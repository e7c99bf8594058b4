"""``kdpc record``: the frozen teacher, batched under inference_mode, over every pending block of a store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import __version__
from ..augment import AugmentConfig, draw_params, param_specs
from ..checkpoint import Checkpoint, file_sha256, load_checkpoint
from ..engine import autocast, default_workers, model_forward, resolve_device
from ..errors import KdpcError
from ..evaluate import dataset_for_checkpoint
from ..progress import progress
from ..records import DEFAULT_CODEC, RecordWriter, StoreHeader
from .views import BlockBatches, RecordViews, record_coordinates
from .writer_thread import BackgroundBlockWriter


@dataclass
class RecordConfig:
    teacher: str = ""
    dataset: str | None = None
    data_root: str | None = None
    split: str = "train"
    views: int = 10
    out: str | None = None
    codec: str | None = None
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    chunk_records: int | None = None
    augment: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False


@dataclass
class RecordResult:
    path: Path
    records_written: int
    records_total: int
    seconds: float
    header: StoreHeader


def default_out(dataset_name: str, suffix: str = ".zarr") -> str:
    return str(Path("records") / f"{dataset_name}{suffix}")


def teacher_provenance(ckpt: Checkpoint, path: str) -> dict[str, Any]:
    return {"arch": ckpt.arch, "config": dict(ckpt.model_config), "num_params": ckpt.num_params,
            "sha256": file_sha256(path), "file": Path(path).name, "metrics": dict(ckpt.metrics),
            "dataset_fingerprint": ckpt.dataset.get("fingerprint")}


def build_header(cfg: RecordConfig, ckpt: Checkpoint, dataset: Any, augment: AugmentConfig) -> StoreHeader:
    kwargs: dict[str, Any] = {}
    if cfg.chunk_records:
        kwargs["chunk_records"] = cfg.chunk_records
    return StoreHeader(
        task=ckpt.task,
        num_samples=len(dataset),
        num_views=cfg.views,
        num_classes=ckpt.num_classes,
        class_names=list(ckpt.class_names),
        codec=cfg.codec or DEFAULT_CODEC,
        params=param_specs(augment),
        augment=augment.to_dict(),
        run_seed=cfg.seed,
        num_points=dataset.num_points,
        teacher=teacher_provenance(ckpt, cfg.teacher),
        dataset=dataset.describe(),
        kdpc_version=__version__,
        **kwargs,
    )


def record(cfg: RecordConfig, log=print, show_progress: bool = True) -> RecordResult:
    if cfg.resume and cfg.overwrite:
        raise KdpcError("--resume and --overwrite exclude each other")
    if cfg.views < 1 or cfg.views > 65535:
        raise KdpcError("--views must be between 1 and 65535")
    if cfg.batch_size < 1:
        raise KdpcError("--batch-size must be >= 1")
    ckpt = load_checkpoint(cfg.teacher)
    dataset = dataset_for_checkpoint(ckpt, cfg.dataset, cfg.data_root, cfg.split)
    augment = AugmentConfig.from_dict(cfg.augment)
    out = cfg.out or default_out(dataset.name)
    header = build_header(cfg, ckpt, dataset, augment)
    mode = "resume" if cfg.resume else "overwrite" if cfg.overwrite else "create"
    writer = RecordWriter.open(out, header, mode=mode, labels=dataset.labels)
    try:
        return _record_pending(cfg, ckpt, dataset, augment, writer, log, show_progress)
    finally:
        writer.close()


def _record_pending(cfg, ckpt, dataset, augment, writer, log, show_progress) -> RecordResult:
    device = resolve_device(cfg.device)
    teacher = ckpt.build_model(device)
    pending = writer.pending_blocks()
    ranges = [writer.block_range(b) for b in pending]
    total = writer.header.num_records
    todo = sum(stop - start for start, stop in ranges)
    if todo < total:
        log(f"resuming: {total - todo} of {total} records already recorded, {todo} to go")
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    loader = DataLoader(RecordViews(dataset, augment, cfg.seed), batch_sampler=BlockBatches(ranges, cfg.batch_size),
                        num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    started = time.perf_counter()
    background = BackgroundBlockWriter(writer)
    block_iter = iter(zip(pending, ranges))
    current: tuple[int, tuple[int, int]] | None = None
    outputs: list[np.ndarray] = []
    bar = progress(total=todo, unit="rec", desc=f"record {Path(str(writer.path)).name}", smoothing=0.1,
                   disable=None if show_progress else True)
    try:
        with torch.inference_mode():
            for batch in loader:
                if current is None:
                    current = next(block_iter)
                points = batch["points"].to(device, non_blocking=True)
                with autocast(device, cfg.amp):
                    logits = model_forward(teacher, points, batch["label"].to(device))
                outputs.append(F.log_softmax(logits.float(), dim=-1).cpu().numpy())
                bar.update(points.shape[0])
                block, (start, stop) = current
                if int(batch["record"][-1]) == stop - 1:
                    background.submit(block, _block_columns(start, stop, outputs, dataset, augment, cfg.seed))
                    outputs, current = [], None
        background.close()
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    path = writer.finalize()
    if todo:
        log(f"recorded {todo} records in {seconds:.1f}s ({todo / max(seconds, 1e-9):.0f} rec/s) -> {path}")
    return RecordResult(Path(str(path)), todo, total, seconds, writer.header)


def _block_columns(start: int, stop: int, outputs: list[np.ndarray], dataset, augment: AugmentConfig, seed: int):
    records = np.arange(start, stop)
    samples, views = record_coordinates(records, len(dataset))
    columns: dict[str, np.ndarray] = {"sample": samples.astype(np.int32), "view": views.astype(np.uint16)}
    columns.update(draw_params(augment, seed, samples, views))
    columns["logprobs"] = np.concatenate(outputs).astype(np.float32)
    return columns

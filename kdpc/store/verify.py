"""``verify_store``: read every chunk of every array and check the store against its own header.

Problems (``ok`` is False when there are any): unknown schema version, missing/mis-shaped arrays, arrays whose
chunks carry no checksum, an incomplete store (complete attribute / block flags), chunks that are missing or fail
their checksum (zarr crc32c, HDF5 fletcher32) or do not decode, NaN/+inf teacher outputs, ``sample``/``view`` ids
that break the view-major order, non-finite or out-of-range augmentation parameters, labels out of range.
Warnings (``ok`` stays True): parameters that differ from ``draw_params(augment, run_seed, stream=view_stream)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..augment import AugmentConfig, draw_params
from ..errors import KdpcError
from .backends import Backend, StoreCorruptError, open_store
from .schema import BLOCKS_DONE, FEATURES, LABELS, OUTPUT_GROUP, POINT_COUNT, POINT_OFFSET, ArraySpec, StoreHeader
from .schema import array_specs, record_array_specs

MAX_LISTED = 20  # problems of one kind beyond this are summarised
_F16_REL = 2.0**-10


@dataclass
class VerifyReport:
    path: str
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_chunks: int = 0
    checked_arrays: int = 0
    num_records: int = 0
    num_blocks: int = 0
    blocks_done: int = 0
    complete: bool = False
    bad_chunks: int = 0
    nonfinite_records: int = 0

    def summary(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return (f"{self.path}: {state}; {self.checked_chunks} chunks of {self.checked_arrays} arrays read, "
                f"{self.blocks_done}/{self.num_blocks} blocks done, {self.num_records} records")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class _Collector:
    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        self.counts: dict[str, int] = {}

    def problem(self, kind: str, text: str) -> None:
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n <= MAX_LISTED:
            self.report.problems.append(text)
        elif n == MAX_LISTED + 1:
            self.report.problems.append(f"... more problems of kind '{kind}' not listed")

    def warning(self, text: str) -> None:
        if len(self.report.warnings) < MAX_LISTED:
            self.report.warnings.append(text)


def verify_store(path: Any) -> VerifyReport:
    """Check a store end to end; never raises for damage (that becomes a problem line). A path that is not a store
    at all raises ``KdpcError``."""
    backend = open_store(path, "r")
    report = VerifyReport(path=backend.location)
    col = _Collector(report)
    try:
        header = StoreHeader.from_dict(backend.header_dict())
    except KdpcError as exc:
        col.problem("header", str(exc))
        return _finish(report)
    report.num_records, report.num_blocks = header.num_records, header.num_blocks
    specs = array_specs(header)
    present = _check_arrays(backend, header, specs, col)
    report.checked_arrays = len(present)

    flags = _read_flags(backend, header, present, col)
    report.blocks_done = int((flags == 1).sum())
    complete_attr = bool(backend.complete_attr())
    report.complete = complete_attr and report.blocks_done == header.num_blocks
    if report.blocks_done != header.num_blocks:
        todo = np.flatnonzero(flags != 1)
        shown = ", ".join(str(b) for b in todo[:10]) + (", ..." if len(todo) > 10 else "")
        col.problem("incomplete", f"incomplete: {report.blocks_done} of {header.num_blocks} blocks done (missing: {shown}); "
                    f"{backend.how_to_finish()}")
    if not complete_attr and report.blocks_done == header.num_blocks:
        col.problem("incomplete", "every block is done but the store was never finalized (complete attribute false); "
                    f"{backend.how_to_finish()}")
    bad_flags = np.flatnonzero((flags != 0) & (flags != 1))
    if bad_flags.size:
        col.problem("flags", f"{BLOCKS_DONE} has values other than 0/1 at blocks {bad_flags[:10].tolist()}")

    if LABELS in present:
        _check_labels(backend, header, col)

    rec_specs = [s for s in record_array_specs(header) if s.name in present]
    try:
        cfg: Any = _augment_config(header)
    except KdpcError as exc:
        cfg = None
        col.problem("augment", f"augment config in the header is invalid ({exc}); parameter ranges not checked")
    codec = header.codec_obj()
    for b in range(header.num_blocks):
        if flags[b] != 1:
            continue
        _check_block(backend, header, b, rec_specs, present, codec, cfg, col)
    return _finish(report)


def _augment_config(header: StoreHeader) -> Any:
    if header.task == "semseg":
        from ..scenes.transforms import SceneAugmentConfig

        return SceneAugmentConfig.from_dict(header.augment)
    return AugmentConfig.from_dict(header.augment)


def _expected_params(header: StoreHeader, cfg: Any, records: np.ndarray) -> dict[str, np.ndarray]:
    samples, views = header.sample_view(records)
    if header.task == "semseg":
        from ..scenes.transforms import draw_scene_params

        return draw_scene_params(cfg, header.run_seed, samples, views, stream=header.view_stream)
    return draw_params(cfg, header.run_seed, samples, views, stream=header.view_stream, num_samples=header.num_samples)


def _finish(report: VerifyReport) -> VerifyReport:
    report.ok = not report.problems
    return report


def _check_arrays(backend: Backend, header: StoreHeader, specs: list[ArraySpec], col: _Collector) -> set[str]:
    present: set[str] = set()
    for spec in specs:
        if not backend.has_array(spec.name):
            col.problem("array", f"array {spec.name!r} is missing")
            continue
        shape, dtype, chunks = backend.array_meta(spec.name)
        if tuple(shape) != spec.shape or np.dtype(dtype) != np.dtype(spec.dtype):
            col.problem("array", f"array {spec.name!r} is {dtype}{list(shape)}, the header implies {spec.dtype}{list(spec.shape)}")
            continue
        if spec.per in ("record", "block", "point") and tuple(chunks)[0] != spec.chunks[0]:
            col.problem("array", f"array {spec.name!r} has chunks {list(chunks)}, expected {list(spec.chunks)} (one per block)")
            continue
        why = backend.checksum_problem(spec.name)
        if why:
            col.problem("checksum", f"array {spec.name!r} {why}")
        present.add(spec.name)
    return present


def _read_flags(backend: Backend, header: StoreHeader, present: set[str], col: _Collector) -> np.ndarray:
    flags = np.zeros(header.num_blocks, dtype=np.uint8)
    if BLOCKS_DONE not in present:
        return flags
    missing = set(backend.missing_chunks(BLOCKS_DONE, range(header.num_blocks)))
    for b in range(header.num_blocks):
        if b in missing:
            col.problem("chunk", f"array {BLOCKS_DONE!r} chunk {b} is missing (block {b} counts as not done)")
            col.report.bad_chunks += 1
            continue
        try:
            flags[b] = backend.read_chunk(BLOCKS_DONE, b)[0]
            col.report.checked_chunks += 1
        except StoreCorruptError as exc:
            col.problem("chunk", f"array {BLOCKS_DONE!r} chunk {b} is corrupt ({exc.cause}); block {b} counts as not done")
            col.report.bad_chunks += 1
    return flags


def _check_labels(backend: Backend, header: StoreHeader, col: _Collector) -> None:
    shape, _dtype, chunks = backend.array_meta(LABELS)
    n = math.ceil(shape[0] / chunks[0]) if shape[0] else 0
    missing = set(backend.missing_chunks(LABELS, range(n)))
    for i in range(n):
        if i in missing:
            col.problem("chunk", f"array {LABELS!r} chunk {i} is missing")
            col.report.bad_chunks += 1
            continue
        try:
            lab = backend.read_chunk(LABELS, i)
            col.report.checked_chunks += 1
        except StoreCorruptError as exc:
            col.problem("chunk", f"array {LABELS!r} chunk {i} is corrupt ({exc.cause})")
            col.report.bad_chunks += 1
            continue
        if lab.size and (lab.min() < -1 or lab.max() >= header.num_classes):
            col.problem("labels", f"labels chunk {i} has values outside [-1, {header.num_classes})")


def _check_block(backend: Backend, header: StoreHeader, b: int, specs: list[ArraySpec], present: set[str],
                 codec: Any, cfg: AugmentConfig | None, col: _Collector) -> None:
    start, stop = header.block_range(b)
    data: dict[str, np.ndarray] = {}
    for spec in specs:
        if backend.missing_chunks(spec.name, [b]):
            col.problem("chunk", f"array {spec.name!r} chunk {b} (records {start}-{stop - 1}) is missing although block {b} is flagged done")
            col.report.bad_chunks += 1
            continue
        try:
            data[spec.name] = backend.read_chunk(spec.name, b)
            col.report.checked_chunks += 1
        except StoreCorruptError as exc:
            col.problem("chunk", f"array {spec.name!r} chunk {b} (records {start}-{stop - 1}) is corrupt ({exc.cause})")
            col.report.bad_chunks += 1
    records = np.arange(start, stop, dtype=np.int64)
    for name, expected in zip(("sample", "view"), header.sample_view(records)):
        if name in data and not np.array_equal(data[name].astype(np.int64), expected):
            bad = int((data[name].astype(np.int64) != expected).sum())
            col.problem("order", f"block {b}: {bad} {name!r} ids break the view-major order "
                        f"({header.view_major_rule()})")
    _check_params(header, b, data, cfg, col)
    prefix = OUTPUT_GROUP + "/"
    out = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    if out and len(out) == len(codec.arrays(header.num_classes)):  # every output array of the codec was read
        if header.task == "semseg":
            _check_ragged_output(header, b, start, data, out, codec, col)
        else:
            _check_output(header, b, start, out, codec, col)
    if FEATURES in data:
        bad = ~np.isfinite(data[FEATURES]).reshape(len(data[FEATURES]), -1).all(axis=1)
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            col.problem("nonfinite", f"block {b}: {FEATURES!r} has NaN/inf in {int(bad.sum())} records (first: "
                        f"{header.describe_record(first)})")
            col.report.nonfinite_records += int(bad.sum())


def _check_params(header: StoreHeader, b: int, data: dict[str, np.ndarray], cfg: AugmentConfig | None, col: _Collector) -> None:
    for p in header.params:
        values = data.get(p.name)
        if values is None:
            continue
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            col.problem("params", f"block {b}: param {p.name!r} has {int((~np.isfinite(values)).sum())} non-finite values")
            continue
        if cfg is None:
            continue
        v = values.astype(np.float64)
        tol = _F16_REL
        if p.name == "scale" and v.size and (v.min() < cfg.scale_low * (1 - tol) or v.max() > cfg.scale_high * (1 + tol)):
            col.problem("params", f"block {b}: scale outside [{cfg.scale_low}, {cfg.scale_high}] (min {v.min():.4g}, max {v.max():.4g})")
        if p.name == "translate" and v.size and np.abs(v).max() > cfg.translate * (1 + tol) + 1e-7:
            col.problem("params", f"block {b}: translate outside +-{cfg.translate} (max |t| {np.abs(v).max():.4g})")
        if p.name == "partner" and v.size and (v.min() < 0 or v.max() >= header.num_samples):
            col.problem("params", f"block {b}: mix partners outside the {header.num_samples} samples")
        if p.name == "mix" and v.size and (v.min() < 0 or v.max() > cfg.mix_max * (1 + tol)):
            col.problem("params", f"block {b}: mix fractions outside [0, {cfg.mix_max}]")
        if p.name == "rotation" and header.task != "semseg":
            if cfg.rotation == "none":
                col.problem("params", f"block {b}: a rotation is stored but the augment config has rotation 'none'")
            elif v.size:
                angle = np.linalg.norm(v, axis=-1)
                if angle.max() > math.pi * (1 + 2 * tol) + 1e-3:
                    col.problem("params", f"block {b}: rotation angles up to {angle.max():.4g} rad exceed pi")
                if cfg.rotation == "up":
                    off = np.delete(v, cfg.up_axis, axis=-1)
                    if np.abs(off).max() > 0:
                        col.problem("params", f"block {b}: rotation 'up' must only turn about axis {cfg.up_axis}")
    if cfg is None or not all(p.name in data for p in header.params):
        return
    start, stop = header.block_range(b)
    records = np.arange(start, stop, dtype=np.int64)
    try:
        expected = _expected_params(header, cfg, records)
    except Exception:  # noqa: BLE001 - a replay rule this kdpc does not know; the range checks above still ran
        return
    differ = [name for name, arr in expected.items() if name in data and not np.array_equal(
        np.asarray(arr).view(np.uint8), np.ascontiguousarray(data[name], dtype=arr.dtype).view(np.uint8))]
    if differ:
        col.warning(f"block {b}: params {differ} differ from draw_params(augment, run_seed={header.run_seed}); "
                    "views can only be replayed from the stored values")


def _check_output(header: StoreHeader, b: int, start: int, out: dict[str, np.ndarray], codec: Any, col: _Collector) -> None:
    problems = codec.problems(out, header.num_classes)
    for text in problems:
        col.problem("output", f"block {b}: {text}")
    if problems:  # e.g. class indices out of range: decoding would fail
        return
    for name, arr in out.items():
        if np.issubdtype(arr.dtype, np.floating) and (np.isnan(arr).any() or np.isposinf(arr).any()):
            rows = np.isnan(arr).reshape(len(arr), -1).any(1) | np.isposinf(arr).reshape(len(arr), -1).any(1)
            first = start + int(np.flatnonzero(rows)[0])
            col.problem("nonfinite", f"block {b}: output {name!r} has NaN/+inf in {int(rows.sum())} records "
                        f"(first: {header.describe_record(first)})")
            col.report.nonfinite_records += int(rows.sum())
            return
    with np.errstate(all="ignore"):
        dec = codec.decode(out)
    n = len(dec)
    rows = (np.isnan(dec).reshape(n, -1).any(1) | np.isposinf(dec).reshape(n, -1).any(1)
            | (~np.isfinite(dec).any(-1)).reshape(n, -1).any(1))
    if rows.any():
        first = start + int(np.flatnonzero(rows)[0])
        col.problem("nonfinite", f"block {b}: decoded teacher output is NaN/inf in {int(rows.sum())} records (first: "
                    f"{header.describe_record(first)})")
        col.report.nonfinite_records += int(rows.sum())


def _check_ragged_output(header: StoreHeader, b: int, start: int, data: dict[str, np.ndarray],
                         out: dict[str, np.ndarray], codec: Any, col: _Collector) -> None:
    """semseg: point counts in range, offsets packing the block's views from its first row, every view decodes to
    finite log-probabilities."""
    if POINT_COUNT not in data or POINT_OFFSET not in data:
        return
    counts = data[POINT_COUNT].astype(np.int64)
    offsets = data[POINT_OFFSET].astype(np.int64)
    if counts.size and (counts.min() < 1 or counts.max() > header.num_points):
        col.problem("output", f"block {b}: point counts outside 1..{header.num_points}")
        return
    first = header.point_block_range(b)[0]
    if not np.array_equal(offsets, header.point_offsets(b, counts)):
        col.problem("output", f"block {b}: point offsets do not pack the block's views from row {first}")
        return
    problems = codec.problems(out, header.num_classes)
    for text in problems:
        col.problem("output", f"block {b}: {text}")
    if problems:
        return
    per_point = codec.point_arrays()
    bad = []
    with np.errstate(all="ignore"):
        for i, (lo, m) in enumerate(zip(offsets - first, counts)):
            dec = codec.decode_view({k: v[lo : lo + m] for k, v in out.items() if k in per_point},
                                    {k: v[i] for k, v in out.items() if k not in per_point})
            if np.isnan(dec).any() or np.isposinf(dec).any() or (~np.isfinite(dec).any(-1)).any():
                bad.append(i)
    if bad:
        col.problem("nonfinite", f"block {b}: decoded teacher output is NaN/inf in {len(bad)} records (first: "
                    f"{header.describe_record(start + bad[0])})")
        col.report.nonfinite_records += len(bad)

"""Sharing record stores: copy (local <-> remote, resumable), pack/unpack (one ``.zarr.zip`` file), merge (more
views, or an ensemble of teachers), convert (zarr <-> HDF5).

Every function takes paths or URLs (see ``kdpc.records.remote``) and raises ``KdpcError`` with one line saying what
is wrong. Sources must be complete stores with every chunk object present; nothing reads a missing chunk as zeros.

``copy_store`` works on the stored bytes: every object of the source (known from the header and the arrays'
metadata, so no listing is needed and plain HTTP works as a source) is compared with the destination by size and
MD5 (S3 ETags where the server keeps them, else the bytes) and copied only when it differs, so re-running an
interrupted copy skips what already arrived intact. Source chunks are checked against their own crc32c before they
are sent, and every object written is read back (or its ETag checked) and compared with the source. The
destination's root ``zarr.json`` says ``complete: false`` while anything is being written; the block flags go
last and the final root metadata (``complete: true``, byte-identical to the source's) is written at the very end.

``merge_stores`` and ``convert_store`` copy the *encoded* arrays (bit-exact) except for an ensemble, whose output
is the weighted mean of the teachers' probabilities, re-encoded with the codec.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..errors import KdpcError
from ..progress import progress
from . import remote
from .backends import (
    Backend,
    H5PartsBackend,
    StoreCorruptError,
    ZarrBackend,
    _cause,
    fsync_dir,
    fsync_file,
    is_h5_path,
    open_store,
    parts_dir,
    read_header,
)
from .codecs import logsumexp
from .reader import completeness, corrupt_error
from .schema import (
    BLOCKS_DONE,
    COMPLETE_ATTR,
    HEADER_ATTR,
    LABELS,
    OUTPUT_GROUP,
    StoreHeader,
    record_array_specs,
    utc_now,
)

BATCH = 32  # objects per round of concurrent requests
ROOT_META = "zarr.json"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: packing the same store twice gives the same bytes

ObjectHook = Callable[[str, str], None]  # (key, "copied" | "skipped"), called after each object


@dataclass
class CopyReport:
    src: str
    dst: str
    objects: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    records: int = 0

    def summary(self) -> str:
        state = "already up to date" if self.copied == 0 else f"{self.copied} copied ({self.bytes_copied:,} bytes)"
        return (f"{self.src} -> {self.dst}: {self.objects} objects, {state}, {self.skipped} already present and "
                f"verified; {self.records} records; {self.seconds:.1f}s")


@dataclass
class MergeReport:
    out: str
    mode: str  # "views" | "ensemble"
    inputs: list[str] = field(default_factory=list)
    num_views: int = 0
    records: int = 0
    weights: list[float] | None = None

    def summary(self) -> str:
        what = (f"union of views ({self.num_views} views)" if self.mode == "views"
                else f"ensemble of {len(self.inputs)} teachers (weights {', '.join(f'{w:g}' for w in self.weights or [])})")
        return f"{self.out}: {what}, {self.records} records"


# ------------------------------------------------------------------------------------------------ sources
def _open_complete(path: Any, what: str = "source") -> tuple[Backend, StoreHeader]:
    backend = open_store(path, "r")
    header = read_header(backend)
    complete, done, _flags = completeness(backend, header)
    if not complete:
        raise KdpcError(f"{what} {backend.location} is incomplete ({done} of {header.num_blocks} blocks done); only "
                        "complete stores can be shared - finish it with `kdpc record --resume`")
    return backend, header


def _open_zarr_source(path: Any) -> tuple[ZarrBackend, StoreHeader, list[str], dict[str, list[str]]]:
    """A complete zarr source with every object present: ``(backend, header, metadata keys, chunk keys)``."""
    if is_h5_path(path):
        raise KdpcError(f"{path}: copy and pack work on zarr stores (folders, .zarr.zip, URLs); make one with "
                        f"`kdpc records convert {path} OUT.zarr` first")
    backend, header = _open_complete(path)
    assert isinstance(backend, ZarrBackend)
    if backend.group.store_path.path:
        raise KdpcError(f"{backend.location}: the record store must be at the root of its location")
    meta, chunks = backend.object_keys(header)
    for name, keys in chunks.items():
        missing = backend.missing_chunks(name, range(len(keys)))
        if missing:
            raise KdpcError(f"source {backend.location} is damaged: array {name!r} chunk {missing[0]} is missing "
                            f"({len(missing)} missing chunk object(s)); restore it from a copy or record it again")
    return backend, header, meta, chunks


def _ordered_keys(meta: list[str], chunks: dict[str, list[str]]) -> list[str]:
    """Everything but the root metadata, block flags last (a reader seeing them can trust the data before)."""
    keys = [k for k in meta if k != ROOT_META]
    for name, ks in chunks.items():
        if name != BLOCKS_DONE:
            keys += ks
    return keys + chunks.get(BLOCKS_DONE, [])


def _is_chunk(key: str) -> bool:
    return not key.endswith(ROOT_META)


def _check_source_bytes(location: str, key: str, data: bytes | None) -> bytes:
    if data is None:
        raise KdpcError(f"source {location} lost object {key} while it was being copied")
    if _is_chunk(key) and not remote.crc32c_ok(data):
        raise KdpcError(f"source {location} is damaged: chunk {key} fails its crc32c checksum; run `kdpc records "
                        f"verify {location}` and restore it from a copy or record it again")
    return data


def _batches(keys: Sequence[str], n: int = BATCH) -> list[Sequence[str]]:
    return [keys[i : i + n] for i in range(0, len(keys), n)]


def _in_progress_root(root: bytes) -> bytes:
    doc = json.loads(root)
    doc.setdefault("attributes", {})[COMPLETE_ATTR] = False
    return json.dumps(doc, indent=2).encode()


def _root_header(root: bytes | None) -> Any:
    if root is None:
        return None
    try:
        return json.loads(root).get("attributes", {}).get(HEADER_ATTR)
    except (ValueError, AttributeError):
        return "unreadable"


# --------------------------------------------------------------------------------------------------- copy
def _check_destination(dst: Any) -> None:
    if remote.is_zip(dst):
        raise KdpcError(f"{dst}: to make a single-file pack use `kdpc records pack SRC {dst}`")
    if is_h5_path(dst):
        raise KdpcError(f"{dst}: copy writes zarr stores; to get HDF5 use `kdpc records convert SRC {dst}`")
    if remote.kind(dst) == "object":
        raise KdpcError("copy needs a destination path or URL")


def copy_store(src: Any, dst: Any, *, on_object: ObjectHook | None = None, show_progress: bool | None = None) -> CopyReport:
    """Copy a complete zarr store ``src`` to ``dst`` (either may be a URL), resumably; see the module docstring.

    ``on_object(key, action)`` runs after each object (tests use it to interrupt a copy midway).
    """
    _check_destination(dst)
    t0 = time.perf_counter()
    backend, header, meta, chunks = _open_zarr_source(src)
    src_kv = remote.KeyStore(backend.group.store_path.store, backend.location)
    report = CopyReport(src=backend.location, dst=remote.redact(dst), records=header.num_records)
    lp = remote.local_path(dst)
    if lp is not None and backend.local is not None and lp.resolve() == backend.local.resolve():
        raise KdpcError(f"{dst} is the source itself")
    root = _check_source_bytes(backend.location, ROOT_META, src_kv.get(ROOT_META))
    try:
        dst_kv = remote.KeyStore.open(dst, "w")
    except OSError as exc:
        raise KdpcError(f"cannot write to {report.dst} ({_cause(exc)})") from None
    try:
        _copy_objects(src_kv, dst_kv, root, _ordered_keys(meta, chunks), report, lp, on_object, show_progress)
    except KdpcError:
        raise
    except Exception as exc:  # network, permissions, a missing bucket, a full disk...
        raise KdpcError(f"copy to {report.dst} stopped: {_cause(exc)}; fix that and run the same command again "
                        "to resume") from None
    finally:
        dst_kv.close()
        backend.close()
    if lp is not None:
        fsync_dir(lp)
    check = open_store(dst, "r")
    complete, done, _ = completeness(check, read_header(check))
    check.close()
    if not complete:
        raise KdpcError(f"{report.dst} is not complete after the copy ({done} of {header.num_blocks} blocks)")
    report.seconds = time.perf_counter() - t0
    return report


def _copy_objects(src_kv: remote.KeyStore, dst_kv: remote.KeyStore, root: bytes, keys: list[str], report: CopyReport,
                  lp: Path | None, on_object: ObjectHook | None, show_progress: bool | None) -> None:
    root_dst = dst_kv.get(ROOT_META)
    if root_dst is None:
        if lp is not None and any(p for p in lp.iterdir() if not p.name.startswith(".")):
            raise KdpcError(f"{lp} is a folder that is not empty and holds no record store; pick another destination")
    elif _root_header(root_dst) != _root_header(root):
        raise KdpcError(f"{report.dst} already holds a different record store; delete it or pick another destination")
    if lp is not None:
        _remove_partials(lp)  # leftovers of a copy killed mid-write
    root_is_final = root_dst == root
    marked_in_progress = False
    report.objects = len(keys) + 1
    bar = progress(total=report.objects, unit="obj", desc=f"copy -> {report.dst}",
                   disable=None if show_progress is None else not show_progress)
    try:
        for batch in _batches(keys):
            # a destination without root metadata is new: the root is always written before any other object
            dst_d = dst_kv.digests(batch)[0] if root_dst is not None else [None] * len(batch)
            src_d, src_bytes = src_kv.digests(batch)
            for k in batch:
                if k in src_bytes:
                    _check_source_bytes(src_kv.location, k, src_bytes[k])
            todo = [k for k, sd, dd in zip(batch, src_d, dst_d) if sd is None or dd != sd]
            if todo:
                if not marked_in_progress:  # the destination says "incomplete" while anything is written
                    dst_kv.put(ROOT_META, _in_progress_root(root))
                    marked_in_progress, root_is_final = True, False
                need = [k for k in todo if k not in src_bytes]
                for k, data in zip(need, src_kv.get_many(need)):
                    src_bytes[k] = _check_source_bytes(src_kv.location, k, data)
                items = {k: src_bytes[k] for k in todo}
                dst_kv.put_many(items)
                after, _ = dst_kv.digests(todo)
                for k, d in zip(todo, after):
                    if d != (len(items[k]), remote.md5(items[k])):
                        raise KdpcError(f"{report.dst}: object {k} does not match the source after writing it "
                                        "(checksum differs); the destination storage is unreliable")
                report.copied += len(todo)
                report.bytes_copied += sum(len(v) for v in items.values())
            for k in batch:
                action = "copied" if k in todo else "skipped"
                report.skipped += action == "skipped"
                bar.update(1)
                if on_object is not None:
                    on_object(k, action)
        if not root_is_final:
            dst_kv.put(ROOT_META, root)  # complete: true, byte-identical to the source's, written last
            if dst_kv.get(ROOT_META) != root:
                raise KdpcError(f"{report.dst}: the root metadata does not match the source after writing it")
            report.copied += 1
            report.bytes_copied += len(root)
        else:
            report.skipped += 1
        bar.update(1)
    finally:
        bar.close()


def _remove_partials(root: Path) -> None:
    if not root.is_dir():
        return
    for p in root.rglob("*.partial"):
        try:
            p.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------- pack/unpack
def pack_store(src: Any, out: str | os.PathLike, *, overwrite: bool = False, show_progress: bool | None = None) -> CopyReport:
    """Write the zarr store ``src`` into one uncompressed zip (``OUT.zarr.zip``; chunks are compressed already),
    readable in place by every kdpc command. Written to ``OUT.partial`` and renamed when verified."""
    out_p = remote.local_path(out)
    if out_p is None:
        raise KdpcError(f"{out}: pack writes a local file; upload it afterwards")
    if not remote.is_zip(out_p):
        raise KdpcError(f"{out_p}: a pack must end in .zip (e.g. {out_p.name}.zarr.zip)")
    if out_p.exists() and not overwrite:
        raise KdpcError(f"{out_p} exists; delete it or pass --overwrite")
    t0 = time.perf_counter()
    backend, header, meta, chunks = _open_zarr_source(src)
    src_kv = remote.KeyStore(backend.group.store_path.store, backend.location)
    report = CopyReport(src=backend.location, dst=str(out_p), records=header.num_records)
    keys = _ordered_keys(meta, chunks) + [ROOT_META]
    report.objects = len(keys)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_p.with_name(out_p.name + ".partial")
    digests: dict[str, str] = {}
    bar = progress(total=len(keys), unit="obj", desc=f"pack -> {out_p.name}",
                   disable=None if show_progress is None else not show_progress)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for batch in _batches(keys):
                for k, data in zip(batch, src_kv.get_many(batch)):
                    data = _check_source_bytes(backend.location, k, data)
                    info = zipfile.ZipInfo(k, date_time=ZIP_DATE)
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)
                    digests[k] = remote.md5(data)
                    report.bytes_copied += len(data)
                    bar.update(1)
        fsync_file(tmp)
        with zipfile.ZipFile(tmp, "r") as zf:  # read back: zip CRC32 per member + MD5 against the source
            names = set(zf.namelist())
            if names != set(keys):
                raise KdpcError(f"{tmp} does not hold the expected objects after writing it")
            for k in keys:
                if remote.md5(zf.read(k)) != digests[k]:
                    raise KdpcError(f"{tmp}: member {k} does not match the source after writing it")
        os.replace(tmp, out_p)
        fsync_dir(out_p.parent)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    finally:
        bar.close()
    report.copied = len(keys)
    report.seconds = time.perf_counter() - t0
    return report


def unpack_store(pack: Any, dst: Any, *, on_object: ObjectHook | None = None, show_progress: bool | None = None) -> CopyReport:
    """Unpack a ``.zarr.zip`` into a folder or a URL (resumable, verified: ``copy_store`` from the zip)."""
    if not remote.is_zip(pack) or remote.is_url(pack):
        raise KdpcError(f"{pack}: unpack takes a local .zarr.zip made by `kdpc records pack`")
    return copy_store(pack, dst, on_object=on_object, show_progress=show_progress)


# ------------------------------------------------------------------------------------------- writing stores
def _new_output(out: Any, header: StoreHeader, labels: np.ndarray, overwrite: bool = False) -> tuple[Path, Backend]:
    p = remote.local_path(out)
    if p is None:
        raise KdpcError(f"{remote.redact(out)}: write the store locally, then `kdpc records copy` it there")
    if remote.is_zip(p):
        raise KdpcError(f"{p}: write a folder (or .h5), then `kdpc records pack` it")
    if p.exists() or parts_dir(p).exists():
        if not overwrite:
            raise KdpcError(f"{p} exists; delete it or pick another output")
        _discard(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        backend: Backend = (H5PartsBackend.create(p, header, labels) if is_h5_path(p)
                            else ZarrBackend.create(p, header, labels))
    except OSError as exc:
        raise KdpcError(f"cannot write {p} ({exc.strerror or exc})") from None
    return p, backend


def _discard(p: Path) -> None:
    """Remove an output this module started (zarr folder, .h5, its .parts folder, a .tmp)."""
    for q in (p, parts_dir(p), Path(str(p) + ".tmp")):
        if q.is_dir():
            shutil.rmtree(q, ignore_errors=True)
        elif q.exists():
            q.unlink()


def _write_all(p: Path, backend: Backend, header: StoreHeader, block_arrays: Callable[[int, int, int], dict[str, np.ndarray]],
               desc: str, show_progress: bool | None = None) -> None:
    """Write every block of a new store from ``block_arrays(b, start, stop)`` (encoded arrays by spec name), then
    finalize; on any failure the half-written output is removed."""
    try:
        for b in progress(range(header.num_blocks), desc=desc, unit="block",
                          disable=None if show_progress is None else not show_progress):
            start, stop = header.block_range(b)
            backend.write_block(b, start, stop, block_arrays(b, start, stop))
        flags = backend.blocks_done()
        if int((np.asarray(flags) == 1).sum()) != header.num_blocks:
            raise KdpcError(f"{p}: not every block was written")
        backend.finalize(header)
    except BaseException:
        backend.close()
        _discard(p)
        raise
    backend.close()


def _read_rows(backend: Backend, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of an array, refusing missing chunk objects (zarr would return zeros)."""
    shape, _dtype, chunks = backend.array_meta(name)
    c = chunks[0]
    idx = range(start // c, (max(stop, start + 1) - 1) // c + 1)
    try:
        missing = backend.missing_chunks(name, idx)
        if missing:
            raise StoreCorruptError(name, missing[0], "chunk object is missing")
        return backend.read(name, start, stop)
    except StoreCorruptError as exc:
        raise corrupt_error(backend.location, exc) from None


def _view_major_ids(header: StoreHeader, start: int, stop: int) -> dict[str, np.ndarray]:
    r = np.arange(start, stop, dtype=np.int64)
    return {"sample": (r % header.num_samples).astype(np.int32), "view": (r // header.num_samples).astype(np.uint16)}


# ---------------------------------------------------------------------------------------------------- convert
def convert_store(src: Any, dst: Any, *, overwrite: bool = False, show_progress: bool | None = None) -> str:
    """zarr <-> HDF5 (by ``dst``'s suffix: ``.h5``/``.hdf5`` or a folder): the same header (``created``
    included), labels and encoded arrays, so a reader returns identical data."""
    backend, header = _open_complete(src)
    labels = _read_rows(backend, LABELS, 0, header.num_samples)
    specs = record_array_specs(header)
    p, out = _new_output(dst, header, labels, overwrite)

    def block(b: int, start: int, stop: int) -> dict[str, np.ndarray]:
        return {s.name: _read_rows(backend, s.name, start, stop) for s in specs}

    _write_all(p, out, header, block, f"convert -> {p.name}", show_progress)
    backend.close()
    return str(p)


# ------------------------------------------------------------------------------------------------------ merge
_SAME_DATA = ("task", "num_samples", "num_classes", "class_names", "num_points", "augment", "params",
              "num_anchors", "feature_dim", "feature_projection")  # the last three: partseg stores only


def _describe(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _differences(a: StoreHeader, b: StoreHeader, fields: Sequence[str]) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    out = []
    for f in fields:
        if f == "fingerprint":
            fa, fb = a.dataset.get("fingerprint"), b.dataset.get("fingerprint")
            if fa != fb:
                out.append(f"dataset fingerprint {str(fa)[:12]}… vs {str(fb)[:12]}…")
        elif f == "dataset":
            ka = {k: v for k, v in a.dataset.items() if k != "fingerprint"}
            kb = {k: v for k, v in b.dataset.items() if k != "fingerprint"}
            if ka != kb:
                keys = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
                out.append("dataset " + ", ".join(f"{k} {_describe(ka.get(k))} vs {_describe(kb.get(k))}" for k in keys))
        elif da.get(f) != db.get(f):
            out.append(f"{f} {_describe(da.get(f))} vs {_describe(db.get(f))}")
    return out


def teacher_id(header: StoreHeader) -> Any:
    return header.teacher.get("sha256")


def _ensemble_teacher(headers: Sequence[StoreHeader], weights: Sequence[float]) -> dict[str, Any]:
    members: list[dict] = []
    for h in headers:
        members.append(dict(h.teacher))
    token = json.dumps([[m.get("sha256"), w] for m, w in zip(members, weights)])
    return {
        "arch": "ensemble",
        "sha256": hashlib.sha256(b"kdpc-ensemble:" + token.encode()).hexdigest(),
        "num_params": int(sum(int(m.get("num_params") or 0) for m in members)),
        "config": {},
        "metrics": {},
        "ensemble": members,
        "weights": [float(w) for w in weights],
    }


def _provenance(backend: Backend, header: StoreHeader, view_offset: int) -> dict[str, Any]:
    """What the output records about one input (no locations: a URL could carry a token)."""
    return {"teacher_sha256": teacher_id(header), "teacher_arch": header.teacher.get("arch"), "created": header.created,
            "kdpc_version": header.kdpc_version, "run_seed": header.run_seed, "codec": header.codec,
            "num_views": header.num_views, "view_offset": view_offset}


def _parse_weights(weights: Any, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if isinstance(weights, str):
        try:
            weights = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError:
            raise KdpcError(f"--weights takes numbers separated by commas, got {weights!r}") from None
    w = [float(x) for x in weights]
    if len(w) != n:
        raise KdpcError(f"--weights has {len(w)} values for {n} stores")
    if not all(math.isfinite(x) and x > 0 for x in w):
        raise KdpcError(f"--weights must be positive numbers, got {w}")
    s = sum(w)
    return [x / s for x in w]


def merge_stores(inputs: Sequence[Any], out: Any, *, weights: Any = None, codec: str | None = None,
                 overwrite: bool = False, show_progress: bool | None = None) -> MergeReport:
    """Merge complete stores of the same data into ``out`` (a local folder or ``.h5``).

    * same teacher (sha256), codec, augmentation and data -> **more views**: the output holds every view of every
      input (input ``i``'s view ``v`` becomes view ``offset_i + v``) with its parameters and encoded output copied
      as stored (replay uses the stored parameters). Views present in two inputs (same sample, seed and
      parameters, e.g. recorded with the same ``--seed``) are refused.
    * different teachers on identical views (same data, run seed, views and parameter arrays) -> an **ensemble**:
      the output is ``log(sum_i w_i p_i)`` (``weights`` normalised, default equal) re-encoded with ``codec``
      (default: the first input's); every teacher is listed in ``header.teacher["ensemble"]``.
    """
    if len(inputs) < 2:
        raise KdpcError("merge needs at least two stores")
    opened = [_open_complete(p, "input") for p in inputs]
    backends = [b for b, _ in opened]
    headers = [h for _, h in opened]
    names = [b.location for b in backends]
    a = headers[0]
    for name, h in zip(names[1:], headers[1:]):
        diff = _differences(a, h, ("fingerprint", "dataset", *_SAME_DATA))
        if diff:
            raise KdpcError(f"cannot merge {names[0]} and {name}: they hold different data ({'; '.join(diff)})")
    labels = _read_rows(backends[0], LABELS, 0, a.num_samples)
    for b, name in zip(backends[1:], names[1:]):
        if not np.array_equal(_read_rows(b, LABELS, 0, a.num_samples), labels):
            raise KdpcError(f"cannot merge {names[0]} and {name}: their labels differ")
    teachers = [teacher_id(h) for h in headers]
    if len(set(map(str, teachers))) == 1:
        if weights is not None:
            raise KdpcError("--weights is for ensembles of different teachers; these stores share one teacher")
        if codec is not None and codec != a.codec:
            raise KdpcError(f"--codec {codec}: merging views copies the encoded outputs as stored ({a.codec})")
        return _merge_views(backends, headers, names, labels, out, overwrite, show_progress)
    if a.task != "cls":
        raise KdpcError(f"cannot merge {names[0]} and {names[1]}: they have different teachers, and ensembles are "
                        f"made of classification stores only ({a.task} stores keep per-point outputs and features)")
    if len(set(map(str, teachers))) != len(teachers):
        raise KdpcError("cannot merge: some inputs share a teacher and others do not; merge the views of each teacher "
                        "first, then make the ensemble")
    return _merge_ensemble(backends, headers, names, labels, out, weights, codec, overwrite, show_progress)


def _view_keys(backend: Backend, header: StoreHeader) -> np.ndarray:
    """One opaque row per record: sample id + every parameter's stored bytes (the view's identity)."""
    cols = [_view_major_ids(header, 0, header.num_records)["sample"].astype("<i4").view(np.uint8).reshape(header.num_records, -1)]
    for p in header.params:
        arr = np.ascontiguousarray(_read_rows(backend, p.name, 0, header.num_records))
        cols.append(arr.view(np.uint8).reshape(header.num_records, -1))
    rows = np.ascontiguousarray(np.concatenate(cols, axis=1))
    return rows.view(np.dtype((np.void, rows.shape[1]))).reshape(-1)


def _merge_views(backends: list[Backend], headers: list[StoreHeader], names: list[str], labels: np.ndarray,
                 out: Any, overwrite: bool, show_progress: bool | None) -> MergeReport:
    a = headers[0]
    for name, h in zip(names[1:], headers[1:]):
        diff = _differences(a, h, ("codec",))
        if diff:
            raise KdpcError(f"cannot merge the views of {names[0]} and {name}: {'; '.join(diff)} (re-encode one with "
                            "the other's codec first, or record it again)")
    # duplicates: the same (sample, seed, params) in two inputs
    keys = [_view_keys(b, h) for b, h in zip(backends, headers)]
    owner = np.concatenate([np.full(len(k), i) for i, k in enumerate(keys)])
    allk = np.concatenate(keys)
    _, first, counts = np.unique(allk, return_index=True, return_counts=True)
    if (counts > 1).any():
        order = np.argsort(allk, kind="stable")
        sk = allk[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        i0, i1 = order[dup[0]], order[dup[0] + 1]
        offs = np.cumsum([0] + [len(k) for k in keys])
        (ia, ra), (ib, rb) = [(int(owner[i]), int(i - offs[owner[i]])) for i in (i0, i1)]
        s = a.num_samples
        raise KdpcError(
            f"cannot merge: {len(dup)} views are in more than one input (e.g. sample {ra % s}: view {ra // s} of "
            f"{names[ia]} = view {rb // s} of {names[ib]}); stores recorded with the same --seed repeat the same "
            "views - record the extra views with another --seed"
        )
    offsets = np.cumsum([0] + [h.num_views for h in headers]).tolist()
    total_views = int(offsets[-1])
    extra = dict(a.extra)
    extra["merged_from"] = [_provenance(b, h, int(o)) for b, h, o in zip(backends, headers, offsets)]
    header = StoreHeader.from_dict({**a.to_dict(), "num_views": total_views, "created": utc_now(),
                                    "kdpc_version": __version__, "extra": extra})
    specs = record_array_specs(header)
    rec_offsets = [int(o) * a.num_samples for o in offsets]

    def block(b: int, start: int, stop: int) -> dict[str, np.ndarray]:
        arrays = _view_major_ids(header, start, stop)
        for spec in specs:
            if spec.name in arrays:
                continue
            parts = []
            for i, (bk, lo) in enumerate(zip(backends, rec_offsets[:-1])):
                hi = rec_offsets[i + 1]
                s0, s1 = max(start, lo), min(stop, hi)
                if s0 < s1:
                    parts.append(_read_rows(bk, spec.name, s0 - lo, s1 - lo))
            arrays[spec.name] = np.concatenate(parts, axis=0)
        return arrays

    p, backend = _new_output(out, header, labels, overwrite)
    _write_all(p, backend, header, block, f"merge -> {p.name}", show_progress)
    return MergeReport(out=str(p), mode="views", inputs=names, num_views=total_views, records=header.num_records)


def _merge_ensemble(backends: list[Backend], headers: list[StoreHeader], names: list[str], labels: np.ndarray,
                    out: Any, weights: Any, codec: str | None, overwrite: bool, show_progress: bool | None) -> MergeReport:
    a = headers[0]
    for name, h in zip(names[1:], headers[1:]):
        diff = _differences(a, h, ("run_seed", "num_views"))
        if diff:
            raise KdpcError(f"cannot merge {names[0]} and {name}: they have different teachers, and an ensemble needs "
                            f"the same views, but {'; '.join(diff)}")
    for bk, name, h in zip(backends[1:], names[1:], headers[1:]):
        for p in a.params:
            if not np.array_equal(_read_rows(backends[0], p.name, 0, a.num_records).view(np.uint8),
                                  _read_rows(bk, p.name, 0, h.num_records).view(np.uint8)):
                raise KdpcError(f"cannot merge {names[0]} and {name}: they have different teachers, and an ensemble "
                                f"needs identical views, but their stored {p.name!r} parameters differ")
    w = _parse_weights(weights, len(headers))
    codec_spec = codec or a.codec
    extra = dict(a.extra)
    extra["merged_from"] = [_provenance(b, h, 0) for b, h in zip(backends, headers)]
    header = StoreHeader.from_dict({**a.to_dict(), "codec": codec_spec, "teacher": _ensemble_teacher(headers, w),
                                    "created": utc_now(), "kdpc_version": __version__, "extra": extra})
    enc = header.codec_obj()
    in_codecs = [h.codec_obj() for h in headers]
    in_out = [[s.name for s in record_array_specs(h) if s.name.startswith(OUTPUT_GROUP + "/")] for h in headers]
    log_w = np.log(np.asarray(w, dtype=np.float64))
    specs = record_array_specs(header)
    prefix = OUTPUT_GROUP + "/"

    def block(b: int, start: int, stop: int) -> dict[str, np.ndarray]:
        arrays = _view_major_ids(header, start, stop)
        for spec in specs:
            if spec.name not in arrays and not spec.name.startswith(prefix):
                arrays[spec.name] = _read_rows(backends[0], spec.name, start, stop)
        stacked = []
        for bk, c, names_ in zip(backends, in_codecs, in_out):
            raw = {n[len(prefix):]: _read_rows(bk, n, start, stop) for n in names_}
            with np.errstate(all="ignore"):
                stacked.append(c.decode(raw).astype(np.float64))
        lp = np.stack(stacked, 0) + log_w[:, None, None]
        mix = logsumexp(lp, axis=0)[0]  # log sum_i w_i p_i
        mix = mix - logsumexp(mix, axis=-1)
        for name, values in enc.encode(mix.astype(np.float32)).items():
            arrays[prefix + name] = values
        return arrays

    p, backend = _new_output(out, header, labels, overwrite)
    _write_all(p, backend, header, block, f"ensemble -> {p.name}", show_progress)
    return MergeReport(out=str(p), mode="ensemble", inputs=names, num_views=a.num_views, records=header.num_records,
                       weights=w)

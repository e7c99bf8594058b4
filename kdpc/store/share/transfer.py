"""Byte-level sharing: ``copy_store`` (local <-> remote, resumable), ``pack_store`` / ``unpack_store`` (one
``.zarr.zip`` file). Stores travel as their stored objects, byte for byte.

``copy_store`` works on the stored bytes: every object of the source (known from the header and the arrays'
metadata, so no listing is needed and plain HTTP works as a source) is compared with the destination by size and
MD5 (S3 ETags where the server keeps them, else the bytes) and copied only when it differs, so re-running an
interrupted copy skips what already arrived intact. Source chunks are checked against their own crc32c before they
are sent, and every object written is read back (or its ETag checked) and compared with the source. The
destination's root ``zarr.json`` says ``complete: false`` while anything is being written; the block flags go
last and the final root metadata (``complete: true``, byte-identical to the source's) is written at the very end.
Sources must be complete stores with every chunk object present; nothing reads a missing chunk as zeros.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ...errors import KdpcError, exception_line
from ...progress import progress
from .. import locations
from ..backends import ZarrBackend, is_h5_path, open_store, read_header
from ..backends.files import fsync_dir, fsync_file
from ..lease import WriterLease
from ..schema import BLOCKS_DONE, COMPLETE_ATTR, COPYING_ATTR, HEADER_ATTR, StoreHeader
from .sources import open_complete

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




def _open_zarr_source(path: Any) -> tuple[ZarrBackend, StoreHeader, list[str], dict[str, list[str]]]:
    """A complete zarr source with every object present: ``(backend, header, metadata keys, chunk keys)``."""
    if is_h5_path(path):
        raise KdpcError(f"{path}: copy and pack work on zarr stores (folders, .zarr.zip, URLs); make one with "
                        f"`kdpc records convert {path} OUT.zarr` first")
    backend, header = open_complete(path)
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
    if _is_chunk(key) and not locations.crc32c_ok(data):
        raise KdpcError(f"source {location} is damaged: chunk {key} fails its crc32c checksum; run `kdpc records "
                        f"verify {location}` and restore it from a copy or record it again")
    return data


def _batches(keys: Sequence[str], n: int = BATCH) -> list[Sequence[str]]:
    return [keys[i : i + n] for i in range(0, len(keys), n)]


def _in_progress_root(root: bytes) -> bytes:
    doc = json.loads(root)
    doc.setdefault("attributes", {})[COMPLETE_ATTR] = False
    doc["attributes"][COPYING_ATTR] = True  # tells readers to rerun the copy, not to resume a recording
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
    if locations.is_zip(dst):
        raise KdpcError(f"{dst}: to make a single-file pack use `kdpc records pack SRC {dst}`")
    if is_h5_path(dst):
        raise KdpcError(f"{dst}: copy writes zarr stores; to get HDF5 use `kdpc records convert SRC {dst}`")
    if locations.kind(dst) == "object":
        raise KdpcError("copy needs a destination path or URL")


def copy_store(src: Any, dst: Any, *, on_object: ObjectHook | None = None, show_progress: bool | None = None,
               break_lease: bool = False, command: str = "kdpc records copy") -> CopyReport:
    """Copy a complete zarr store ``src`` to ``dst`` (either may be a URL), resumably; see the module docstring.
    The copy holds ``dst``'s writer lease. ``on_object(key, action)`` runs after each object (tests use it to
    interrupt a copy midway).
    """
    _check_destination(dst)
    t0 = time.perf_counter()
    backend, header, meta, chunks = _open_zarr_source(src)
    src_kv = locations.KeyStore(backend.group.store_path.store, backend.location)
    report = CopyReport(src=backend.location, dst=locations.redact(dst), records=header.num_records)
    lp = locations.local_path(dst)
    if lp is not None and backend.local is not None and lp.resolve() == backend.local.resolve():
        raise KdpcError(f"{dst} is the source itself")
    root = _check_source_bytes(backend.location, ROOT_META, src_kv.get(ROOT_META))
    try:
        dst_kv = locations.KeyStore.open(dst, "w")
    except OSError as exc:
        backend.close()
        raise KdpcError(f"cannot write to {report.dst} ({exception_line(exc)})") from None
    lease = None
    try:
        lease = WriterLease.acquire(dst, command, break_lease=break_lease)
        _copy_objects(src_kv, dst_kv, root, _ordered_keys(meta, chunks), report, lp, on_object, show_progress)
    except KdpcError:
        raise
    except Exception as exc:  # network, permissions, a missing bucket, a full disk...
        raise KdpcError(f"copy to {report.dst} stopped: {exception_line(exc)}; fix that and run the same command again "
                        "to resume") from None
    finally:
        dst_kv.close()
        backend.close()
        if lease is not None:
            lease.release()
    if lp is not None:
        fsync_dir(lp)
    check = open_store(dst, "r")
    complete, done, _ = check.completeness(read_header(check))
    check.close()
    if not complete:
        raise KdpcError(f"{report.dst} is not complete after the copy ({done} of {header.num_blocks} blocks)")
    report.seconds = time.perf_counter() - t0
    return report


def _copy_objects(src_kv: locations.KeyStore, dst_kv: locations.KeyStore, root: bytes, keys: list[str], report: CopyReport,
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
                    if d != (len(items[k]), locations.md5(items[k])):
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
    out_p = locations.local_path(out)
    if out_p is None:
        raise KdpcError(f"{out}: pack writes a local file; upload it afterwards")
    if not locations.is_zip(out_p):
        raise KdpcError(f"{out_p}: a pack must end in .zip (e.g. {out_p.name}.zarr.zip)")
    if out_p.exists() and not overwrite:
        raise KdpcError(f"{out_p} exists; delete it or pass --overwrite")
    t0 = time.perf_counter()
    backend, header, meta, chunks = _open_zarr_source(src)
    src_kv = locations.KeyStore(backend.group.store_path.store, backend.location)
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
                    digests[k] = locations.md5(data)
                    report.bytes_copied += len(data)
                    bar.update(1)
        fsync_file(tmp)
        with zipfile.ZipFile(tmp, "r") as zf:  # read back: zip CRC32 per member + MD5 against the source
            names = set(zf.namelist())
            if names != set(keys):
                raise KdpcError(f"{tmp} does not hold the expected objects after writing it")
            for k in keys:
                if locations.md5(zf.read(k)) != digests[k]:
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


def unpack_store(pack: Any, dst: Any, *, on_object: ObjectHook | None = None, show_progress: bool | None = None,
                 break_lease: bool = False) -> CopyReport:
    """Unpack a ``.zarr.zip`` into a folder or a URL (resumable, verified: ``copy_store`` from the zip)."""
    if not locations.is_zip(pack) or locations.is_url(pack):
        raise KdpcError(f"{pack}: unpack takes a local .zarr.zip made by `kdpc records pack`")
    return copy_store(pack, dst, on_object=on_object, show_progress=show_progress, break_lease=break_lease,
                      command="kdpc records unpack")


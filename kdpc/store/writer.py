"""``RecordWriter``: the one write path of every store. It creates / overwrites / resumes / attaches a store and
writes it one block at a time: ``write_block`` takes teacher outputs and encodes them (``kdpc record``),
``write_encoded_block`` takes arrays already in the store's encoding (merge, convert). ``finalize`` applies the one
completion rule; ``Target.remove`` is the one delete. Stores go to a local folder / ``.h5`` file or, as zarr, to an
object-storage URL (``s3://``, ``gs://``...): torchrun ranks then write their blocks there directly.

A block is written completely (every array) before its flag is set, so a crash leaves at most one unflagged,
half-written block that ``pending_blocks()`` hands out again. ``write_block`` is thread-safe for distinct blocks,
and for zarr several processes may write distinct blocks of the same store (``attach``); one of them finalizes.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import KdpcError, exception_line
from . import locations
from .backends import Backend, H5FileBackend, H5PartsBackend, ZarrBackend, is_h5_path, open_store, parts_dir
from .backends import read_header
from .lease import WriterLease
from .schema import FEATURES, HEADER_ATTR, LABELS, OUTPUT_GROUP, POINT_COUNT, POINT_OFFSET, StoreHeader, array_specs
from .schema import column_names
from .schema import labels_dtype, record_array_specs

MODES = ("create", "overwrite", "resume")


class Target:
    """Where a writer puts a store: a local folder / ``.h5`` file, or a zarr store under an object-storage URL
    (``s3://``, ``gs://``, any fsspec filesystem that writes). Knows how to tell whether something is there, whether
    it is a kdpc store (so ``--overwrite`` may delete it), and how to delete it."""

    def __init__(self, path: Any) -> None:
        self.spec = path
        self.local = locations.local_path(path)
        self.name = str(self.local) if self.local is not None else locations.redact(path)
        if self.local is None:
            if not isinstance(path, str) or locations.scheme(path) in locations.READ_ONLY_SCHEMES:
                raise KdpcError(f"{self.name}: stores are written to a folder, a .h5 file or an object-storage URL "
                                "(s3://, gs://...)")
            if is_h5_path(path):
                raise KdpcError(f"{self.name}: HDF5 stores are local files; write a zarr store to object storage")
            from fsspec.core import url_to_fs

            self.fs, self.root = url_to_fs(path)
        if locations.is_zip(path):
            raise KdpcError(f"{self.name}: write a folder (or .h5), then `kdpc records pack` it")

    @property
    def is_h5(self) -> bool:
        return self.local is not None and is_h5_path(self.local)

    def exists(self) -> bool:
        if self.local is None:
            return bool(self.fs.exists(f"{self.root}/zarr.json"))
        if self.is_h5:
            return self.local.exists() or parts_dir(self.local).exists()
        return self.local.exists() or self.local.is_symlink()

    def prepare(self) -> None:
        if self.local is None:
            return
        parent = self.local.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KdpcError(f"cannot create output folder {parent} ({exc.strerror or exc}); pick a writable "
                            "location") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise KdpcError(f"output folder {parent} is not writable; pick a writable location")

    def looks_like_store(self) -> bool:
        """True for something kdpc wrote (so --overwrite may delete it) or an empty folder."""
        if self.local is None:
            try:
                return f'"{HEADER_ATTR}"' in self.fs.cat_file(f"{self.root}/zarr.json").decode("utf-8", "replace")
            except FileNotFoundError:
                return True
        path = self.local
        if self.is_h5:
            if parts_dir(path).is_dir() and (parts_dir(path) / "header.json").is_file():
                return True
            if path.is_file():
                try:
                    H5FileBackend(path).header_dict()
                    return True
                except KdpcError:
                    return False
            return not path.exists()
        if path.is_dir():
            if not any(path.iterdir()):
                return True
            meta = path / "zarr.json"
            return meta.is_file() and f'"{HEADER_ATTR}"' in meta.read_text(encoding="utf-8", errors="replace")
        return False

    def remove(self) -> None:
        """Delete the store and everything a writer leaves beside it (``.h5.parts`` folder, ``.tmp`` file)."""
        if self.local is None:
            try:
                self.fs.rm(self.root, recursive=True)
            except FileNotFoundError:
                pass
            return
        for p in (self.local, parts_dir(self.local), Path(str(self.local) + ".tmp")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink()


def remove_store(path: Any) -> None:
    """Delete a store (local or at a URL) and what a writer leaves beside it."""
    Target(path).remove()


def _open_for_writing(target: Target) -> Backend:
    # a finished .h5 opens read-only: it takes no more blocks (the writer reports it complete)
    return open_store(target.spec, "r" if target.is_h5 and target.local.is_file() else "r+")


def _check_labels(labels: Any, header: StoreHeader) -> np.ndarray:
    if labels is None:
        return np.full(header.num_samples, -1, dtype=labels_dtype(header.num_classes))
    arr = np.asarray(labels).reshape(-1)
    if arr.shape != (header.num_samples,):
        raise ValueError(f"labels must have one entry per sample ({header.num_samples}), got shape {np.shape(labels)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {arr.dtype}")
    if arr.size and (arr.min() < -1 or arr.max() >= header.num_classes):
        raise KdpcError(
            f"dataset labels range over [{arr.min()}, {arr.max()}] but the teacher has {header.num_classes} classes; "
            "check that the dataset and the teacher belong together"
        )
    return arr.astype(labels_dtype(header.num_classes))


class RecordWriter:
    """Writes blocks of records. Build with ``RecordWriter.open`` (or ``attach`` from another process)."""

    def __init__(self, target: Target, backend: Backend, header: StoreHeader, lease: WriterLease | None = None) -> None:
        self.target = target
        self.path = target.local if target.local is not None else target.name  # what messages and callers show
        self._lease = lease  # None for the torchrun ranks that attach to a store rank 0 holds
        self._backend = backend
        self._header = header
        self._codec = header.codec_obj()
        self._record_specs = {s.name: s for s in record_array_specs(header)}
        self._columns = column_names(header)
        self._lock = threading.Lock()
        self._closed = False
        self._finalized = self.complete  # a finished store takes no more blocks

    # ------------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike, header: StoreHeader, mode: str = "create", labels: Any = None,
             resumable: bool = True, command: str = "kdpc record", break_lease: bool = False) -> "RecordWriter":
        """``mode``: ``create`` (refuse an existing path), ``overwrite`` (delete it first), ``resume`` (continue
        a store recorded with the same header, ``created`` aside). ``.h5``/``.hdf5`` -> HDF5, else zarr.
        ``resumable=False`` (merge, convert) leaves ``--resume`` out of the messages. The writer holds the store's
        writer lease (``kdpc.store.lease``, naming ``command``) until ``close``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        target = Target(path)
        header.validate()
        labels_arr = _check_labels(labels, header)
        target.prepare()
        lease = WriterLease.acquire(path, command, break_lease=break_lease)  # before anything is looked at or deleted
        try:
            return cls._open_leased(target, header, mode, labels, labels_arr, resumable, lease)
        except BaseException:
            lease.release()
            raise

    @classmethod
    def _open_leased(cls, target: Target, header: StoreHeader, mode: str, labels: Any, labels_arr: np.ndarray,
                     resumable: bool, lease: WriterLease) -> "RecordWriter":
        exists = target.exists()
        if exists and mode == "create":
            raise KdpcError(f"{target.name} exists; pass {'--resume to finish it or ' if resumable else ''}"
                            "--overwrite to replace it")
        if mode == "resume":
            if not exists:
                raise KdpcError(f"nothing to resume at {target.name}; run without --resume to start recording there")
            return cls._resume(target, header, labels, lease)
        if exists:  # overwrite
            if not target.looks_like_store():
                raise KdpcError(f"{target.name} exists and is not a kdpc record store; refusing to delete it, pick "
                                "another path")
            target.remove()
        try:
            backend: Backend
            if target.is_h5:
                backend = H5PartsBackend.create(target.local, header, labels_arr)
            else:
                backend = ZarrBackend.create(target.spec, header, labels_arr)
        except OSError as exc:  # permissions, read-only or full disk, a missing bucket
            raise KdpcError(f"cannot write the record store at {target.name} ({exception_line(exc)}); pick a "
                            "writable location") from None
        return cls(target, backend, header, lease)

    @classmethod
    def _resume(cls, target: Target, header: StoreHeader, labels: Any, lease: WriterLease) -> "RecordWriter":
        backend = _open_for_writing(target)
        stored = read_header(backend)
        differ = stored.diff(header)
        if differ:
            raise KdpcError(
                f"{target.name} was recorded with different settings ({', '.join(differ)}); resume with the same "
                "settings or pass --overwrite to start over"
            )
        backend.check_structure(stored, "pass --overwrite to record it again")
        if labels is not None:
            old = np.asarray(backend.read(LABELS))
            if not np.array_equal(old, _check_labels(labels, stored)):
                raise KdpcError(f"{target.name} was recorded with other dataset labels; resume with the same dataset "
                                "or pass --overwrite")
        return cls(target, backend, stored, lease)

    @classmethod
    def attach(cls, path: str | os.PathLike) -> "RecordWriter":
        """Open a store another process created, to write some of its blocks (torchrun ranks; rank 0 creates and
        holds the lease)."""
        target = Target(path)
        backend = _open_for_writing(target)
        header = read_header(backend)
        backend.check_structure(header, "pass --overwrite to record it again")
        return cls(target, backend, header)

    # ---------------------------------------------------------------------------------------------- state
    @property
    def header(self) -> StoreHeader:
        return self._header

    @property
    def num_blocks(self) -> int:
        return self._header.num_blocks

    def block_range(self, block: int) -> tuple[int, int]:
        return self._header.block_range(block)

    @property
    def complete(self) -> bool:
        return isinstance(self._backend, H5FileBackend) or bool(self._backend.complete_attr())

    def pending_blocks(self) -> list[int]:
        """Blocks without a done flag, ascending (re-read from the store: other processes may have written)."""
        if isinstance(self._backend, H5FileBackend):
            return []
        return [int(b) for b in np.flatnonzero(self._backend.blocks_done() == 0)]

    # -------------------------------------------------------------------------------------------- writing
    def write_block(self, block: int, columns: dict[str, np.ndarray]) -> None:
        """Validate and encode one block's columns (``sample``, ``view``, each param, ``logprobs`` float [n, C]; for
        partseg ``logprobs`` [n, N, P] and, with anchors, ``features`` [n, M, D]), write every array, then flag the
        block done."""
        if self._closed:
            raise ValueError("write_block on a closed RecordWriter")
        if self._finalized:
            raise KdpcError(f"{self.path} is already complete; nothing to record (pass --overwrite to record again)")
        if self._lease is not None:
            self._lease.check()
        start, stop = self.block_range(int(block))
        arrays = self._prepare(int(block), start, stop, columns)
        self._backend.write_block(int(block), self._placed(int(block), arrays))

    def write_encoded_block(self, block: int, arrays: dict[str, np.ndarray]) -> None:
        """Write one block of arrays already in this store's encoding (every per-record array, by its name in the
        store, e.g. ``output/q``), as merge and convert do; then flag the block done."""
        if self._finalized:
            raise KdpcError(f"{self.path} is already complete")
        if set(arrays) != set(self._record_specs):
            raise ValueError(f"block {block}: arrays must be exactly {sorted(self._record_specs)}, got {sorted(arrays)}")
        for name, values in arrays.items():
            spec = self._record_specs[name]
            lo, hi = self._header.block_rows(spec, int(block))
            if values.shape != (hi - lo, *spec.tail) or str(values.dtype) != spec.dtype:
                raise ValueError(f"block {block}: {name} must be {spec.dtype}{[hi - lo, *spec.tail]}, got "
                                 f"{values.dtype}{list(values.shape)}")
        self._backend.write_block(int(block), self._placed(int(block), arrays))

    def _placed(self, block: int, arrays: dict[str, np.ndarray]) -> dict[str, tuple[int, np.ndarray]]:
        """Each array of a block with the first row it goes to."""
        return {name: (self._header.block_rows(self._record_specs[name], block)[0], np.ascontiguousarray(values))
                for name, values in arrays.items()}

    def discard(self) -> None:
        """Delete the store this writer started (a merge or convert that failed midway), then let go of it."""
        self._backend.close()
        self.target.remove()
        self.close()  # the lease goes last: nobody else starts on a half-deleted store

    def _prepare(self, block: int, start: int, stop: int, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = self._header
        n = stop - start
        missing = [c for c in self._columns if c not in columns]
        extra = [c for c in columns if c not in self._columns]
        if missing or extra:
            raise ValueError(f"block {block}: columns must be exactly {self._columns}; missing {missing}, unexpected {extra}")
        out: dict[str, np.ndarray] = {}
        for name, expected in zip(("sample", "view"), h.sample_view(np.arange(start, stop))):
            values = np.asarray(columns[name]).reshape(-1)
            if values.shape != (n,) or not np.array_equal(values, expected):
                raise ValueError(
                    f"block {block}: column {name!r} must be the view-major ids of records [{start}, {stop}) "
                    f"({h.view_major_rule()})"
                )
            out[name] = expected.astype(self._record_specs[name].dtype)
        for p in h.params:
            spec = self._record_specs[p.name]
            values = np.asarray(columns[p.name])
            if values.shape != (n, *p.shape):
                raise ValueError(f"block {block}: param {p.name!r} must have shape {(n, *p.shape)}, got {values.shape}")
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                raise ValueError(f"block {block}: param {p.name!r} has non-finite values")
            out[p.name] = np.ascontiguousarray(values, dtype=spec.dtype)
        if h.task == "semseg":
            out.update(self._prepare_ragged(block, start, stop, columns))
            return out
        lp = np.asarray(columns["logprobs"])
        seg = h.task == "partseg"
        want = (n, h.num_points, h.num_classes) if seg else (n, h.num_classes)
        if lp.shape != want:
            raise ValueError(f"block {block}: logprobs must have shape {want}, got {lp.shape}")
        if not np.issubdtype(lp.dtype, np.floating):
            raise ValueError(f"block {block}: logprobs must be floating point, got {lp.dtype}")
        # a record is bad when any entry is NaN/+inf or any row (a point, for partseg) is all -inf
        bad = (np.isnan(lp).reshape(n, -1).any(axis=1) | np.isposinf(lp).reshape(n, -1).any(axis=1)
               | (~np.isfinite(lp).any(axis=-1)).reshape(n, -1).any(axis=1))
        if bad.any():
            raise KdpcError(
                f"the teacher produced NaN/inf outputs for {int(bad.sum())} records of block {block} (first: "
                f"{h.describe_record(start + int(np.flatnonzero(bad)[0]))}); nothing was written - check the "
                "checkpoint and try without mixed precision"
            )
        for name, values in self._codec.encode(lp).items():
            spec = self._record_specs[f"{OUTPUT_GROUP}/{name}"]
            assert values.shape == (n, *spec.tail) and str(values.dtype) == spec.dtype, (name, values.shape, values.dtype)
            out[spec.name] = np.ascontiguousarray(values)
        if FEATURES in self._columns:
            out[FEATURES] = self._prepare_features(block, start, n, columns[FEATURES])
        return out

    def _prepare_ragged(self, block: int, start: int, stop: int, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """semseg: per-record ``point_count`` / ``point_offset``, per-record codec rows, and the per-point rows of
        the block's views packed from the block's first row (zero after them)."""
        h = self._header
        n = stop - start
        counts = np.asarray(columns[POINT_COUNT]).reshape(-1)
        if counts.shape != (n,) or not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(f"block {block}: point_count must be {n} integers, got {counts.dtype}{list(counts.shape)}")
        if n and (counts.min() < 1 or counts.max() > h.num_points):
            raise ValueError(f"block {block}: every view needs 1..{h.num_points} points, got {counts.min()}..{counts.max()}")
        counts = counts.astype(np.int64)
        lp = np.asarray(columns["logprobs"])
        if lp.shape != (int(counts.sum()), h.num_classes) or not np.issubdtype(lp.dtype, np.floating):
            raise ValueError(f"block {block}: logprobs must be floating [{int(counts.sum())}, {h.num_classes}] (the "
                             f"views' points concatenated), got {lp.dtype}{list(lp.shape)}")
        bad_rows = np.isnan(lp).any(axis=1) | np.isposinf(lp).any(axis=1) | ~np.isfinite(lp).any(axis=1)
        if bad_rows.any():
            view_of_row = np.repeat(np.arange(n), counts)
            bad = np.unique(view_of_row[bad_rows])
            raise KdpcError(
                f"the teacher produced NaN/inf outputs for {bad.size} records of block {block} (first: "
                f"{h.describe_record(start + int(bad[0]))}); nothing was written - check the checkpoint and try "
                "without mixed precision"
            )
        out: dict[str, np.ndarray] = {POINT_COUNT: counts.astype(np.uint32), POINT_OFFSET: h.point_offsets(block, counts)}
        capacity = n * h.num_points
        for name, values in self._codec.encode_ragged(lp, counts).items():
            spec = self._record_specs[f"{OUTPUT_GROUP}/{name}"]
            if spec.per == "point":
                padded = np.zeros((capacity, *spec.tail), dtype=spec.dtype)
                padded[: values.shape[0]] = values
                values = padded
            assert values.shape[1:] == spec.tail and str(values.dtype) == spec.dtype, (name, values.shape, values.dtype)
            out[spec.name] = np.ascontiguousarray(values)
        if FEATURES in self._columns:
            feats = np.asarray(columns[FEATURES])
            kept = np.arange(h.num_anchors)[None, :] < np.minimum(counts, h.num_anchors)[:, None]
            if feats.shape == (n, h.num_anchors, h.feature_dim):
                feats = np.where(kept[..., None], feats, 0.0)  # a view of fewer points has fewer anchors
            out[FEATURES] = self._prepare_features(block, start, n, feats)
        return out

    def _prepare_features(self, block: int, start: int, n: int, values: Any) -> np.ndarray:
        h = self._header
        feats = np.asarray(values)
        want = (n, *h.feature_shape)
        if feats.shape != want:
            where = "at the anchors and projected" if len(want) == 3 else "one embedding per view, projected"
            raise ValueError(f"block {block}: features must have shape {want} (already {where}), got {feats.shape}")
        if not np.issubdtype(feats.dtype, np.floating):
            raise ValueError(f"block {block}: features must be floating point, got {feats.dtype}")
        dtype = self._record_specs[FEATURES].dtype
        with np.errstate(over="ignore"):
            stored = feats.astype(dtype)
        bad = ~np.isfinite(stored).reshape(n, -1).all(axis=1)
        if bad.any():
            raise KdpcError(
                f"the teacher produced NaN/inf (or {dtype}-overflowing) features for {int(bad.sum())} records of block "
                f"{block} (first: {h.describe_record(start + int(np.flatnonzero(bad)[0]))}); nothing was written - "
                "check the checkpoint, or project the features (feature_projection)"
            )
        return np.ascontiguousarray(stored)

    def finalize(self) -> str:
        """Check every block flag, then mark the store complete (zarr) / assemble ``OUT.h5`` (HDF5). Idempotent."""
        with self._lock:
            if isinstance(self._backend, H5FileBackend):
                if parts_dir(self.path).exists():  # crashed after the rename, before cleaning up
                    shutil.rmtree(parts_dir(self.path), ignore_errors=True)
                return str(self.path)
            _complete, done, _flags = self._backend.completeness(self._header)
            if done != self.num_blocks:
                raise KdpcError(
                    f"cannot finalize {self.path}: {done} of {self.num_blocks} blocks are done; record the rest with "
                    "`kdpc record --resume`"
                )
            self._backend.finalize(self._header)
            if isinstance(self._backend, H5PartsBackend):
                self._backend = H5FileBackend(self.path)
            self._finalized = True
            return str(self.path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._backend.close()
        if self._lease is not None:
            self._lease.release()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordWriter({str(self.path)!r}, {self.num_blocks} blocks, codec={self._header.codec})"

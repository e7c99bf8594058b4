"""``RecordReader``: random access to records, served from memory.

The first touch of a view loads that whole view slab (records ``[v * S, (v + 1) * S)``, every array) and decodes
the teacher output to float32 once; afterwards ``get`` is plain numpy fancy indexing. A zarr store read record by
record manages ~1.5k records/s; from memory this serves millions (see ``reader_throughput``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ..errors import KdpcError
from .backends import Backend, StoreCorruptError, open_store, read_header
from .schema import FEATURES, LABELS, OUTPUT_GROUP, POINT_COUNT, POINT_OFFSET, StoreHeader, param_names
from .schema import record_array_specs


class RecordReader:
    """Read a store. ``require_complete=False`` also opens stores still being recorded (unfinished blocks read as
    zeros; use ``done_records()`` to know which records are real)."""

    def __init__(self, path: Any, require_complete: bool = True) -> None:
        self.path = path
        self._backend_obj: Backend | None = open_store(path, "r")
        self._backend_pid = os.getpid()
        self.location = self._backend.location
        self.header: StoreHeader = read_header(self._backend)
        h = self.header
        self._backend.check_structure(h)  # before allocating anything from the header's sizes
        self.codec = h.codec_obj()
        self.complete, done, flags = self._backend.completeness(h)
        self._flags = flags
        if require_complete and not self.complete:
            raise KdpcError(f"record store {self.location} is incomplete ({done} of {h.num_blocks} blocks done); "
                            f"{self._backend.how_to_finish()}")
        specs = record_array_specs(h)
        self._specs = [s for s in specs if s.per == "record"]  # loaded a view slab at a time
        self._point_specs = [s for s in specs if s.per == "point"]  # semseg: loaded a block at a time, on demand
        self._point_blocks: dict[int, dict[str, np.ndarray]] = {}
        self._params = param_names(h)
        self.labels: np.ndarray = np.asarray(self._backend.read(LABELS)).astype(np.int64)
        # dense in-memory copies, filled one view slab at a time
        r = h.num_records
        self._sample = np.empty(r, dtype=np.int32)
        self._view = np.empty(r, dtype=np.uint16)
        self._param_arrays = {p.name: np.empty((r, *p.shape), dtype=p.dtype) for p in h.params}
        self._seg = h.task in ("partseg", "semseg")
        self._scene = h.task == "semseg"
        if self._seg:  # per-point outputs stay encoded in memory (~10 kB/record) and are decoded per `get`
            self._encoded = {s.name: np.empty(s.shape, dtype=s.dtype) for s in self._specs
                             if s.name.startswith(OUTPUT_GROUP + "/") or s.name in (FEATURES, POINT_COUNT, POINT_OFFSET)}
        else:
            self._logprobs = np.empty((r, h.num_classes), dtype=np.float32)
            # the teacher's embedding of every view, kept as stored (float16) and widened per `get`
            self._features = np.empty((r, *h.feature_shape), dtype=np.float16) if h.feature_shape else None
        self._loaded = np.zeros(h.num_views, dtype=bool)
        self._all_loaded = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ per-process handle
    @property
    def _backend(self) -> Backend:
        """The store handle of THIS process: reopened after a fork (an fsspec/s3 handle or a zip file offset
        inherited by a DataLoader worker must not be reused) and after unpickling (spawned workers)."""
        if self._backend_obj is None or self._backend_pid != os.getpid():
            self._backend_obj = open_store(self.path, "r")
            self._backend_pid = os.getpid()
        return self._backend_obj

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_backend_obj"] = None  # reopened lazily on the other side
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --------------------------------------------------------------------------------------------- shape
    @property
    def num_records(self) -> int:
        return self.header.num_records

    @property
    def num_samples(self) -> int:
        return self.header.num_samples

    @property
    def num_views(self) -> int:
        return self.header.num_views

    @property
    def num_classes(self) -> int:
        return self.header.num_classes

    def __len__(self) -> int:
        return self.num_records

    def record_index(self, sample: Any, view: Any) -> np.ndarray:
        """Record ids of ``(sample, view)`` (vectorised; record = view * num_samples + sample)."""
        return self.header.record_index(sample, view)

    def done_records(self) -> np.ndarray:
        """Boolean mask of records whose block is flagged done (all True for a complete store)."""
        h = self.header
        mask = np.repeat(self._flags == 1, h.chunk_records)[: h.num_records]
        return mask

    # ---------------------------------------------------------------------------------------------- load
    def _load_views(self, views: np.ndarray) -> None:
        with self._lock:
            for v in views:
                if not self._loaded[v]:
                    self._load_view(int(v))
                    self._loaded[v] = True
            self._check_same_store()
            self._all_loaded = bool(self._loaded.all())

    def _check_same_store(self) -> None:
        """Refuse data from a store that was replaced (overwritten, re-recorded) after this reader opened it."""
        try:
            now = read_header(open_store(self.path, "r")).generation
        except KdpcError as exc:
            raise KdpcError(f"record store {self.location} changed while it was being read ({exc})") from None
        if now != self.header.generation:
            raise KdpcError(f"record store {self.location} was replaced while it was being read (generation "
                            f"{self.header.generation[:8]} -> {now[:8]}); start again to read the new one")

    def _load_view(self, v: int) -> None:
        h = self.header
        start, stop = h.view_range(v)
        c = h.chunk_records
        blocks = range(start // c, (stop - 1) // c + 1)
        required = [b for b in blocks if self._flags[b] == 1]  # unfinished blocks of a store in progress read as 0
        encoded: dict[str, np.ndarray] = {}
        for spec in self._specs:
            missing = self._backend.missing_chunks(spec.name, required)
            if missing:
                raise StoreCorruptError(spec.name, missing[0], "chunk object is missing", self.location)
            encoded[spec.name] = self._backend.read(spec.name, start, stop)
        self._sample[start:stop] = encoded["sample"]
        self._view[start:stop] = encoded["view"]
        for name in self._params:
            self._param_arrays[name][start:stop] = encoded[name]
        if self._seg:
            for name, arr in self._encoded.items():
                arr[start:stop] = encoded[name]
            return
        prefix = OUTPUT_GROUP + "/"
        out = {k[len(prefix) :]: a for k, a in encoded.items() if k.startswith(prefix)}
        with np.errstate(all="ignore"):
            self._logprobs[start:stop] = self.codec.decode(out)
        if self._features is not None:
            self._features[start:stop] = encoded[FEATURES]

    def load_all(self) -> dict[str, np.ndarray]:
        """Load every view; returns the full columns (views into the reader's memory, do not modify).

        partseg: ids and params only (decoding every per-point output at once would take R*N*P*4 bytes); the
        decoded ``logprobs``/``features``/``anchors`` come from ``get``. Classification ``features`` likewise."""
        if not self._all_loaded:
            self._load_views(np.arange(self.num_views))
        return self._columns(slice(None))

    def _columns(self, idx: Any) -> dict[str, np.ndarray]:
        out = {"sample": self._sample[idx], "view": self._view[idx]}
        for name, arr in self._param_arrays.items():
            out[name] = arr[idx]
        if self._scene:
            out[POINT_COUNT] = self._encoded[POINT_COUNT][idx].astype(np.int64)
            return out
        if self._seg:
            if not (isinstance(idx, slice) and idx == slice(None)):
                out.update(self._decode_seg(idx, out["seed"]))
            return out
        out["logprobs"] = self._logprobs[idx]
        if self._features is not None and not (isinstance(idx, slice) and idx == slice(None)):
            out["features"] = self._features[idx].astype(np.float32)
        return out

    def _decode_seg(self, idx: Any, seeds: np.ndarray) -> dict[str, np.ndarray]:
        from ..augment import anchor_indices

        h = self.header
        prefix = OUTPUT_GROUP + "/"
        out = {k[len(prefix):]: a[idx] for k, a in self._encoded.items() if k.startswith(prefix)}
        with np.errstate(all="ignore"):
            cols = {"logprobs": self.codec.decode(out)}
        if FEATURES in self._encoded:
            cols["features"] = self._encoded[FEATURES][idx].astype(np.float32)
            cols["anchors"] = anchor_indices(seeds, h.num_points, h.num_anchors)
        return cols

    def get(self, indices: Any) -> dict[str, np.ndarray]:
        """Columns of the given record ids: ``sample``, ``view``, every param, ``logprobs`` float32 [n, C], and for a
        store that recorded the teacher's embeddings ``features`` float32 [n, D].

        partseg: ``logprobs`` float32 [n, N, P] (decoded now), and with anchors ``features`` float32 [n, M, D] and
        ``anchors`` int64 [n, M] (view-order point positions, ``kdpc.augment.anchor_indices(seed, N, M)``)."""
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"record indices must be integers, got {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_records):  # no silent wrap-around
            raise IndexError(f"record index out of range [0, {self.num_records})")
        if not self._all_loaded:
            views = np.unique(self.header.sample_view(idx)[1])
            need = views[~self._loaded[views]]
            if need.size:
                self._load_views(need)
        return self._columns(idx)

    def get_view(self, record: int) -> dict[str, Any]:
        """semseg: one recorded view: ``sample``, ``view``, every param, ``logprobs`` float32 ``[m, C]`` (its
        ``m = point_count`` points in view order, decoded now) and, with anchors, ``features`` float32 ``[a, D]`` and
        ``anchors`` int64 ``[a]`` (``a = min(M, m)``, ``kdpc.augment.anchor_indices(seed, m, a)``)."""
        from ..augment import anchor_indices

        if not self._scene:
            raise KdpcError(f"get_view reads semseg stores; {self.location} is a {self.header.task} store (use get)")
        r = int(record)
        cols = {k: (v[0] if v.ndim else v) for k, v in self.get(np.array([r])).items()}
        m = int(cols.pop(POINT_COUNT))
        if m < 1:
            raise KdpcError(f"record store {self.location}: {self.header.describe_record(r)} has no points (its block "
                            "is not recorded yet)")
        block = r // self.header.chunk_records
        rows = self._point_block(block)
        lo = int(self._encoded[POINT_OFFSET][r]) - self.header.point_block_range(block)[0]
        prefix = OUTPUT_GROUP + "/"
        point_rows = {k[len(prefix):]: v[lo : lo + m] for k, v in rows.items()}
        record_rows = {k[len(prefix):]: v[r] for k, v in self._encoded.items()
                       if k.startswith(prefix) and k[len(prefix):] not in point_rows}
        with np.errstate(all="ignore"):
            cols["logprobs"] = self.codec.decode_view(point_rows, record_rows)
        if FEATURES in self._encoded:
            a = min(self.header.num_anchors, m)
            cols["features"] = self._encoded[FEATURES][r, :a].astype(np.float32)
            cols["anchors"] = anchor_indices(cols["seed"], m, a)
        return cols

    def _point_block(self, block: int) -> dict[str, np.ndarray]:
        with self._lock:
            if block not in self._point_blocks:
                lo, hi = self.header.point_block_range(block)
                done = self._flags[block] == 1
                rows = {}
                for spec in self._point_specs:
                    if done and self._backend.missing_chunks(spec.name, [block]):
                        raise StoreCorruptError(spec.name, block, "chunk object is missing", self.location)
                    rows[spec.name] = self._backend.read(spec.name, lo, hi)
                self._point_blocks[block] = rows
            return self._point_blocks[block]

    # ---------------------------------------------------------------------------------------------- stats
    def teacher_accuracy(self) -> float | None:
        """Top-1 accuracy of the decoded outputs against ``labels[sample]`` over recorded (done) records with a
        known label; None when no record qualifies (and for partseg stores, whose labels are object categories)."""
        if self._seg:
            return None
        cols = self.load_all()
        lab = self.labels[cols["sample"].astype(np.int64)]
        ok = (lab >= 0) & self.done_records()
        if not ok.any():
            return None
        return float((cols["logprobs"][ok].argmax(axis=1) == lab[ok]).mean())

    def close(self) -> None:
        if self._backend_obj is not None and self._backend_pid == os.getpid():
            self._backend_obj.close()
        self._backend_obj = None

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        h = self.header
        return f"RecordReader({self.location!r}, {h.num_samples} samples x {h.num_views} views, codec={h.codec})"

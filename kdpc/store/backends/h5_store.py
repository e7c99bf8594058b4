"""The HDF5 backend: ``OUT.h5`` once complete; while recording, one part file per finished block in
``OUT.h5.parts/`` (plus ``header.json`` and ``labels.npy``), assembled by ``finalize``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ...errors import KdpcError, exception_line
from ..schema import BLOCKS_DONE, COMPLETE_ATTR, HEADER_ATTR, LABELS, OUTPUT_GROUP, ArraySpec, StoreHeader
from ..schema import array_specs, record_array_specs
from .base import Backend, StoreCorruptError, parts_dir
from .bounded import check_h5_chunks
from .files import disk_usage, fsync_dir, fsync_file, write_text_atomic

GZIP_LEVEL = 6
PART_HEADER = "header.json"
PART_LABELS = "labels.npy"


def _h5_dataset_kwargs(spec: ArraySpec) -> dict:
    return {"chunks": spec.chunks, "compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": True,
            "fletcher32": True, "fillvalue": 0}


class H5FileBackend(Backend):
    """An assembled ``OUT.h5`` (complete by construction). The file is opened per operation (fork-safe)."""

    kind = "h5"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._meta: dict[str, tuple[tuple[int, ...], str, tuple[int, ...]]] = {}

    @contextlib.contextmanager
    def _file(self) -> Iterator[Any]:
        """The open file; whatever HDF5 raises on damaged metadata becomes one ``KdpcError`` line."""
        import h5py

        try:
            f = h5py.File(self.path, "r")
        except (OSError, RuntimeError, ValueError) as exc:
            raise KdpcError(f"cannot open HDF5 record store {self.path} ({exception_line(exc)}); it is damaged or "
                            "not HDF5") from None
        try:
            with f:
                yield f
        except KdpcError:
            raise
        except (KeyError, OSError, RuntimeError, ValueError, TypeError, UnicodeError, AttributeError) as exc:
            raise KdpcError(f"record store {self.path} is damaged ({exception_line(exc)}); restore it from a copy or "
                            "record it again") from None

    def header_dict(self) -> dict:
        with self._file() as f:
            raw = f.attrs.get(HEADER_ATTR)
        if raw is None:
            raise KdpcError(f"{self.path} is an HDF5 file but not a kdpc record store (no '{HEADER_ATTR}' attribute)")
        try:
            return json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
        except (ValueError, UnicodeDecodeError):
            raise KdpcError(f"{self.path}: the '{HEADER_ATTR}' attribute is not valid JSON; the store is damaged") from None

    def complete_attr(self) -> bool:
        with self._file() as f:
            return bool(f.attrs.get(COMPLETE_ATTR, False))

    def blocks_done(self) -> np.ndarray:
        return np.asarray(self.read(BLOCKS_DONE), dtype=np.uint8)

    def output_attrs(self) -> dict:
        with self._file() as f:
            if OUTPUT_GROUP not in f:
                return {}
            return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f[OUTPUT_GROUP].attrs.items()}

    def has_array(self, name: str) -> bool:
        import h5py

        with self._file() as f:
            return isinstance(f.get(name), h5py.Dataset)

    def array_meta(self, name: str) -> tuple[tuple[int, ...], str, tuple[int, ...]]:
        if name not in self._meta:
            with self._file() as f:
                if name not in f:
                    raise KdpcError(f"record store {self.path} has no dataset {name!r}; it is damaged")
                ds = f[name]
                self._meta[name] = (tuple(ds.shape), str(ds.dtype), tuple(ds.chunks or ds.shape))
        return self._meta[name]

    def checksum_problem(self, name: str) -> str | None:
        with self._file() as f:
            ds = f[name]
            if not ds.fletcher32:
                return "has no fletcher32 filter, so corrupted chunks would go unnoticed"
        return None

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        with self._file() as f:
            if name not in f:
                raise KdpcError(f"record store {self.path} has no dataset {name!r}; it is damaged")
            ds = f[name]
            try:
                lo, hi, _ = slice(start, stop).indices(ds.shape[0])
                check_h5_chunks(ds, lo, hi)  # no chunk inflates past its size
                return np.asarray(ds[slice(start, stop)])
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                error = exc
            n, c = ds.shape[0], (ds.chunks or ds.shape)[0]
        raise self._locate(name, n, c, start, stop, error) from None

    def missing_chunks(self, name: str, indices: Iterable[int]) -> list[int]:
        out = []
        with self._file() as f:
            ds = f[name]
            c = (ds.chunks or ds.shape)[0]
            for i in indices:
                info = ds.id.get_chunk_info_by_coord((i * c,) + (0,) * (ds.ndim - 1))
                if info.byte_offset is None:
                    out.append(i)
        return out

    def bytes_on_disk(self) -> int | None:
        return disk_usage(self.path)

    def array_bytes(self, name: str) -> int | None:
        with self._file() as f:
            return int(f[name].id.get_storage_size()) if name in f else None


class H5PartsBackend(Backend):
    """An HDF5 store being recorded: ``OUT.h5.parts/{header.json, labels.npy, block-NNNNNN.h5}``."""

    kind = "h5"

    def __init__(self, path: Path, header: StoreHeader | None = None) -> None:
        self.path = path
        self.dir = parts_dir(path)
        self.location = str(self.dir)
        self._header = header
        self._specs: dict[str, ArraySpec] | None = None

    # ------------------------------------------------------------------------------------------- metadata
    @property
    def header(self) -> StoreHeader:
        if self._header is None:
            self._header = StoreHeader.from_dict(self.header_dict())
        return self._header

    def specs(self) -> dict[str, ArraySpec]:
        if self._specs is None:
            self._specs = {s.name: s for s in array_specs(self.header)}
        return self._specs

    def part_path(self, block: int) -> Path:
        return self.dir / f"block-{block:06d}.h5"

    def header_dict(self) -> dict:
        p = self.dir / PART_HEADER
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KdpcError(f"{self.dir} has no {PART_HEADER}; it is not a kdpc record store in progress") from None
        except ValueError:
            raise KdpcError(f"{p} is not valid JSON; the store in progress is damaged") from None

    def complete_attr(self) -> bool:
        return False

    def blocks_done(self) -> np.ndarray:
        return np.array([self.part_path(b).is_file() for b in range(self.header.num_blocks)], dtype=np.uint8)

    def output_attrs(self) -> dict:
        return self.header.codec_obj().config()

    def has_array(self, name: str) -> bool:
        return name in self.specs()

    def array_meta(self, name: str) -> tuple[tuple[int, ...], str, tuple[int, ...]]:
        s = self.specs()[name]
        return s.shape, s.dtype, s.chunks

    def checksum_problem(self, name: str) -> str | None:
        return None  # part files carry fletcher32; the assembled file is checked after finalize

    # ----------------------------------------------------------------------------------------------- data
    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        import h5py

        spec = self.specs().get(name)
        if spec is None:
            raise KdpcError(f"record store {self.dir} has no array {name!r}")
        if name == BLOCKS_DONE:
            return self.blocks_done()[slice(start, stop)]
        if name == LABELS:
            try:
                return np.load(self.dir / PART_LABELS, allow_pickle=False)[slice(start, stop)]
            except (OSError, ValueError) as exc:
                raise StoreCorruptError(name, 0, exception_line(exc), self.location) from None
        start, stop, _ = slice(start, stop).indices(spec.shape[0])
        out = np.zeros((max(stop - start, 0), *spec.tail), dtype=spec.dtype)
        c = spec.chunks[0]  # one chunk per block
        for b in range(start // c, (stop - 1) // c + 1 if stop > start else start // c):
            p = self.part_path(b)
            if not p.is_file():
                continue
            b0, b1 = self.header.block_rows(spec, b)
            lo, hi = max(start, b0), min(stop, b1)
            try:
                with h5py.File(p, "r") as f:
                    out[lo - start : hi - start] = f[name][lo - b0 : hi - b0]
            except (OSError, KeyError, ValueError) as exc:
                raise StoreCorruptError(name, b, f"part file {p.name}: {exception_line(exc)}", self.location) from None
        return out

    def missing_chunks(self, name: str, indices: Iterable[int]) -> list[int]:
        if self.specs()[name].per not in ("record", "point"):
            return []
        return [i for i in indices if not self.part_path(i).is_file()]

    def bytes_on_disk(self) -> int | None:
        return disk_usage(self.dir)

    # --------------------------------------------------------------------------------------------- writing
    @classmethod
    def create(cls, path: Path, header: StoreHeader, labels: np.ndarray) -> "H5PartsBackend":
        d = parts_dir(path)
        d.mkdir(parents=False, exist_ok=False)
        tmp = d / f".{PART_LABELS}.{uuid.uuid4().hex}.tmp.npy"
        np.save(tmp, np.asarray(labels), allow_pickle=False)
        fsync_file(tmp)
        os.replace(tmp, d / PART_LABELS)
        write_text_atomic(d / PART_HEADER, json.dumps(header.to_dict(), indent=1))  # last: marks the folder valid
        fsync_dir(d)
        return cls(path, header)

    def write_block(self, block: int, arrays: dict[str, tuple[int, np.ndarray]]) -> None:
        import h5py

        final = self.part_path(block)
        tmp = self.dir / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        start, stop = self.header.block_range(block)
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["block"] = block
                f.attrs["start"] = start
                f.attrs["stop"] = stop
                for name, (_first, values) in arrays.items():
                    f.create_dataset(name, data=values, chunks=values.shape if values.size else None,
                                     fletcher32=bool(values.size))
            fsync_file(tmp)
            os.replace(tmp, final)  # existence of block-NNNNNN.h5 == block done
        finally:
            if tmp.exists():
                tmp.unlink()

    def finalize(self, header: StoreHeader) -> None:
        """Assemble ``OUT.h5.tmp`` from the parts, rename it to ``OUT.h5``, remove the parts folder."""
        import h5py

        tmp = Path(str(self.path) + ".tmp")
        if tmp.exists():
            tmp.unlink()
        codec = header.codec_obj()
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs[HEADER_ATTR] = json.dumps(header.to_dict())
                f.attrs[COMPLETE_ATTR] = np.bool_(False)
                out = f.create_group(OUTPUT_GROUP)
                for k, v in codec.config().items():
                    out.attrs[k] = v
                datasets = {s.name: f.create_dataset(s.name, shape=s.shape, dtype=s.dtype, **_h5_dataset_kwargs(s))
                            for s in array_specs(header)}
                datasets[LABELS][:] = np.load(self.dir / PART_LABELS, allow_pickle=False)
                datasets[BLOCKS_DONE][:] = 1
                for b in range(header.num_blocks):
                    with h5py.File(self.part_path(b), "r") as part:
                        for s in record_array_specs(header):
                            b0, b1 = header.block_rows(s, b)
                            try:
                                datasets[s.name][b0:b1] = part[s.name][...]
                            except (OSError, KeyError, ValueError) as exc:
                                raise KdpcError(
                                    f"part file {self.part_path(b)} is damaged ({exception_line(exc)}); delete it and run "
                                    "`kdpc record --resume` to record that block again"
                                ) from None
                f.attrs[COMPLETE_ATTR] = np.bool_(True)
            fsync_file(tmp)
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        shutil.rmtree(self.dir, ignore_errors=True)


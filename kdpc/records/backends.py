"""Storage backends: zarr v3 (default; written in place) and HDF5 (assembled from per-block part files).

Both expose the same small interface (``Backend``) so the writer, reader, verify and info never touch zarr/h5py
directly. ``open_store`` is the one entry point that turns a path / URL / zarr ``StoreLike`` into a backend.

Integrity rules (see docs/record-format.md):

* zarr: plain chunks (no sharding: several processes write distinct blocks), one chunk per block along the record
  axis, every array's codec chain ends in ``crc32c``; multi-byte dtypes use ``blosc(zstd, byte shuffle)``, one-byte
  dtypes ``zstd``. ``write_empty_chunks`` is on, so every chunk of a finished block exists as an object: a missing
  object is damage, never "fill value".
* HDF5: ``shuffle + gzip + fletcher32`` on every dataset. While recording, each finished block is its own file
  ``OUT.h5.parts/block-NNNNNN.h5`` (written to a temp name, fsync'ed, renamed: existence means done);
  ``finalize`` assembles ``OUT.h5.tmp`` and renames it to ``OUT.h5``. A half-written ``OUT.h5`` never exists.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import KdpcError
from . import remote as _remote
from .schema import (
    BLOCKS_DONE,
    COMPLETE_ATTR,
    HEADER_ATTR,
    LABELS,
    OUTPUT_GROUP,
    ArraySpec,
    StoreHeader,
    array_specs,
    record_array_specs,
)

ZSTD_LEVEL = 9  # measured: levels 15-22 gain < 0.1 B/record on 40-class u8log records
GZIP_LEVEL = 6
H5_SUFFIXES = (".h5", ".hdf5")
PARTS_SUFFIX = ".parts"
PART_HEADER = "header.json"
PART_LABELS = "labels.npy"


class StoreCorruptError(Exception):
    """A chunk could not be read back (checksum mismatch, truncated/missing object...). Internal: callers turn it
    into a ``KdpcError`` (reader) or a problem line (verify)."""

    def __init__(self, array: str, chunk: int | None, cause: str) -> None:
        self.array, self.chunk, self.cause = array, chunk, cause
        where = f"array {array!r}" + (f" chunk {chunk}" if chunk is not None else "")
        super().__init__(f"{where}: {cause}")


# ------------------------------------------------------------------------------------------------- helpers
def is_h5_path(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(H5_SUFFIXES)


def is_url(path: Any) -> bool:
    return _remote.is_url(path)


def local_path(path: Any) -> Path | None:
    """The local filesystem path of ``path`` (``file://`` stripped), or None for URLs and store objects."""
    return _remote.local_path(path)


def parts_dir(path: str | os.PathLike) -> Path:
    return Path(str(path) + PARTS_SUFFIX)


def describe(path: Any) -> str:
    return _remote.redact(path)  # never show user:password@ of a URL


def disk_usage(path: Path) -> int:
    """Sum of file sizes under ``path`` (a file or a directory)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # a writer replaced it meanwhile
                pass
    return total


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _cause(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------------------ interface
class Backend:
    """Read (and, for writers, write) access to one store."""

    kind = ""
    location = ""

    # --- metadata
    def header_dict(self) -> dict:
        raise NotImplementedError

    def complete_attr(self) -> bool:
        raise NotImplementedError

    def blocks_done(self) -> np.ndarray:
        """uint8 flag per block."""
        raise NotImplementedError

    def output_attrs(self) -> dict:
        raise NotImplementedError

    def has_array(self, name: str) -> bool:
        raise NotImplementedError

    def array_meta(self, name: str) -> tuple[tuple[int, ...], str, tuple[int, ...]]:
        """``(shape, dtype, chunks)``."""
        raise NotImplementedError

    def checksum_problem(self, name: str) -> str | None:
        """Why chunks of ``name`` would not detect corruption, or None when every chunk carries a checksum."""
        raise NotImplementedError

    # --- data
    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of an array; raises ``StoreCorruptError``."""
        raise NotImplementedError

    def _locate(self, name: str, n: int, c: int, start: int | None, stop: int | None, exc: BaseException) -> StoreCorruptError:
        """The error for a failed read of rows [start, stop): re-read chunk by chunk to name the damaged one."""
        lo, hi, _ = slice(start, stop).indices(n)
        first, last = lo // c, (max(hi, lo + 1) - 1) // c
        if first != last:
            for i in range(first, last + 1):
                try:
                    self.read(name, i * c, min((i + 1) * c, n))
                except StoreCorruptError as inner:
                    return inner
        return StoreCorruptError(name, first if first == last else None, _cause(exc))

    def read_chunk(self, name: str, index: int) -> np.ndarray:
        shape, _dtype, chunks = self.array_meta(name)
        start = index * chunks[0]
        return self.read(name, start, min(start + chunks[0], shape[0]))

    def missing_chunks(self, name: str, indices: Iterable[int]) -> list[int]:
        """Which of the chunk indices (along axis 0) have no stored object."""
        return []

    def bytes_on_disk(self) -> int | None:
        return None

    def array_bytes(self, name: str) -> int | None:
        """Stored bytes of one array (chunks + its metadata where the backend has such), if known."""
        return None

    def close(self) -> None:
        pass

    # --- writing (writers only)
    def write_block(self, block: int, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def finalize(self, header: StoreHeader) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------- zarr
def zarr_compressors(dtype: str) -> list:
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    itemsize = np.dtype(dtype).itemsize
    if itemsize == 1:
        return [ZstdCodec(level=ZSTD_LEVEL, checksum=False), Crc32cCodec()]
    return [BloscCodec(cname="zstd", clevel=9, shuffle="shuffle", typesize=itemsize), Crc32cCodec()]


def zarr_store_like(path: Any, mode: str = "r") -> Any:
    """Turn a path / URL into something ``zarr.open_group(store=...)`` accepts; store objects pass through.

    Local paths -> ``LocalStore``; ``*.zip`` -> ``ZipStore`` (read-only); ``s3://``, ``https://``, ``memory://`` ...
    -> ``FsspecStore.from_url`` (needs the matching fsspec filesystem installed). See ``kdpc.records.remote``.
    """
    return _remote.zarr_store(path, mode)


def _grid(arr: Any) -> list[tuple[int, ...]]:
    """Every chunk coordinate of a zarr array, in C order."""
    import itertools
    import math

    return list(itertools.product(*(range(math.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks))))


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


class ZarrBackend(Backend):
    kind = "zarr"

    def __init__(self, group: Any, location: str, local: Path | None) -> None:
        self.group = group
        self.location = location
        self.local = local
        self._arrays: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._present: set[str] = set()  # chunk keys seen to exist (remote stores: saves repeated look-ups)

    # -------------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: Any, mode: str = "r") -> "ZarrBackend":
        import zarr

        lp = local_path(path)
        if lp is not None and not lp.exists():
            raise KdpcError(f"no record store at {lp}")
        if mode != "r" and (is_url(path) or _remote.is_zip(path)):
            raise KdpcError(f"{describe(path)}: remote and packed stores open read-only; write a local store and "
                            "`kdpc records copy` it there")
        try:
            group = zarr.open_group(store=zarr_store_like(path, mode), mode="r" if mode == "r" else "r+")
        except KdpcError:
            raise
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise KdpcError(f"no record store at {describe(path)}") from None
        except Exception as exc:  # not a zarr group, unreadable metadata, unreachable server...
            raise KdpcError(f"{describe(path)} is not a readable kdpc record store ({_cause(exc)})") from None
        if HEADER_ATTR not in group.attrs:
            raise KdpcError(f"{describe(path)} is a zarr group but not a kdpc record store (no '{HEADER_ATTR}' attribute)")
        return cls(group, describe(path), lp)

    @classmethod
    def create(cls, path: Path, header: StoreHeader, labels: np.ndarray) -> "ZarrBackend":
        import zarr

        group = zarr.open_group(
            store=zarr_store_like(path, "w"),
            mode="w-",
            zarr_format=3,
            attributes={HEADER_ATTR: header.to_dict(), COMPLETE_ATTR: False},
        )
        codec = header.codec_obj()
        out = group.create_group(OUTPUT_GROUP, attributes=codec.config())
        for spec in array_specs(header):
            parent, name = (out, spec.name.split("/", 1)[1]) if spec.name.startswith(OUTPUT_GROUP + "/") else (group, spec.name)
            parent.create_array(
                name,
                shape=spec.shape,
                dtype=spec.dtype,
                chunks=spec.chunks,
                compressors=zarr_compressors(spec.dtype),
                fill_value=0,
                dimension_names=spec.dims,
                config={"write_empty_chunks": True},
            )
        backend = cls(group, str(path), path)
        backend._array(LABELS)[:] = labels
        backend._array(BLOCKS_DONE)[:] = 0  # every flag chunk exists from the start
        return backend

    # ------------------------------------------------------------------------------------------- metadata
    def _array(self, name: str) -> Any:
        arr = self._arrays.get(name)
        if arr is None:
            with self._lock:
                arr = self._arrays.get(name)
                if arr is None:
                    try:
                        arr = self.group[name]
                    except KeyError:
                        raise KdpcError(f"record store {self.location} has no array {name!r}; it is damaged") from None
                    # a runtime setting, not stored in the metadata: write every chunk, even all-zero ones, so a
                    # missing chunk object always means damage
                    arr = arr.with_config({"write_empty_chunks": True})
                    self._arrays[name] = arr
        return arr

    def header_dict(self) -> dict:
        return dict(self.group.attrs[HEADER_ATTR])

    def complete_attr(self) -> bool:
        return bool(self.group.attrs.get(COMPLETE_ATTR, False))

    def blocks_done(self) -> np.ndarray:
        return np.asarray(self.read(BLOCKS_DONE), dtype=np.uint8)

    def output_attrs(self) -> dict:
        try:
            return dict(self.group[OUTPUT_GROUP].attrs)
        except KeyError:
            return {}

    def has_array(self, name: str) -> bool:
        import zarr

        try:
            return isinstance(self.group[name], zarr.Array)
        except KeyError:
            return False

    def array_meta(self, name: str) -> tuple[tuple[int, ...], str, tuple[int, ...]]:
        arr = self._array(name)
        return tuple(arr.shape), str(arr.dtype), tuple(arr.chunks)

    def checksum_problem(self, name: str) -> str | None:
        arr = self._array(name)
        if getattr(arr, "shards", None):
            return "is sharded (kdpc stores use plain chunks)"
        codecs = [c.to_dict()["name"] for c in arr.metadata.codecs]
        if not codecs or codecs[-1] not in ("crc32c",):
            return f"has codecs {codecs} that do not end in crc32c, so corrupted chunks would go unnoticed"
        return None

    # ----------------------------------------------------------------------------------------------- data
    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        arr = self._array(name)
        try:
            return np.asarray(arr[slice(start, stop)])
        except Exception as exc:  # checksum mismatch, decompression error, truncated object...
            raise self._locate(name, arr.shape[0], arr.chunks[0], start, stop, exc) from None

    def _chunk_key(self, name: str, index: int) -> str:
        arr = self._array(name)
        coords = (index,) + (0,) * (arr.ndim - 1)
        return f"{arr.store_path.path}/{arr.metadata.encode_chunk_key(coords)}"

    def missing_chunks(self, name: str, indices: Iterable[int]) -> list[int]:
        indices = list(indices)
        if not indices:
            return []
        arr = self._array(name)
        keys = {i: self._chunk_key(name, i) for i in indices}
        if self.local is not None and not str(self.local).lower().endswith(".zip"):
            return [i for i, k in keys.items() if not (self.local / k).is_file()]
        todo = [k for k in keys.values() if k not in self._present]
        if todo:  # zip: one listing; object stores: a listing of the array; HTTP: one HEAD per chunk (no listing)
            self._present |= _remote.existing_keys(arr.store_path.store, todo, arr.store_path.path + "/")
        return [i for i, k in keys.items() if k not in self._present]

    def bytes_on_disk(self) -> int | None:
        if self.local is not None and not _remote.is_zip(self.local):
            return disk_usage(self.local)
        if self.local is not None:
            return self.local.stat().st_size  # a pack: the file is what is sent around
        store = self.group.store_path.store
        try:
            if _remote.lists_cheaply(store):
                return int(_sync(store.getsize_prefix(self.group.store_path.path)))
            meta, chunks = self.object_keys(StoreHeader.from_dict(self.header_dict()))
            return self._sizes(meta + [k for keys in chunks.values() for k in keys])
        except Exception:  # noqa: BLE001 - a store without listing/sizes
            return None

    def array_bytes(self, name: str) -> int | None:
        if self.local is not None and (self.local / name).is_dir():
            return disk_usage(self.local / name)
        try:
            if _remote.lists_cheaply(self.group.store_path.store):
                return int(self._array(name).nbytes_stored())
            arr = self._array(name)
            return self._sizes([f"{name}/zarr.json"] + [f"{name}/{arr.metadata.encode_chunk_key(c)}" for c in _grid(arr)])
        except Exception:  # noqa: BLE001
            return None

    def _sizes(self, keys: list[str]) -> int:
        """Summed object sizes of known keys (HEAD requests on HTTP, where nothing can be listed)."""
        store = self.group.store_path.store
        prefix = self.group.store_path.path
        keys = [f"{prefix}/{k}" if prefix else k for k in keys]
        return int(sum(_sync(_remote._gather_limited([store.getsize(k) for k in keys], 16))))

    def object_keys(self, header: StoreHeader) -> tuple[list[str], dict[str, list[str]]]:
        """Every object of the store by key (relative to the store root), derived from the header and the arrays'
        metadata, never from a listing: ``(metadata keys, {array name: chunk keys})``. The root ``zarr.json`` comes
        first; chunk keys are in chunk order (chunk ``b`` of a per-record array is block ``b``)."""
        meta = ["zarr.json", f"{OUTPUT_GROUP}/zarr.json"]
        chunks: dict[str, list[str]] = {}
        for spec in array_specs(header):
            arr = self._array(spec.name)
            meta.append(f"{spec.name}/zarr.json")
            chunks[spec.name] = [f"{spec.name}/{arr.metadata.encode_chunk_key(c)}" for c in _grid(arr)]
        return meta, chunks

    def close(self) -> None:
        if _remote.is_zip(self.location):  # a zip keeps its file open; other stores hold no OS handle worth closing
            try:
                self.group.store_path.store.close()
            except Exception:  # noqa: BLE001 - closing twice, or a store without close
                pass

    # --------------------------------------------------------------------------------------------- writing
    def write_block(self, block: int, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        for name, values in arrays.items():
            self._array(name)[start:stop] = values
        self._array(BLOCKS_DONE)[block] = 1  # only after every array of the block is stored

    def finalize(self, header: StoreHeader) -> None:
        self.group.update_attributes({COMPLETE_ATTR: True})


# --------------------------------------------------------------------------------------------------- hdf5
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

    def _file(self) -> Any:
        import h5py

        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise KdpcError(f"cannot open HDF5 record store {self.path} ({_cause(exc)}); it is damaged or not HDF5") from None

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
                return np.asarray(ds[slice(start, stop)])
            except (OSError, ValueError, RuntimeError) as exc:
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
                raise StoreCorruptError(name, 0, _cause(exc)) from None
        start, stop, _ = slice(start, stop).indices(spec.shape[0])
        out = np.zeros((max(stop - start, 0), *spec.tail), dtype=spec.dtype)
        c = self.header.chunk_records
        for b in range(start // c, (stop - 1) // c + 1 if stop > start else start // c):
            p = self.part_path(b)
            if not p.is_file():
                continue
            b0, b1 = self.header.block_range(b)
            lo, hi = max(start, b0), min(stop, b1)
            try:
                with h5py.File(p, "r") as f:
                    out[lo - start : hi - start] = f[name][lo - b0 : hi - b0]
            except (OSError, KeyError, ValueError) as exc:
                raise StoreCorruptError(name, b, f"part file {p.name}: {_cause(exc)}") from None
        return out

    def missing_chunks(self, name: str, indices: Iterable[int]) -> list[int]:
        if self.specs()[name].per != "record":
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

    def write_block(self, block: int, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        import h5py

        final = self.part_path(block)
        tmp = self.dir / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["block"] = block
                f.attrs["start"] = start
                f.attrs["stop"] = stop
                for name, values in arrays.items():
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
                    b0, b1 = header.block_range(b)
                    with h5py.File(self.part_path(b), "r") as part:
                        for s in record_array_specs(header):
                            try:
                                datasets[s.name][b0:b1] = part[s.name][...]
                            except (OSError, KeyError, ValueError) as exc:
                                raise KdpcError(
                                    f"part file {self.part_path(b)} is damaged ({_cause(exc)}); delete it and run "
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


# ------------------------------------------------------------------------------------------------ opening
def open_store(path: Any, mode: str = "r") -> Backend:
    """Open an existing store for reading (``mode="r"``) or for adding blocks (``"r+"``).

    ``path``: a local path (``.h5``/``.hdf5`` -> HDF5, else zarr), a ``file://``/``s3://``/``https://``... URL or
    a ``*.zip`` (zarr, read-only), or a zarr ``StoreLike`` object (``zarr.storage.*Store``, fsspec mapper).
    An HDF5 store still being recorded opens as its ``.parts`` folder.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"open_store mode must be 'r' or 'r+', got {mode!r}")
    if is_h5_path(path):
        p = local_path(path)
        if p is None:
            raise KdpcError(f"{path}: HDF5 stores must be local files; use a zarr store for remote records")
        if p.is_file():
            if mode != "r":
                raise KdpcError(f"{p} is a finished HDF5 store; it cannot take more blocks")
            return H5FileBackend(p)
        if parts_dir(p).is_dir():
            return H5PartsBackend(p)
        raise KdpcError(f"no record store at {p} (nor a {PARTS_SUFFIX} folder of one being recorded)")
    return ZarrBackend.open(path, mode)


def read_header(backend: Backend) -> StoreHeader:
    """The store's header, validated (unknown schema version -> ``KdpcError``)."""
    return StoreHeader.from_dict(backend.header_dict())

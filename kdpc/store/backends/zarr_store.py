"""The zarr v3 backend (the default): written in place, one chunk per block, crc32c on every chunk."""

from __future__ import annotations

import itertools
import math
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...errors import KdpcError, exception_line
from .. import locations
from ..schema import BLOCKS_DONE, COMPLETE_ATTR, COPYING_ATTR, HEADER_ATTR, LABELS, OUTPUT_GROUP, StoreHeader
from ..schema import array_specs
from .base import Backend, StoreCorruptError
from .bounded import install as install_bounded_codecs
from .files import disk_usage

ZSTD_LEVEL = 9  # measured: levels 15-22 gain < 0.1 B/record on 40-class u8log records
install_bounded_codecs()


def zarr_compressors(dtype: str) -> list:
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    itemsize = np.dtype(dtype).itemsize
    if itemsize == 1:
        return [ZstdCodec(level=ZSTD_LEVEL, checksum=False), Crc32cCodec()]
    return [BloscCodec(cname="zstd", clevel=9, shuffle="shuffle", typesize=itemsize), Crc32cCodec()]



def _grid(arr: Any) -> list[tuple[int, ...]]:
    """Every chunk coordinate of a zarr array, in C order."""
    return list(itertools.product(*(range(math.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks))))


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

        lp = locations.local_path(path)
        if lp is not None and not lp.exists():
            raise KdpcError(f"no record store at {lp}")
        if mode != "r" and locations.is_zip(path):
            raise KdpcError(f"{locations.redact(path)}: packed stores open read-only; unpack it to write to it")
        try:
            group = zarr.open_group(store=locations.zarr_store(path, mode), mode="r" if mode == "r" else "r+")
        except KdpcError:
            raise
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise KdpcError(f"no record store at {locations.redact(path)}") from None
        except Exception as exc:  # not a zarr group, unreadable metadata, unreachable server...
            raise KdpcError(f"{locations.redact(path)} is not a readable kdpc record store ({exception_line(exc)})") from None
        if HEADER_ATTR not in group.attrs:
            raise KdpcError(f"{locations.redact(path)} is a zarr group but not a kdpc record store (no '{HEADER_ATTR}' attribute)")
        return cls(group, locations.redact(path), lp)

    @classmethod
    def create(cls, path: Any, header: StoreHeader, labels: np.ndarray) -> "ZarrBackend":
        import zarr

        group = zarr.open_group(
            store=locations.zarr_store(path, "w"),
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
        backend = cls(group, locations.redact(path), locations.local_path(path))
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
                    arr = self._member(name)
                    if arr is None:
                        raise KdpcError(f"record store {self.location} has no array {name!r}; it is damaged") from None
                    # a runtime setting, not stored in the metadata: write every chunk, even all-zero ones, so a
                    # missing chunk object always means damage
                    arr = arr.with_config({"write_empty_chunks": True})
                    self._arrays[name] = arr
        return arr

    def _member(self, name: str) -> Any:
        """The array or group ``name``, None where there is none; unreadable metadata is damage (one line)."""
        try:
            return self.group[name]
        except KeyError:
            return None
        except Exception as exc:  # malformed JSON, bad encoding, a damaged zip member...
            raise KdpcError(f"record store {self.location} is damaged: the metadata of {name!r} is unreadable "
                            f"({exception_line(exc)}); restore it from a copy or record it again") from None

    def header_dict(self) -> dict:
        header = self.group.attrs.get(HEADER_ATTR)
        if not isinstance(header, dict):
            raise KdpcError(f"record store {self.location} is damaged: its header is not a JSON object")
        return dict(header)

    def copying_attr(self) -> bool:
        return bool(self.group.attrs.get(COPYING_ATTR, False))

    def complete_attr(self) -> bool:
        return bool(self.group.attrs.get(COMPLETE_ATTR, False))

    def blocks_done(self) -> np.ndarray:
        # a missing flag chunk reads as 0, "not done" (plain zarr drops all-zero chunks), never as done
        return np.asarray(self.read(BLOCKS_DONE), dtype=np.uint8)

    def output_attrs(self) -> dict:
        group = self._member(OUTPUT_GROUP)
        return {} if group is None else dict(group.attrs)

    def has_array(self, name: str) -> bool:
        import zarr

        return isinstance(self._member(name), zarr.Array)

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
            self._present |= locations.existing_keys(arr.store_path.store, todo, arr.store_path.path + "/")
        return [i for i, k in keys.items() if k not in self._present]

    def bytes_on_disk(self) -> int | None:
        if self.local is not None and not locations.is_zip(self.local):
            return disk_usage(self.local)
        if self.local is not None:
            return self.local.stat().st_size  # a pack: the file is what is sent around
        store = self.group.store_path.store
        try:
            if locations.lists_cheaply(store):
                return int(locations.sync(store.getsize_prefix(self.group.store_path.path)))
            meta, chunks = self.object_keys(StoreHeader.from_dict(self.header_dict()))
            return self._sizes(meta + [k for keys in chunks.values() for k in keys])
        except Exception:  # noqa: BLE001 - a store without listing/sizes
            return None

    def array_bytes(self, name: str) -> int | None:
        if self.local is not None and (self.local / name).is_dir():
            return disk_usage(self.local / name)
        try:
            if locations.lists_cheaply(self.group.store_path.store):
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
        return int(sum(locations.sync(locations.gather_limited([store.getsize(k) for k in keys], 16))))

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
        if locations.is_zip(self.location):  # a zip keeps its file open; other stores hold no OS handle worth closing
            try:
                self.group.store_path.store.close()
            except Exception:  # noqa: BLE001 - closing twice, or a store without close
                pass

    # --------------------------------------------------------------------------------------------- writing
    def write_block(self, block: int, arrays: dict[str, tuple[int, np.ndarray]]) -> None:
        for name, (first, values) in arrays.items():
            self._array(name)[first : first + values.shape[0]] = values
        self._array(BLOCKS_DONE)[block] = 1  # only after every array of the block is stored

    def finalize(self, header: StoreHeader) -> None:
        self.group.update_attributes({COMPLETE_ATTR: True})


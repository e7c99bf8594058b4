"""The interface every storage backend implements, and the one entry point, ``open_store``, that turns a path /
URL / zarr ``StoreLike`` into a backend (``.h5``/``.hdf5`` -> HDF5, else zarr). The writer, reader, verify and info
never touch zarr/h5py directly.

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

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...errors import KdpcError, exception_line
from ..schema import StoreHeader

H5_SUFFIXES = (".h5", ".hdf5")
PARTS_SUFFIX = ".parts"


class StoreCorruptError(KdpcError):
    """A chunk could not be read back (checksum mismatch, truncated/missing object, a size it may not have...).
    ``verify`` turns it into a problem line; anywhere else it is the one line the user sees."""

    def __init__(self, array: str, chunk: int | None, cause: str, location: str = "") -> None:
        self.array, self.chunk, self.cause, self.location = array, chunk, cause, location
        self.where = f"array {array!r}" + (f" chunk {chunk}" if chunk is not None else "")
        super().__init__(f"record store {location} is damaged: {self.where}: {cause}; run `kdpc records verify "
                         f"{location}` to list all damage, then restore it from a copy or record it again")



def is_h5_path(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(H5_SUFFIXES)


def parts_dir(path: str | os.PathLike) -> Path:
    """Where an HDF5 store being recorded keeps its finished blocks."""
    return Path(str(path) + PARTS_SUFFIX)


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
        return StoreCorruptError(name, first if first == last else None, exception_line(exc), self.location)

    def read_chunk(self, name: str, index: int) -> np.ndarray:
        shape, _dtype, chunks = self.array_meta(name)
        start = index * chunks[0]
        return self.read(name, start, min(start + chunks[0], shape[0]))

    def read_present(self, name: str, start: int, stop: int) -> np.ndarray:
        """``read`` that refuses missing chunk objects (zarr would return zeros for them)."""
        _shape, _dtype, chunks = self.array_meta(name)
        c = chunks[0]
        missing = self.missing_chunks(name, range(start // c, (max(stop, start + 1) - 1) // c + 1))
        if missing:
            raise StoreCorruptError(name, missing[0], "chunk object is missing", self.location)
        return self.read(name, start, stop)

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
    def write_block(self, block: int, arrays: dict[str, tuple[int, np.ndarray]]) -> None:
        """Write every array of block ``block`` (name -> (first row, values)), then flag the block done."""
        raise NotImplementedError

    def finalize(self, header: StoreHeader) -> None:
        raise NotImplementedError


    def check_structure(self, header: StoreHeader, remedy: str = "restore it from a copy or record it again") -> None:
        """Every array the header implies exists with the right shape, dtype and chunking, and checksums its chunks;
        else one KdpcError (a store whose header and arrays disagree is damaged, whatever a reader would allocate
        from either)."""
        from ..schema import array_specs

        for spec in array_specs(header):
            if not self.has_array(spec.name):
                raise KdpcError(f"{self.location} lacks array {spec.name!r}; it is damaged - {remedy}")
            shape, dtype, chunks = self.array_meta(spec.name)
            if tuple(shape) != spec.shape or np.dtype(dtype) != np.dtype(spec.dtype):
                raise KdpcError(f"{self.location}: array {spec.name!r} is {dtype}{list(shape)}, the header implies "
                                f"{spec.dtype}{list(spec.shape)}; it is damaged - {remedy}")
            if spec.per != "sample" and tuple(chunks)[0] != spec.chunks[0]:
                raise KdpcError(f"{self.location}: array {spec.name!r} has chunks {list(chunks)}, expected "
                                f"{list(spec.chunks)}; it is damaged - {remedy}")
            why = self.checksum_problem(spec.name)
            if why:  # without its checksum, damage to this array would read as data
                raise KdpcError(f"{self.location}: array {spec.name!r} {why}; it is damaged - {remedy}")

    def how_to_finish(self) -> str:
        """What finishes this incomplete store: the interrupted copy, or the interrupted recording."""
        if self.copying_attr():
            return "it is a copy that was interrupted - run the same `kdpc records copy` (or unpack) again"
        return "finish it with `kdpc record --resume`"

    def copying_attr(self) -> bool:
        return False

    # --- the completion rule (one place)
    def completeness(self, header: StoreHeader) -> tuple[bool, int, np.ndarray]:
        """``(complete, blocks_done, flags)``: complete means the ``complete`` attribute is true AND every block
        flag is 1."""
        flags = np.asarray(self.blocks_done(), dtype=np.uint8)
        done = int((flags == 1).sum())
        complete = bool(self.complete_attr()) and done == header.num_blocks and flags.shape == (header.num_blocks,)
        return complete, done, flags

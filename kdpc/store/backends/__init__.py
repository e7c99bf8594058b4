"""Storage backends behind one interface (``Backend``): zarr v3 (default) and HDF5. See ``base`` for the integrity
rules; ``open_store`` is the entry point."""

from __future__ import annotations

from typing import Any

from ...errors import KdpcError
from .. import locations
from ..schema import StoreHeader
from .base import PARTS_SUFFIX, Backend, StoreCorruptError, is_h5_path, parts_dir
from .h5_store import H5FileBackend, H5PartsBackend
from .zarr_store import ZarrBackend


def open_store(path: Any, mode: str = "r") -> Backend:
    """Open an existing store for reading (``mode="r"``) or for adding blocks (``"r+"``).

    ``path``: a local path (``.h5``/``.hdf5`` -> HDF5, else zarr), a ``file://``/``s3://``/``https://``... URL or
    a ``*.zip`` (zarr, read-only), or a zarr ``StoreLike`` object (``zarr.storage.*Store``, fsspec mapper).
    An HDF5 store still being recorded opens as its ``.parts`` folder.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"open_store mode must be 'r' or 'r+', got {mode!r}")
    if is_h5_path(path):
        p = locations.local_path(path)
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



__all__ = ["Backend", "H5FileBackend", "H5PartsBackend", "StoreCorruptError", "ZarrBackend", "is_h5_path",
           "open_store", "parts_dir", "read_header"]

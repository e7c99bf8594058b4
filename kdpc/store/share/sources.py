"""Opening the stores that sharing reads: complete ones only, read with every chunk present."""

from __future__ import annotations

from typing import Any

from ...errors import KdpcError
from ..backends import Backend, open_store, read_header
from ..schema import StoreHeader


def open_complete(path: Any, what: str = "source") -> tuple[Backend, StoreHeader]:
    backend = open_store(path, "r")
    header = read_header(backend)
    complete, done, _flags = backend.completeness(header)
    if not complete:
        raise KdpcError(f"{what} {backend.location} is incomplete ({done} of {header.num_blocks} blocks done); only "
                        f"complete stores can be shared - {backend.how_to_finish()}")
    return backend, header

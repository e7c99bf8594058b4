"""Bounded decompression: no chunk of a store is inflated beyond the size its array metadata gives it.

A store from someone else is untrusted input; a 64 KB chunk can claim to hold gigabytes. Before a compressed chunk
is decoded, the size it declares (blosc's header, zstd's frame header, the length an HDF5 deflate stream inflates
to) is checked against the chunk's expected size (chunk shape x item size); a chunk that claims more, or does not
say, is refused as damaged. The zarr codecs are kdpc subclasses of zarr's own, registered under the same names
(``zarr.config``), so the on-disk format is unchanged and plain zarr reads kdpc stores as before.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec

ZSTD_MAGIC = 0xFD2FB528
BLOSC_HEADER = 16


class ChunkTooLarge(ValueError):
    """A chunk declares (or inflates to) more bytes than its array allows."""


def expected_nbytes(chunk_spec) -> int:
    itemsize = chunk_spec.dtype.to_native_dtype().itemsize
    return int(math.prod(chunk_spec.shape)) * int(itemsize)


def blosc_declared_size(chunk: bytes) -> int:
    if len(chunk) < BLOSC_HEADER:
        raise ChunkTooLarge(f"blosc chunk of {len(chunk)} bytes is shorter than its header")
    nbytes, _blocksize, cbytes = struct.unpack_from("<III", chunk, 4)
    if cbytes != len(chunk):
        raise ChunkTooLarge(f"blosc chunk says it is {cbytes} bytes long but is {len(chunk)}")
    return nbytes


def zstd_declared_size(chunk: bytes) -> int:
    """The content size in the first zstd frame's header (the decoder allocates exactly that much)."""
    if len(chunk) < 5 or struct.unpack_from("<I", chunk, 0)[0] != ZSTD_MAGIC:
        raise ChunkTooLarge("not a zstd frame")
    descriptor = chunk[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    offset = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        raise ChunkTooLarge("zstd frame does not declare its size")
    if len(chunk) < offset + size:
        raise ChunkTooLarge("zstd frame header is truncated")
    value = int.from_bytes(chunk[offset:offset + size], "little")
    return value + 256 if size == 2 else value


def _check(declared: int, expected: int, what: str) -> None:
    if declared != expected:
        raise ChunkTooLarge(f"{what} chunk declares {declared} bytes, its array allows {expected}")


class BoundedBloscCodec(BloscCodec):
    def _decode_sync(self, chunk_bytes, chunk_spec):
        _check(blosc_declared_size(chunk_bytes.to_bytes()), expected_nbytes(chunk_spec), "blosc")
        return super()._decode_sync(chunk_bytes, chunk_spec)


class BoundedZstdCodec(ZstdCodec):
    def _decode_sync(self, chunk_bytes, chunk_spec):
        _check(zstd_declared_size(chunk_bytes.to_bytes()), expected_nbytes(chunk_spec), "zstd")
        return super()._decode_sync(chunk_bytes, chunk_spec)


def install() -> None:
    """Make zarr decode blosc and zstd chunks with the bounded codecs (idempotent)."""
    import zarr
    from zarr.registry import register_codec

    register_codec("blosc", BoundedBloscCodec)
    register_codec("zstd", BoundedZstdCodec)
    zarr.config.set({"codecs.blosc": f"{__name__}.BoundedBloscCodec", "codecs.zstd": f"{__name__}.BoundedZstdCodec"})


def inflate_bounded(data: bytes, expected: int) -> bytes:
    """zlib/deflate ``data`` (an HDF5 gzip chunk) to at most ``expected`` bytes; more is refused."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, expected + 1)
    except zlib.error as exc:
        raise ValueError(f"deflate stream is damaged ({exc})") from None
    if len(out) > expected or inflater.unconsumed_tail:
        raise ChunkTooLarge(f"deflate chunk inflates past the {expected} bytes its dataset allows")
    return out


def check_h5_chunks(dataset, start: int, stop: int) -> None:
    """The stored chunks of an HDF5 dataset that hold rows ``[start, stop)`` inflate to at most their chunk size
    (shuffle + gzip + fletcher32, as kdpc writes them; other filter chains are left to HDF5)."""
    if dataset.compression != "gzip" or dataset.chunks is None or stop <= start:
        return
    import h5py

    expected = int(np.prod(dataset.chunks)) * dataset.dtype.itemsize
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    deflate = filters.index(h5py.h5z.FILTER_DEFLATE)
    # filters after deflate in the pipeline (fletcher32) wrap its output: their 4-byte checksum trails the stream
    strip = 4 * sum(1 for f in filters[deflate + 1:] if f == h5py.h5z.FILTER_FLETCHER32)
    c = dataset.chunks[0]
    for first in range(start // c * c, stop, c):
        info = dataset.id.get_chunk_info_by_coord((first,) + (0,) * (dataset.ndim - 1))
        if info.byte_offset is None:
            continue  # never written: HDF5 returns the fill value (verify reports missing chunks itself)
        if info.size > expected + 1024 + expected // 100:  # deflate never needs much more than the raw size
            raise ChunkTooLarge(f"HDF5 chunk of {info.size} bytes is larger than its {expected}-byte content")
        mask, raw = dataset.id.read_direct_chunk(info.chunk_offset)
        if not mask & (1 << deflate):  # the (optional) deflate filter was applied to this chunk
            inflate_bounded(raw[: len(raw) - strip], expected)

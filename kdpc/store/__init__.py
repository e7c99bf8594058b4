"""The record store: a compressed, chunked, checksummed, self-describing store of (augmentation parameters,
teacher output) per view of every training sample. Format: docs/record-format.md.

Where things happen: ``schema`` is THE format (arrays, dtypes, chunks, record ids, header); ``writer`` is the one
write path; ``reader`` serves records from memory; ``verify`` and ``info`` check and describe; ``codecs`` encode
teacher outputs; ``backends`` hold the bytes (zarr, HDF5) wherever ``locations`` says; ``share`` copies, packs,
merges and converts.

    header = StoreHeader(num_samples=S, num_views=V, num_classes=C, class_names=..., augment=cfg.to_dict(), ...)
    with RecordWriter.open("run.zarr", header, mode="create", labels=labels) as w:
        for b in w.pending_blocks():
            w.write_block(b, {"sample": ..., "view": ..., "seed": ..., "scale": ..., "translate": ..., "logprobs": ...})
        w.finalize()
    reader = RecordReader("run.zarr"); batch = reader.get(np.array([0, 5, 7]))
"""

from .backends import open_store
from .codecs import DEFAULT_CODEC, DEFAULT_SEG_CODEC, codec_names, get_codec, get_point_codec
from .info import store_info
from .reader import RecordReader
from .schema import SCHEMA_VERSION, ArraySpec, StoreHeader, array_specs, column_names
from .verify import VerifyReport, verify_store
from .writer import RecordWriter

__all__ = [
    "ArraySpec",
    "DEFAULT_CODEC",
    "DEFAULT_SEG_CODEC",
    "RecordReader",
    "RecordWriter",
    "SCHEMA_VERSION",
    "StoreHeader",
    "VerifyReport",
    "array_specs",
    "codec_names",
    "column_names",
    "get_codec",
    "get_point_codec",
    "open_store",
    "store_info",
    "verify_store",
]

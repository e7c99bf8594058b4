"""The record store: a compressed, chunked, self-describing store of (augmentation parameters, teacher output)
per view of every training sample. Format: docs/record-format.md.

    header = StoreHeader(num_samples=S, num_views=V, num_classes=C, class_names=..., augment=cfg.to_dict(), ...)
    with RecordWriter.open("run.zarr", header, mode="create", labels=labels) as w:
        for b in w.pending_blocks():
            start, stop = w.block_range(b)
            w.write_block(b, {"sample": ..., "view": ..., "seed": ..., "scale": ..., "translate": ..., "logprobs": ...})
        w.finalize()
    reader = RecordReader("run.zarr"); batch = reader.get(np.array([0, 5, 7]))
"""

from .backends import open_store
from .codecs import DEFAULT_CODEC, Codec, codec_names, get_codec, kl_divergence, log_softmax, realistic_logprobs
from .codecs import DEFAULT_SEG_CODEC, PointCodec, get_point_codec, point_replay_check, realistic_seg_logprobs
from .info import store_info
from .reader import RecordReader, reader_throughput
from .schema import SCHEMA_VERSION, ArraySpec, StoreHeader, array_specs, column_names
from .verify import VerifyReport, verify_store
from .writer import RecordWriter, block_columns, write_synthetic_seg_store, write_synthetic_store

__all__ = [
    "ArraySpec",
    "Codec",
    "DEFAULT_CODEC",
    "DEFAULT_SEG_CODEC",
    "PointCodec",
    "RecordReader",
    "RecordWriter",
    "SCHEMA_VERSION",
    "StoreHeader",
    "VerifyReport",
    "array_specs",
    "block_columns",
    "codec_names",
    "column_names",
    "get_codec",
    "get_point_codec",
    "point_replay_check",
    "realistic_seg_logprobs",
    "kl_divergence",
    "log_softmax",
    "open_store",
    "reader_throughput",
    "realistic_logprobs",
    "store_info",
    "verify_store",
    "write_synthetic_seg_store",
    "write_synthetic_store",
]

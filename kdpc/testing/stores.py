"""Stores without a teacher, for tests and benchmarks (not public API): the ``write_block`` columns of a block,
whole synthetic stores from the synthetic teachers, a store's full contents for comparisons, and the reader's
throughput."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ..augment import AugmentConfig, draw_params
from ..store import RecordReader, RecordWriter, StoreHeader
from ..store.backends import open_store, read_header
from ..store.schema import FEATURES, array_specs, column_names
from .teachers import realistic_logprobs, realistic_seg_logprobs


def block_columns(header: StoreHeader, block: int, logprobs: np.ndarray,
                  features: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The ``write_block`` columns of ``block``: view-major ids, ``draw_params(augment, run_seed, stream=view_stream)`` and the rows
    ``logprobs[start:stop]`` of a full view-major ``[num_records, C]`` (partseg: ``[num_records, N, P]``) array, and
    ``features[start:stop]`` for partseg stores with anchors."""
    start, stop = header.block_range(block)
    samples, views = header.sample_view(np.arange(start, stop))
    params = draw_params(AugmentConfig.from_dict(header.augment), header.run_seed, samples, views,
                         stream=header.view_stream, num_samples=header.num_samples)
    cols = {"sample": samples, "view": views, **params, "logprobs": np.asarray(logprobs)[start:stop]}
    if FEATURES in column_names(header):
        if features is None:
            raise ValueError("this partseg store keeps anchor features: pass features [num_records, M, D]")
        cols[FEATURES] = np.asarray(features)[start:stop]
    return cols


def write_synthetic_store(
    path: str | os.PathLike,
    num_samples: int = 64,
    num_views: int = 3,
    num_classes: int = 10,
    *,
    blocks: Any = None,
    finalize: bool = True,
    mode: str = "create",
    seed: int = 0,
    logprobs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    **header_kwargs: Any,
) -> tuple[StoreHeader, np.ndarray, np.ndarray]:
    """Write a store from ``realistic_logprobs`` (no teacher needed): for tests, demos and benchmarks.

    ``blocks``: which blocks to write, in that order (default all, ascending); ``finalize=False`` leaves it
    incomplete. ``header_kwargs`` go to ``StoreHeader`` (codec, chunk_records, augment, run_seed, ...).
    Returns ``(header, logprobs float32 [R, C] as given to the writer, labels [S])``.
    """
    if logprobs is None:
        logprobs, gen_labels = realistic_logprobs(num_samples, num_views, num_classes, seed=seed)
        labels = gen_labels if labels is None else labels
    header_kwargs.setdefault("class_names", [f"class{i}" for i in range(num_classes)])
    header = StoreHeader(num_samples=num_samples, num_views=num_views, num_classes=num_classes, **header_kwargs)
    with RecordWriter.open(path, header, mode=mode, labels=labels) as writer:
        for b in writer.pending_blocks() if blocks is None else list(blocks):
            writer.write_block(b, block_columns(writer.header, b, logprobs))
        if finalize:
            writer.finalize()
        header = writer.header
    return header, np.asarray(logprobs), np.asarray(labels) if labels is not None else np.full(num_samples, -1)


def write_synthetic_seg_store(
    path: str | os.PathLike,
    num_samples: int = 16,
    num_views: int = 2,
    num_points: int = 64,
    *,
    num_anchors: int = 16,
    feature_dim: int = 8,
    blocks: Any = None,
    finalize: bool = True,
    mode: str = "create",
    seed: int = 0,
    logprobs: np.ndarray | None = None,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    **header_kwargs: Any,
) -> tuple[StoreHeader, np.ndarray, np.ndarray | None, np.ndarray]:
    """A partseg store from ``realistic_seg_logprobs`` (50 ShapeNetPart-like parts; no teacher needed).

    Returns ``(header, logprobs [R, N, P], features [R, M, D] or None, labels [S])`` as given to the writer."""
    if logprobs is None:
        logprobs, cats, gen_feats = realistic_seg_logprobs(num_samples, num_views, num_points, seed=seed,
                                                           feature_dim=feature_dim, num_anchors=num_anchors)
        labels = cats if labels is None else labels
        features = gen_feats if features is None else features
    num_classes = logprobs.shape[-1]
    header_kwargs.setdefault("class_names", [f"part{i}" for i in range(num_classes)])
    header = StoreHeader(task="partseg", num_samples=num_samples, num_views=num_views, num_classes=num_classes,
                         num_points=num_points, num_anchors=num_anchors, feature_dim=feature_dim if num_anchors else 0,
                         **header_kwargs)
    with RecordWriter.open(path, header, mode=mode, labels=labels) as writer:
        for b in writer.pending_blocks() if blocks is None else list(blocks):
            writer.write_block(b, block_columns(writer.header, b, logprobs, features))
        if finalize:
            writer.finalize()
        header = writer.header
    return header, np.asarray(logprobs), features, np.asarray(labels) if labels is not None else np.full(num_samples, -1)


def reader_throughput(path: Any, batch_size: int = 64, seconds: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Records/s served by ``get`` for random batches (after ``load_all``), plus the load time. For bench scripts."""
    t0 = time.perf_counter()
    reader = RecordReader(path)
    reader.load_all()
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    batches = rng.integers(0, reader.num_records, size=(4096, batch_size))
    n = 0
    t0 = time.perf_counter()
    while True:
        for b in batches:
            reader.get(b)
        n += len(batches)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return {"records_per_s": n * batch_size / elapsed, "batches_per_s": n / elapsed, "load_s": load_s,
            "records": float(reader.num_records)}


def store_contents(path: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Everything a store holds, for comparing two stores: the header (without ``created`` and ``generation``, the
    fields two identical recordings differ in, and the checksum over them) and every array, as stored (encoded),
    from either backend."""
    backend = open_store(path)
    try:
        header = read_header(backend)
        arrays = {spec.name: backend.read(spec.name) for spec in array_specs(header) if backend.has_array(spec.name)}
        described = header.to_dict()
        for key in ("created", "generation", "checksum"):
            described.pop(key, None)
        return described, arrays
    finally:
        backend.close()

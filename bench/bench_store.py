"""A record store that matches a dataset, filled with realistic teacher log-probs instead of a trained teacher.

Timing benchmarks need a store whose shape, codec and parameters are real; what the teacher said does not matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpc.augment import AugmentConfig
from kdpc.store import RecordWriter, StoreHeader
from kdpc.testing.stores import block_columns
from kdpc.testing.teachers import realistic_logprobs


def write_bench_store(path: Path, dataset, views: int = 2, codec: str | None = None, seed: int = 0,
                      feature_dim: int = 0) -> Path:
    """``feature_dim`` > 0 also keeps a random teacher embedding of that width per view, as `kdpc record` does."""
    kwargs: dict = {"codec": codec} if codec else {}
    if feature_dim:
        kwargs["feature_dim"] = feature_dim
    header = StoreHeader(num_samples=len(dataset), num_views=views, num_classes=dataset.num_classes,
                         class_names=list(dataset.class_names), augment=AugmentConfig().to_dict(), run_seed=seed,
                         num_points=dataset.num_points, teacher={"arch": "realistic-logits (bench)"},
                         dataset=dataset.describe(), **kwargs)
    logprobs, _ = realistic_logprobs(len(dataset), views, dataset.num_classes, seed=seed)
    features = (np.random.default_rng(seed).standard_normal((len(dataset) * views, feature_dim), dtype=np.float32)
                if feature_dim else None)
    with RecordWriter.open(str(path), header, mode="overwrite", labels=np.asarray(dataset.labels)) as writer:
        for block in writer.pending_blocks():
            writer.write_block(block, block_columns(writer.header, block, logprobs, features))
        writer.finalize()
    return Path(path)

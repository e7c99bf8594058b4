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


def write_bench_store(path: Path, dataset, views: int = 2, codec: str | None = None, seed: int = 0) -> Path:
    kwargs = {"codec": codec} if codec else {}
    header = StoreHeader(num_samples=len(dataset), num_views=views, num_classes=dataset.num_classes,
                         class_names=list(dataset.class_names), augment=AugmentConfig().to_dict(), run_seed=seed,
                         num_points=dataset.num_points, teacher={"arch": "realistic-logits (bench)"},
                         dataset=dataset.describe(), **kwargs)
    logprobs, _ = realistic_logprobs(len(dataset), views, dataset.num_classes, seed=seed)
    with RecordWriter.open(str(path), header, mode="overwrite", labels=np.asarray(dataset.labels)) as writer:
        for block in writer.pending_blocks():
            writer.write_block(block, block_columns(writer.header, block, logprobs))
        writer.finalize()
    return Path(path)

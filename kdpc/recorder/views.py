"""The views a recording run feeds its teacher: record r = (view r // S, sample r % S), params from the seed."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from torch.utils.data import Dataset, Sampler

from ..augment import AugmentConfig, draw_params, params_at, replay_view
from ..store.schema import sample_view


class RecordViews(Dataset):
    """Item r is the exact teacher input of record r (augmentation runs in DataLoader workers)."""

    def __init__(self, dataset: Any, augment: AugmentConfig, run_seed: int) -> None:
        self.dataset = dataset
        self.augment = augment
        self.run_seed = run_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, record: int) -> dict[str, Any]:
        return self.__getitems__([record])[0]

    def __getitems__(self, records: list[int]) -> list[dict[str, Any]]:
        """A whole batch at once: the parameters of all its views come from one vectorised draw."""
        samples, views = sample_view(np.asarray(records), len(self.dataset))
        params = draw_params(self.augment, self.run_seed, samples, views, stream="record",
                             num_samples=len(self.dataset))
        items = []
        for k, (record, sample) in enumerate(zip(records, samples)):
            points, parts = replay_view(self.dataset, int(sample), params_at(params, k))
            # every channel of the data: the teacher takes the ones it was built for (kdpc.teachers)
            item = {"points": points, "record": int(record), "label": int(self.dataset.labels[sample])}
            if parts is not None:
                item["parts"] = parts.astype(np.int64)
            items.append(item)
        return items


class BlockBatches(Sampler[list[int]]):
    """Batches of record indices that never straddle two blocks, so a block is finished by whole batches."""

    def __init__(self, block_ranges: list[tuple[int, int]], batch_size: int) -> None:
        self.block_ranges = block_ranges
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in self.block_ranges:
            for first in range(start, stop, self.batch_size):
                yield list(range(first, min(first + self.batch_size, stop)))

    def __len__(self) -> int:
        return sum(-(-(stop - start) // self.batch_size) for start, stop in self.block_ranges)

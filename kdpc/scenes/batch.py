"""Scene batches in Pointcept's convention: the points of all scenes concatenated, and ``offset`` [B] the running
end of each scene (``offset[-1]`` = total points), so scenes of any size share a batch without padding."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def collate_scenes(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """``coord`` [N, 3], ``feat`` [N, C], ``segment`` [N], ``offset`` [B] (int64) and ``index`` [B] (the scenes)."""
    counts = [int(item["coord"].shape[0]) for item in items]
    return {
        "coord": torch.from_numpy(np.concatenate([item["coord"] for item in items]).astype(np.float32, copy=False)),
        "feat": torch.from_numpy(np.concatenate([item["feat"] for item in items]).astype(np.float32, copy=False)),
        "segment": torch.from_numpy(np.concatenate([item["segment"] for item in items]).astype(np.int64, copy=False)),
        "offset": torch.tensor(np.cumsum(counts), dtype=torch.long),
        "index": torch.tensor([int(item["index"]) for item in items], dtype=torch.long),
    }


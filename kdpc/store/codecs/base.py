"""The interface every teacher-output codec implements, for classification records ``[n, C]`` and per-point
records ``[n, N, P]`` alike: ``arrays`` (what it stores), ``encode``, ``decode``, ``error_bound``, ``config`` (the
constants a plain zarr/h5py reader needs) and ``problems`` (consistency checks ``records verify`` runs)."""

from __future__ import annotations

import numpy as np

ArraysSpec = dict[str, tuple[tuple[int, ...], str]]


class OutputCodec:
    """Base of every codec. Subclasses set ``name`` (and ``lossless``, ``resolution``) and implement ``arrays``,
    ``encode``, ``decode`` and ``error_bound``."""

    name: str = ""
    lossless: bool = False
    resolution: str = ""  # one line for docs / info

    def spec(self) -> str:
        """The string that selects this codec (the registry rebuilds it from this)."""
        return self.name

    def config(self) -> dict:
        """Constants a plain zarr/h5py reader needs to decode; stored as attributes of the ``output`` group."""
        return {"codec": self.spec()}

    def arrays(self, num_classes: int) -> ArraysSpec:
        """Each stored array's per-record tail shape and dtype (after the record axis)."""
        raise NotImplementedError

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """float32 log-probabilities with ``logsumexp == 0`` along the last axis."""
        raise NotImplementedError

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        """Per-entry bound on ``|raw_decoded - logprobs|`` up to a per-row constant, before renormalisation;
        ``inf`` where the codec gives no per-entry guarantee."""
        raise NotImplementedError

    def problems(self, arrays: dict[str, np.ndarray], num_classes: int) -> list[str]:
        """What is inconsistent in a block of stored arrays (beyond NaN/inf, which every reader checks)."""
        return []

    def __repr__(self) -> str:
        return f"<codec {self.spec()}>"


def index_problems(index: np.ndarray, num_classes: int) -> list[str]:
    """Checks for stored class indices ``[..., K]`` (top-k codecs): in range, and distinct within a row."""
    idx = np.asarray(index).astype(np.int64)
    if idx.size and idx.max() >= num_classes:
        return [f"top-k class indices >= {num_classes}"]
    srt = np.sort(idx, axis=-1)
    if idx.shape[-1] > 1 and (srt[..., 1:] == srt[..., :-1]).any():
        return ["top-k class indices repeat within a record"]
    return []

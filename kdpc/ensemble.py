"""The ensemble rule of kdpc: the members' probabilities averaged with positive weights that sum to 1. ``kdpc
records merge`` writes an ensemble teacher's store by it and ``kdpc eval`` scores an ensemble of checkpoints by it,
so the accuracy a user checks before recording an ensemble is the accuracy of the answers the store will hold."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import KdpcError
from .store.codecs.numerics import logsumexp


def parse_weights(weights: Any, n: int, members: str = "members") -> list[float]:
    """One positive weight per member (a comma-separated string or a sequence), normalised; equal when ``None``.
    ``members`` names them in the error lines."""
    if weights is None:
        return [1.0 / n] * n
    if isinstance(weights, str):
        try:
            weights = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError:
            raise KdpcError(f"--weights takes numbers separated by commas, got {weights!r}") from None
    w = [float(x) for x in weights]
    if len(w) != n:
        raise KdpcError(f"--weights has {len(w)} values for {n} {members}")
    if not all(math.isfinite(x) and x > 0 for x in w):
        raise KdpcError(f"--weights must be positive numbers, got {w}")
    s = sum(w)
    return [x / s for x in w]


def mix_log_probs(log_probs: np.ndarray, weights: list[float]) -> np.ndarray:
    """``log sum_i w_i p_i`` over the first axis of ``log_probs`` ``[members, ..., classes]``, renormalised over the
    classes (float64)."""
    log_w = np.log(np.asarray(weights, dtype=np.float64)).reshape(-1, *([1] * (log_probs.ndim - 1)))
    mix = logsumexp(np.asarray(log_probs, dtype=np.float64) + log_w, axis=0)[0]
    return mix - logsumexp(mix, axis=-1)

"""Float64 numerics every codec (and the distillation checks) share."""

from __future__ import annotations

import numpy as np


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Row-wise log-sum-exp in float64, ``-inf`` for all ``-inf`` rows, keeping the reduced axis."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return m_safe + np.log(np.sum(np.exp(x - m_safe), axis=axis, keepdims=True))


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """float64 log-softmax."""
    x = np.asarray(x, dtype=np.float64)
    return x - logsumexp(x, axis=axis)


def kl_divergence(p_logprobs: np.ndarray, q_logprobs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Per-row ``KL(softmax(p / T) || softmax(q / T))`` in float64 (the distillation loss' direction)."""
    lp = log_softmax(np.asarray(p_logprobs, dtype=np.float64) / temperature)
    lq = log_softmax(np.asarray(q_logprobs, dtype=np.float64) / temperature)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (lp - lq), 0.0)
    return terms.sum(axis=-1)


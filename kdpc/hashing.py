"""Counter-based hashing (splitmix64): every "random" choice kdpc must be able to redo exactly - view parameters,
point subsets, anchors, projections, hold-outs, view schedules - is a pure function of integers, with no RNG state
and no dependence on the numpy version."""

from __future__ import annotations

from typing import Any

import numpy as np

MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of ``x + golden ratio``, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (np.asarray(x, dtype=np.uint64) + GOLDEN) & MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & MASK64
        return x ^ (x >> np.uint64(31))


def unit_interval(h: np.ndarray) -> np.ndarray:
    """U[0, 1) float64 from uint64 hashes (their top 53 bits)."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def stable_permutation(seed: int, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``seed``."""
    base = splitmix64(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return np.argsort(splitmix64(base ^ np.arange(n, dtype=np.uint64)), kind="stable")


def hash_arrays(digest: Any, arrays: list[tuple[str, np.ndarray, str]]) -> None:
    """Feed ``(name, array, dtype)`` triples into a hashlib ``digest``: name, dtype and shape, then the values cast
    to that dtype (little-endian dtypes give the same digest on every machine)."""
    for key, arr, dtype in arrays:
        arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype))
        digest.update(f"{key}:{dtype}:{list(arr.shape)}\n".encode())
        digest.update(memoryview(arr).cast("B"))

"""Voxel (grid) sampling and cropping of scene point sets, in numpy, exactly reproducible.

``voxel_sample`` keeps one point per voxel of edge ``grid_size``: the point whose seeded priority
``splitmix64(base(seed) ^ point index)`` is lowest, so which point a voxel keeps is a pure function of the seed.
Kept points come out in voxel-key order. ``crop_indices`` keeps at most ``max_points`` points nearest a centre
(euclidean: a sphere; horizontal Chebyshev: a floor-to-ceiling box). Both use only exact integer or elementwise
float32 operations and stable sorts, so a recorded view can be rebuilt bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..errors import KdpcError
from ..hashing import splitmix64

CROP_SHAPES = ("sphere", "box")
_MAX_VOXELS_PER_AXIS = 1 << 20


def voxel_coords(coord: np.ndarray, grid_size: float) -> np.ndarray:
    """Integer voxel coordinates ``[n, 3]`` (int64), shifted so that the smallest is 0 on every axis."""
    if not grid_size > 0:
        raise KdpcError(f"grid_size must be > 0, got {grid_size!r}")
    cells = np.floor(np.asarray(coord, dtype=np.float32) / np.float32(grid_size)).astype(np.int64)
    cells -= cells.min(axis=0, keepdims=True)
    if cells.size and int(cells.max()) >= _MAX_VOXELS_PER_AXIS:
        raise KdpcError(f"the scene spans more than {_MAX_VOXELS_PER_AXIS} voxels of {grid_size} along one axis; "
                        "are the coordinates in metres? (raise grid_size or rescale the data)")
    return cells


def voxel_keys(coord: np.ndarray, grid_size: float) -> np.ndarray:
    """One int64 key per point; equal keys mean the same voxel, and keys sort like (x, y, z) voxel coordinates."""
    cells = voxel_coords(coord, grid_size)
    return (cells[:, 0] << np.int64(40)) | (cells[:, 1] << np.int64(20)) | cells[:, 2]


def point_priority(seed: int, n: int) -> np.ndarray:
    """The seeded priority of each of ``n`` points (uint64); the lowest of a voxel is kept."""
    base = splitmix64(np.asarray([int(seed) & 0xFFFFFFFF], dtype=np.uint64) ^ np.uint64(0x6772696473616D70))
    return splitmix64(base ^ np.arange(n, dtype=np.uint64))


def voxel_sample(coord: np.ndarray, grid_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, inverse)``: ``kept`` [m] indices of the one point kept per voxel (in voxel-key order) and
    ``inverse`` [n], for every point, the position in ``kept`` of its voxel's point."""
    n = int(coord.shape[0])
    keys = voxel_keys(coord, grid_size)
    order = np.lexsort((point_priority(seed, n), keys))  # by voxel, then by priority
    sorted_keys = keys[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    kept = order[first]
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return kept.astype(np.int64), inverse


def crop_indices(coord: np.ndarray, max_points: int, centre_key: int, shape: str) -> np.ndarray:
    """Ascending indices of at most ``max_points`` points of ``coord`` nearest the point ``centre_key % n``:
    by euclidean distance (``sphere``) or by horizontal Chebyshev distance (``box``: a floor-to-ceiling column).
    Ties go to the lower index."""
    n = int(coord.shape[0])
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    if shape not in CROP_SHAPES:
        raise KdpcError(f"crop must be one of {', '.join(CROP_SHAPES)} or none, got {shape!r}")
    centre = coord[int(centre_key) % n]
    diff = (coord - centre).astype(np.float32)
    if shape == "sphere":
        dist = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2]
    else:
        dist = np.maximum(np.abs(diff[:, 0]), np.abs(diff[:, 1]))
    return np.sort(np.argsort(dist, kind="stable")[:max_points]).astype(np.int64)

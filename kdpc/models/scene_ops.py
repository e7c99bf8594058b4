"""Ops for scene models on concatenated points (Pointcept's convention: ``offset`` [B] = running end of each scene),
in pure, vectorised PyTorch: voxel grid coordinates, space-filling-curve serialisation (z-order and Hilbert),
voxel neighbour maps (a submanifold 3x3x3 convolution's gather), grid pooling, and the patch partition of serialised
points that patch attention runs on.

Grid coordinates are non-negative int64 below 2^16 per axis; a point's key packs ``(scene, x, y, z)`` into one int64
(scene in bits 48-62), so sorting by key sorts by scene first. Sorts are stable, so points sharing a voxel keep
their input order: a scene's outputs do not depend on the other scenes of its batch. Everything is deterministic
on a given device.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import KdpcError

AXIS_BITS = 16
ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
_AXIS_MAX = (1 << AXIS_BITS) - 1


def offset_to_counts(offset: Tensor) -> Tensor:
    return torch.diff(offset, prepend=offset.new_zeros(1))


def offset_to_batch(offset: Tensor) -> Tensor:
    counts = offset_to_counts(offset)
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offset.device), counts)


def counts_to_offset(counts: Tensor) -> Tensor:
    return torch.cumsum(counts, 0)


def grid_coords(coord: Tensor, batch: Tensor, num_scenes: int, grid_size: float) -> Tensor:
    """Voxel coordinates ``[N, 3]`` (int64) of edge ``grid_size``, counted from each scene's own minimum."""
    coord = coord.float()
    lows = torch.full((num_scenes, 3), float("inf"), device=coord.device)
    lows = lows.scatter_reduce(0, batch[:, None].expand(-1, 3), coord, "amin", include_self=True)
    grid = torch.floor((coord - lows[batch]) / grid_size).long()
    if grid.numel() and int(grid.max()) > _AXIS_MAX:
        raise KdpcError(f"a scene spans more than {_AXIS_MAX + 1} voxels of {grid_size} m along an axis; are the "
                        "coordinates in metres? (raise the model's grid_size)")
    return grid


def pack_keys(batch: Tensor, grid: Tensor) -> Tensor:
    return (batch << 48) | (grid[..., 0] << 32) | (grid[..., 1] << 16) | grid[..., 2]


def _spread_bits(v: Tensor) -> Tensor:
    """The low 16 bits of ``v`` moved to every third bit (bit i -> bit 3i)."""
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    return (v | (v << 2)) & 0x1249249249249249


def z_order(grid: Tensor) -> Tensor:
    """Morton code of ``grid [N, 3]`` (48 bits; x most significant within each level)."""
    return (_spread_bits(grid[:, 0]) << 2) | (_spread_bits(grid[:, 1]) << 1) | _spread_bits(grid[:, 2])


def hilbert(grid: Tensor, bits: int = AXIS_BITS) -> Tensor:
    """Hilbert index of ``grid [N, 3]`` (Skilling's transpose algorithm, vectorised; 3 * ``bits`` bits).

    Consecutive indices are face-adjacent voxels, so a run of the curve is a compact patch of space."""
    x = [grid[:, i].clone() for i in range(3)]
    q = 1 << (bits - 1)
    while q > 1:  # inverse undo of excess work
        p = q - 1
        for i in range(3):
            high = (x[i] & q) != 0
            t = (x[0] ^ x[i]) & p
            new0 = torch.where(high, x[0] ^ p, x[0] ^ t)
            if i:
                x[i] = torch.where(high, x[i], x[i] ^ t)
            x[0] = new0
        q >>= 1
    for i in (1, 2):  # Gray encode
        x[i] = x[i] ^ x[i - 1]
    t = torch.zeros_like(x[0])
    q = 1 << (bits - 1)
    while q > 1:
        t = torch.where((x[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    x = [xi ^ t for xi in x]
    code = torch.zeros_like(x[0])
    for b in range(bits - 1, -1, -1):
        for i in range(3):
            code = (code << 1) | ((x[i] >> b) & 1)
    return code


def serial_code(grid: Tensor, batch: Tensor, order: str) -> Tensor:
    """Sort key of every point along curve ``order`` (one of ``ORDERS``), scene first."""
    if order.endswith("-trans"):
        grid = grid[:, [1, 0, 2]]
    curve = order.removesuffix("-trans")
    if curve == "z":
        code = z_order(grid)
    elif curve == "hilbert":
        code = hilbert(grid)
    else:
        raise KdpcError(f"unknown serialisation order {order!r}; known: {', '.join(ORDERS)}")
    return (batch << 48) | code


def kernel_offsets(radius: int) -> Tensor:
    """The ``(2 radius + 1)^3`` voxel offsets of a cubic kernel, in lexicographic order (the centre in the middle)."""
    span = range(-radius, radius + 1)
    return torch.tensor(list(itertools.product(span, span, span)), dtype=torch.long)


def neighbour_map(grid: Tensor, batch: Tensor, radius: int = 1) -> Tensor:
    """``[N, (2 radius + 1)^3]``: for every point and every offset of a cubic kernel, the point in that voxel of the
    same scene, or ``N`` (a zero row callers append) where the voxel is empty. With several points in a voxel, one
    of them."""
    n = grid.shape[0]
    keys = pack_keys(batch, grid)
    sorted_keys, perm = keys.sort(stable=True)  # ties (points sharing a voxel): the lowest index wins
    query = grid[:, None, :] + kernel_offsets(radius).to(grid.device)[None]
    inside = ((query >= 0) & (query <= _AXIS_MAX)).all(-1)
    qkeys = pack_keys(batch[:, None], query.clamp(0, _AXIS_MAX))
    pos = torch.searchsorted(sorted_keys, qkeys.reshape(-1)).reshape(n, -1).clamp_(max=n - 1)
    found = inside & (sorted_keys[pos] == qkeys)
    return torch.where(found, perm[pos], torch.full_like(pos, n))


def gather_neighbours(x: Tensor, nbr: Tensor) -> Tensor:
    """``x [N, C]`` at ``nbr [N, K]`` -> ``[N, K, C]`` with zeros where ``nbr == N``."""
    padded = torch.cat([x, x.new_zeros(1, x.shape[1])])
    return padded[nbr.reshape(-1)].view(*nbr.shape, x.shape[1])


@dataclass
class Pooled:
    cluster: Tensor  # [N_fine]: the coarse point of every fine point
    grid: Tensor  # [M, 3]
    batch: Tensor  # [M]


def grid_pool(grid: Tensor, batch: Tensor, stride: int = 2) -> Pooled:
    """Merge the points of each ``stride``^3 block of voxels into one coarse point (coarse points in key order)."""
    keys = pack_keys(batch, torch.div(grid, stride, rounding_mode="floor"))
    unique, cluster = torch.unique(keys, sorted=True, return_inverse=True)
    coarse = torch.stack([(unique >> 32) & _AXIS_MAX, (unique >> 16) & _AXIS_MAX, unique & _AXIS_MAX], 1)
    return Pooled(cluster=cluster, grid=coarse, batch=unique >> 48)


def segment_max(x: Tensor, cluster: Tensor, num: int) -> Tensor:
    index = cluster[:, None].expand(-1, x.shape[1])
    return x.new_zeros(num, x.shape[1]).scatter_reduce(0, index, x, "amax", include_self=False)


def segment_mean(x: Tensor, cluster: Tensor, num: int) -> Tensor:
    index = cluster[:, None].expand(-1, x.shape[1])
    return x.new_zeros(num, x.shape[1]).scatter_reduce(0, index, x, "mean", include_self=False)


@dataclass
class Patches:
    """A partition of serialised points into patches of ``size`` consecutive points of one scene.

    ``index [P, size]`` the point in every slot (padding slots repeat a real point and are masked), ``valid
    [P, size]``, and ``slot [N]`` the flat slot (``patch * size + position``) of every point."""

    index: Tensor
    valid: Tensor
    slot: Tensor
    size: int

    @property
    def full(self) -> bool:
        return bool(self.valid.all())


def make_patches(code: Tensor, batch: Tensor, counts: Tensor, patch_size: int) -> Patches:
    n = code.shape[0]
    order = torch.argsort(code, stable=True)  # ties keep input order: a scene's result ignores its batch-mates
    size = max(1, min(patch_size, int(counts.max())))
    per_scene = torch.div(counts + size - 1, size, rounding_mode="floor")
    first_patch = torch.cumsum(per_scene, 0) - per_scene
    first_point = torch.cumsum(counts, 0) - counts
    scene = batch[order]
    rank = torch.arange(n, device=code.device) - first_point[scene]
    flat = (first_patch[scene] + torch.div(rank, size, rounding_mode="floor")) * size + rank % size
    total = int(per_scene.sum()) * size
    index = torch.zeros(total, dtype=torch.long, device=code.device)
    index[flat] = order
    valid = torch.zeros(total, dtype=torch.bool, device=code.device)
    valid[flat] = True
    slot = torch.empty(n, dtype=torch.long, device=code.device)
    slot[order] = flat
    return Patches(index=index.view(-1, size), valid=valid.view(-1, size), slot=slot, size=size)


class Level:
    """The points of one resolution of a U-Net: coordinates, voxel grid, scenes, and lazily the neighbour map and
    the patches of each serialisation order (computed once per forward, shared by every block at this level)."""

    def __init__(self, coord: Tensor, grid: Tensor, batch: Tensor, num_scenes: int, cluster: Tensor | None = None):
        self.coord = coord
        self.grid = grid
        self.batch = batch
        self.num_scenes = num_scenes
        self.cluster = cluster  # the previous (finer) level's points -> these points
        self.counts = torch.bincount(batch, minlength=num_scenes)
        self._nbr: Tensor | None = None
        self._patches: dict[tuple[str, int], Patches] = {}

    @property
    def num_points(self) -> int:
        return int(self.grid.shape[0])

    @property
    def neighbours(self) -> Tensor:
        if self._nbr is None:
            self._nbr = neighbour_map(self.grid, self.batch)
        return self._nbr

    def patches(self, order: str, patch_size: int) -> Patches:
        key = (order, patch_size)
        if key not in self._patches:
            self._patches[key] = make_patches(serial_code(self.grid, self.batch, order), self.batch, self.counts,
                                              patch_size)
        return self._patches[key]

    def pool(self, stride: int = 2) -> "Level":
        pooled = grid_pool(self.grid, self.batch, stride)
        m = pooled.grid.shape[0]
        coord = segment_mean(self.coord.float(), pooled.cluster, m)
        return Level(coord, pooled.grid, pooled.batch, self.num_scenes, cluster=pooled.cluster)

"""What the scene segmentation families share: the ``SceneSegModel`` interface (concatenated points + offsets in,
per-point logits out), input checks, and the U-Net pieces built on ``scene_ops``: the sparse 3x3x3 convolution,
grid pooling and unpooling."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import KdpcError
from .scene_ops import Level, gather_neighbours, grid_coords, offset_to_batch, segment_max


class SceneSegModel(nn.Module):
    """Semantic segmentation of whole scenes. ``forward(coord [N, 3], feat [N, in_channels], offset [B])`` ->
    logits ``[N, num_classes]``; ``forward_features`` gives the per-point features ``[N, num_features]`` the head
    reads (what relation distillation uses). ``offset`` is the running end of each scene (Pointcept's convention),
    so scenes of any sizes share a batch without padding; ``feat`` starts with xyz."""

    task = "semseg"
    head: nn.Module

    def __init__(self, num_classes: int, num_features: int, in_channels: int, grid_size: float) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise KdpcError(f"model option in_channels must be a positive integer, got {in_channels!r}")
        if isinstance(grid_size, bool) or not isinstance(grid_size, (int, float)) or not grid_size > 0:
            raise KdpcError(f"model option grid_size must be a voxel edge in metres > 0, got {grid_size!r}")
        self.num_classes = num_classes
        self.num_features = num_features
        self.in_channels = in_channels
        self.grid_size = float(grid_size)
        self.config: dict[str, Any] = {}

    def check_inputs(self, coord: Tensor, feat: Tensor, offset: Tensor) -> None:
        if coord.dim() != 2 or coord.shape[1] != 3 or not coord.is_floating_point():
            raise KdpcError(f"scene models take coord as floats [N, 3], got {coord.dtype} {list(coord.shape)}")
        if feat.dim() != 2 or feat.shape[0] != coord.shape[0] or feat.shape[1] != self.in_channels:
            raise KdpcError(f"this model takes feat [N={coord.shape[0]}, {self.in_channels}] (in_channels="
                            f"{self.in_channels}), got {list(feat.shape)}")
        if offset.dim() != 1 or offset.numel() < 1 or offset.is_floating_point():
            raise KdpcError(f"offset must be an integer tensor [B] of running scene ends, got {list(offset.shape)}")
        if int(offset[-1]) != coord.shape[0] or bool((torch.diff(offset, prepend=offset.new_zeros(1)) < 1).any()):
            raise KdpcError(f"offset must rise strictly and end at N={coord.shape[0]} (every scene has points), "
                            f"got {offset.tolist()[:8]}")

    def first_level(self, coord: Tensor, offset: Tensor) -> Level:
        batch = offset_to_batch(offset)
        num = int(offset.numel())
        return Level(coord, grid_coords(coord, batch, num, self.grid_size), batch, num)

    def forward_features(self, coord: Tensor, feat: Tensor, offset: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, coord: Tensor, feat: Tensor, offset: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(coord, feat, offset))


class SparseConv3(nn.Module):
    """A submanifold 3x3x3 convolution on voxelised points: each point mixes its 27 neighbour voxels (missing ones
    are zero) with one weight matrix per offset - spconv's ``SubMConv3d(k=3)``, as one gather and one GEMM."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(27 * in_channels, out_channels, bias=bias)

    def forward(self, x: Tensor, level: Level) -> Tensor:
        return self.linear(gather_neighbours(x, level.neighbours).flatten(1))


def norm_act(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(channels), nn.GELU())


class GridPool(nn.Module):
    """Down one level: project, then max over the points merged into each coarse voxel (PTv3's serialized pooling)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = norm_act(out_channels)

    def forward(self, x: Tensor, coarse: Level) -> Tensor:
        return self.norm(segment_max(self.proj(x), coarse.cluster, coarse.num_points))


class GridUnpool(nn.Module):
    """Up one level: the coarse features, projected, go back to their fine points and join the skip features."""

    def __init__(self, coarse_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(coarse_channels, out_channels), norm_act(out_channels))
        self.proj_skip = nn.Sequential(nn.Linear(skip_channels, out_channels), norm_act(out_channels))

    def forward(self, coarse_x: Tensor, skip_x: Tensor, coarse: Level) -> Tensor:
        return self.proj_skip(skip_x) + self.proj(coarse_x)[coarse.cluster]


class DropPath(nn.Module):
    """Stochastic depth per point (the residual branch of a random subset of points is dropped)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], 1).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


def stage_list(name: str, values: Any, stages: int) -> tuple[int, ...]:
    """A per-stage option: one int for every stage or a list with one entry per stage."""
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values] * stages
    if not isinstance(values, (list, tuple)) or len(values) != stages:
        raise KdpcError(f"model option {name} needs one entry per stage ({stages}), got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise KdpcError(f"model option {name} takes integers >= 0, got {values!r}")
    return tuple(int(v) for v in values)


def drop_path_rates(rate: float, depths: tuple[int, ...]) -> list[float]:
    total = max(1, sum(depths) - 1)
    return [rate * i / total for i in range(sum(depths))] if sum(depths) else []


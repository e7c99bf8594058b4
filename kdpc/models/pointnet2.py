"""PointNet++ (Qi et al., NeurIPS 2017), single-scale grouping: set abstraction with FPS + ball query.

Layer layout follows the widely used yanx27 PyTorch port. Centroid counts are published for a fixed input size
(512/128 of 1024 points for classification); here they are given at ``num_points`` and scaled to the actual N
of each batch, so a model works on any N (FPS starts at index 0: deterministic, but not permutation invariant).

* ``PointNet2Cls``: SA stages, a group-all SA stage, MLP head.
* ``PointNet2Seg``: part segmentation (yanx27 ``part_seg_ssg``): the same SA encoder, a feature propagation
  decoder, the category one-hot joining the full-resolution skip features.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KdpcError
from .base import (
    PointClsModel,
    PointSegModel,
    check_in_channels,
    check_points,
    check_positive,
    check_same_length,
    check_widths,
    mlp_head,
    shared_mlp,
)
from .ops import (
    ball_query,
    broadcast_to_points,
    farthest_point_sample,
    index_points,
    interpolate_features,
    scaled_count,
)
from .registry import build, register_model


class SetAbstraction(nn.Module):
    """Sample centroids, group their ball neighbourhoods, shared MLP over ``[xyz_j - centre, feats_j]``, max-pool.

    With ``radius=None`` it is the "group all" layer: one group of every point with absolute xyz. In the
    grouped layer the first linear, ``W_x (xyz_j - c) + W_f feats_j``, runs once per input point and is gathered
    afterwards (same weights and maths as the reference, far fewer multiply-adds).
    """

    def __init__(self, radius: float | None, nsample: int | None, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.radius = radius
        self.nsample = nsample
        self.out_channels = widths[-1]
        self.mlp = shared_mlp(in_channels + 3, widths)

    def forward(self, xyz: Tensor, feats: Tensor | None, npoint: int = 1) -> tuple[Tensor, Tensor]:
        """``xyz [B, N, 3]``, ``feats [B, N, C] | None`` -> ``new_xyz [B, S, 3]``, ``new_feats [B, S, C']``."""
        points = xyz if feats is None else torch.cat([xyz, feats], dim=-1)
        if self.radius is None or self.nsample is None:
            return xyz.new_zeros(xyz.shape[0], 1, 3), self.mlp(points).amax(1, keepdim=True)
        new_xyz = index_points(xyz, farthest_point_sample(xyz, npoint))
        idx = ball_query(self.radius, self.nsample, xyz, new_xyz)
        first = self.mlp[0]
        per_point = F.linear(points, first.linear.weight, first.linear.bias)
        centre = F.linear(new_xyz, first.linear.weight[:, :3])
        grouped = first.finish(index_points(per_point, idx) - centre.unsqueeze(2))
        return new_xyz, self.mlp[1:](grouped).amax(2)


class FeaturePropagation(nn.Module):
    """Interpolate coarse features onto finer points (3-NN inverse distance), concat skip features, shared MLP."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.out_channels = widths[-1]
        self.mlp = shared_mlp(in_channels, widths)

    def forward(self, xyz_dst: Tensor, xyz_src: Tensor, feats_dst: Tensor | None, feats_src: Tensor) -> Tensor:
        x = interpolate_features(xyz_dst, xyz_src, feats_src)
        if feats_dst is not None:
            x = torch.cat([feats_dst, x], dim=-1)
        return self.mlp(x)


class PointNet2Encoder(nn.Module):
    """Set abstraction stages followed by an optional group-all stage; returns every level for decoders."""

    def __init__(
        self,
        in_channels: int,
        npoints: Sequence[int],
        radii: Sequence[float],
        nsamples: Sequence[int],
        sa_widths: Sequence[Sequence[int]],
        global_widths: Sequence[int] | None,
        num_points: int,
    ) -> None:
        super().__init__()
        check_same_length(npoints=npoints, radii=radii, nsamples=nsamples, sa_widths=sa_widths)
        check_positive("num_points", num_points)
        for n in list(npoints) + list(nsamples):
            check_positive("npoints/nsamples", n)
        self.npoints = tuple(npoints)
        self.num_points = num_points
        self.stages = nn.ModuleList()
        channels = in_channels
        for radius, nsample, widths in zip(radii, nsamples, sa_widths):
            stage = SetAbstraction(float(radius), nsample, channels, check_widths("sa_widths", widths))
            self.stages.append(stage)
            channels = stage.out_channels
        self.global_stage = None
        if global_widths is not None:
            self.global_stage = SetAbstraction(None, None, channels, check_widths("global_widths", global_widths))
            channels = self.global_stage.out_channels
        self.out_channels = channels

    def forward(self, xyz: Tensor, feats: Tensor | None) -> list[tuple[Tensor, Tensor | None]]:
        levels: list[tuple[Tensor, Tensor | None]] = [(xyz, feats)]
        n = xyz.shape[1]
        for stage, npoint in zip(self.stages, self.npoints):
            xyz, feats = stage(xyz, feats, scaled_count(npoint, n, self.num_points, upper=xyz.shape[1]))
            levels.append((xyz, feats))
        if self.global_stage is not None:
            levels.append(self.global_stage(xyz, feats))
        return levels


class PointNet2Cls(PointClsModel):
    """PointNet++ SSG classifier: SA stages -> group-all SA -> MLP head."""

    def __init__(
        self,
        num_classes: int,
        npoints: Sequence[int] = (512, 128),
        radii: Sequence[float] = (0.2, 0.4),
        nsamples: Sequence[int] = (32, 64),
        sa_widths: Sequence[Sequence[int]] = ((64, 64, 128), (128, 128, 256)),
        global_widths: Sequence[int] = (256, 512, 1024),
        head: Sequence[int] = (512, 256),
        dropout: float = 0.4,
        num_points: int = 1024,
        in_channels: int = 3,
    ) -> None:
        # Extra input channels (normals, colour) are the first level's point features, as in the reference.
        in_channels = check_in_channels(in_channels)
        encoder = PointNet2Encoder(in_channels - 3, npoints, radii, nsamples, sa_widths, global_widths, num_points)
        super().__init__(num_classes, encoder.out_channels, in_channels)
        self.encoder = encoder
        self.head = mlp_head(encoder.out_channels, check_widths("head", head, allow_empty=True), num_classes, dropout)

    def forward_features(self, x: Tensor) -> Tensor:
        check_points(x, self.in_channels)
        extra = x[..., 3:] if self.in_channels > 3 else None
        _, feats = self.encoder(x[..., :3].contiguous(), extra)[-1]
        assert feats is not None
        return feats.squeeze(1)


class PointNet2Seg(PointSegModel):
    """PointNet++ SSG part segmentation. ``fp_widths`` run coarsest -> finest (one per SA stage + global)."""

    def __init__(
        self,
        num_classes: int,
        num_categories: int = 0,
        npoints: Sequence[int] = (512, 128),
        radii: Sequence[float] = (0.2, 0.4),
        nsamples: Sequence[int] = (32, 64),
        sa_widths: Sequence[Sequence[int]] = ((64, 64, 128), (128, 128, 256)),
        global_widths: Sequence[int] = (256, 512, 1024),
        fp_widths: Sequence[Sequence[int]] = ((256, 256), (256, 128), (128, 128, 128)),
        head: Sequence[int] = (128,),
        dropout: float = 0.5,
        num_points: int = 2048,
        in_channels: int = 3,
    ) -> None:
        # The input (xyz and any extra channels) doubles as the first level's features, as in the reference.
        in_channels = check_in_channels(in_channels)
        encoder = PointNet2Encoder(in_channels, npoints, radii, nsamples, sa_widths, global_widths, num_points)
        if len(fp_widths) != len(encoder.stages) + 1:
            raise KdpcError(f"model option fp_widths needs {len(encoder.stages) + 1} entries (one per SA stage and "
                            f"the global stage), got {len(fp_widths)}")
        fp_widths = [check_widths("fp_widths", w) for w in fp_widths]
        super().__init__(num_classes, fp_widths[-1][-1], num_categories, in_channels)
        self.encoder = encoder
        # Skip channels per level, finest first; level 0 carries [one-hot, xyz, input] like the reference.
        skips = [num_categories + 3 + self.in_channels] + [s.out_channels for s in encoder.stages]
        self.decoders = nn.ModuleList()
        channels = encoder.out_channels
        for widths, skip in zip(fp_widths, reversed(skips)):
            self.decoders.append(FeaturePropagation(channels + skip, widths))
            channels = widths[-1]
        self.head = mlp_head(channels, check_widths("head", head, allow_empty=True), num_classes, dropout)

    def forward_features(self, x: Tensor, category: Tensor | None = None) -> Tensor:
        check_points(x, self.in_channels)
        onehot = self.category_onehot(category, x)
        xyz = x[..., :3].contiguous()
        levels = self.encoder(xyz, x)
        feats = levels[-1][1]
        assert feats is not None
        for i, fp in enumerate(self.decoders):
            level = len(levels) - 2 - i
            xyz, skip = levels[level]
            if level == 0:
                columns = [xyz, x] if onehot is None else [broadcast_to_points(onehot, x.shape[1]), xyz, x]
                skip = torch.cat(columns, dim=-1)
            feats = fp(xyz, levels[level + 1][0], skip, feats)
        return feats


@register_model(published_params=1_470_000)
def pointnet2_ssg(num_classes: int, **cfg: Any) -> PointNet2Cls:
    """PointNet++ single-scale grouping classifier (512/128 centroids at 1024 points), ~1.47M params."""
    return build(PointNet2Cls, num_classes, cfg)


@register_model
def pointnet2_tiny(num_classes: int, **cfg: Any) -> PointNet2Cls:
    """Tiny PointNet++ SSG for CPU demos (64/16 centroids at 256 points)."""
    return build(
        PointNet2Cls, num_classes, cfg, npoints=(64, 16), radii=(0.25, 0.5), nsamples=(16, 32),
        sa_widths=((32, 32, 64), (64, 64, 128)), global_widths=(128, 256), head=(128,), dropout=0.4,
        num_points=256,
    )


@register_model(task="partseg")
def pointnet2_seg(num_classes: int, **cfg: Any) -> PointNet2Seg:
    """PointNet++ SSG part segmentation (512/128 centroids at 2048 points)."""
    return build(PointNet2Seg, num_classes, cfg)


@register_model(task="partseg")
def pointnet2_seg_tiny(num_classes: int, **cfg: Any) -> PointNet2Seg:
    """Tiny PointNet++ part segmentation for CPU tests (64/16 centroids at 256 points)."""
    return build(
        PointNet2Seg, num_classes, cfg, npoints=(64, 16), radii=(0.25, 0.5), nsamples=(16, 32),
        sa_widths=((32, 32, 64), (64, 64, 128)), global_widths=(128, 256), fp_widths=((128, 128), (128, 64),
        (64, 64)), head=(64,), num_points=256,
    )

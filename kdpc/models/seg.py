"""Part-segmentation models: per-point logits ``[B, N, P]`` with optional object-category conditioning.

Built from the classification families' blocks, following the reference part-segmentation networks:

* ``PointNet2Seg``: PointNet++ SSG part seg (yanx27 layout): SA encoder, feature propagation decoder, the
  category one-hot joining the full-resolution skip features.
* ``DGCNNSeg``: DGCNN part seg (authors' code): transform net, three EdgeConv blocks (k=40), global feature +
  category embedding broadcast to every point.
* ``PointMLPSeg``: PointMLP part seg (official code): PointMLP encoder, residual feature-propagation decoder,
  multi-level global context and a category token. Takes xyz only (the official model also takes normals) and
  has a ReLU between the head's BN and dropout (the official head has none, making it a linear map).

Features (``forward_features``) are the per-point input of each model's classifier head.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import KdpcError
from .base import (
    LinearBN,
    PointSegModel,
    check_points,
    check_positive,
    check_widths,
    leaky_relu,
    mlp_head,
)
from .dgcnn import EdgeConv, TransformNet
from .ops import interpolate_features
from .pointmlp import PointMLPEncoder, res_blocks
from .pointnet2 import FeaturePropagation, PointNet2Encoder
from .registry import build, register_model


def _broadcast(per_cloud: Tensor, n: int) -> Tensor:
    """``[B, C] -> [B, n, C]``."""
    return per_cloud.unsqueeze(1).expand(-1, n, -1)


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
    ) -> None:
        # The input xyz doubles as the first level's features, as in the reference.
        encoder = PointNet2Encoder(3, npoints, radii, nsamples, sa_widths, global_widths, num_points)
        if len(fp_widths) != len(encoder.stages) + 1:
            raise KdpcError(f"model option fp_widths needs {len(encoder.stages) + 1} entries (one per SA stage and "
                            f"the global stage), got {len(fp_widths)}")
        fp_widths = [check_widths("fp_widths", w) for w in fp_widths]
        super().__init__(num_classes, fp_widths[-1][-1], num_categories)
        self.encoder = encoder
        # Skip channels per level, finest first; level 0 carries [one-hot, xyz, xyz] like the reference.
        skips = [num_categories + 6] + [s.out_channels for s in encoder.stages]
        self.decoders = nn.ModuleList()
        channels = encoder.out_channels
        for widths, skip in zip(fp_widths, reversed(skips)):
            self.decoders.append(FeaturePropagation(channels + skip, widths))
            channels = widths[-1]
        self.head = mlp_head(channels, check_widths("head", head, allow_empty=True), num_classes, dropout)

    def forward_features(self, x: Tensor, category: Tensor | None = None) -> Tensor:
        check_points(x)
        onehot = self.category_onehot(category, x)
        levels = self.encoder(x, x)
        feats = levels[-1][1]
        assert feats is not None
        for i, fp in enumerate(self.decoders):
            level = len(levels) - 2 - i
            xyz, skip = levels[level]
            if level == 0:
                skip = torch.cat([x, x] if onehot is None else [_broadcast(onehot, x.shape[1]), x, x], dim=-1)
            feats = fp(xyz, levels[level + 1][0], skip, feats)
        return feats

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)


class DGCNNSeg(PointSegModel):
    """DGCNN part segmentation; ``edge_widths`` gives the layer widths of each EdgeConv block."""

    def __init__(
        self,
        num_classes: int,
        num_categories: int = 0,
        k: int = 40,
        edge_widths: Sequence[Sequence[int]] = ((64, 64), (64, 64), (64,)),
        emb_dims: int = 1024,
        category_dim: int = 64,
        head: Sequence[int] = (256, 256, 128),
        dropout: float = 0.5,
        input_transform: bool = True,
    ) -> None:
        check_positive("k", k)
        check_positive("emb_dims", emb_dims)
        check_positive("category_dim", category_dim)
        blocks = [check_widths("edge_widths", w) for w in edge_widths]
        if not blocks:
            raise KdpcError("model option edge_widths must not be empty")
        cat_dim = category_dim if num_categories else 0
        local = sum(b[-1] for b in blocks)
        super().__init__(num_classes, emb_dims + cat_dim + local, num_categories)
        self.k = k
        self.transform = TransformNet() if input_transform else None
        self.edges = nn.ModuleList()
        channels = 3
        for widths in blocks:
            self.edges.append(EdgeConv(channels, widths))
            channels = widths[-1]
        self.conv = LinearBN(local, emb_dims, act=leaky_relu, bias=False)
        self.category_embed = (
            LinearBN(num_categories, category_dim, act=leaky_relu, bias=False) if num_categories else None
        )
        self.head = mlp_head(
            self.num_features, check_widths("head", head, allow_empty=True), num_classes, dropout,
            act=leaky_relu, bias=False, final_bias=False, dropout_last=False,
        )

    def forward_features(self, x: Tensor, category: Tensor | None = None) -> Tensor:
        check_points(x)
        onehot = self.category_onehot(category, x)
        n = x.shape[1]
        if self.transform is not None:
            x = torch.bmm(x, self.transform(x, self.k))
        outs = []
        for edge in self.edges:
            x = edge(x, self.k)
            outs.append(x)
        local = torch.cat(outs, dim=-1)
        glob = [self.conv(local).amax(1)]
        if onehot is not None and self.category_embed is not None:
            glob.append(self.category_embed(onehot))
        return torch.cat([_broadcast(torch.cat(glob, dim=-1), n), local], dim=-1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)


class PointMLPPropagation(nn.Module):
    """PointMLP decoder step: interpolate coarse features, concat skip, fuse conv, residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, expansion: float, bias: bool) -> None:
        super().__init__()
        self.fuse = LinearBN(in_channels, out_channels, bias=bias)
        self.blocks = res_blocks(out_channels, blocks, expansion, bias)

    def forward(self, xyz_dst: Tensor, xyz_src: Tensor, feats_dst: Tensor, feats_src: Tensor) -> Tensor:
        x = torch.cat([feats_dst, interpolate_features(xyz_dst, xyz_src, feats_src)], dim=-1)
        return self.blocks(self.fuse(x))


class PointMLPSeg(PointSegModel):
    """PointMLP part segmentation; ``de_dims``/``de_blocks`` run coarsest -> finest, one per encoder stage."""

    def __init__(
        self,
        num_classes: int,
        num_categories: int = 0,
        embed_dim: int = 64,
        dim_expansion: Sequence[int] = (2, 2, 2, 2),
        pre_blocks: Sequence[int] = (2, 2, 2, 2),
        pos_blocks: Sequence[int] = (2, 2, 2, 2),
        k_neighbors: Sequence[int] = (32, 32, 32, 32),
        reducers: Sequence[int] = (4, 4, 4, 4),
        res_expansion: float = 1.0,
        bias: bool = True,
        use_xyz: bool = True,
        normalize: str | None = "anchor",
        de_dims: Sequence[int] = (512, 256, 128, 128),
        de_blocks: Sequence[int] = (4, 4, 4, 4),
        gmp_dim: int = 64,
        cls_dim: int = 64,
        head: Sequence[int] = (128,),
        dropout: float = 0.5,
    ) -> None:
        encoder = PointMLPEncoder(embed_dim, dim_expansion, pre_blocks, pos_blocks, k_neighbors, reducers,
                                  res_expansion, bias, use_xyz, normalize)
        de_dims = check_widths("de_dims", de_dims)
        if not len(de_dims) == len(de_blocks) == len(encoder.stages):
            raise KdpcError(f"model options de_dims and de_blocks need one entry per encoder stage "
                            f"({len(encoder.stages)}), got {len(de_dims)} and {len(de_blocks)}")
        if any(not isinstance(b, int) or b < 0 for b in de_blocks):
            raise KdpcError(f"model option de_blocks must be a list of integers >= 0, got {de_blocks!r}")
        check_positive("gmp_dim", gmp_dim)
        check_positive("cls_dim", cls_dim)
        token_dim = cls_dim if num_categories else 0
        super().__init__(num_classes, de_dims[-1] + gmp_dim + token_dim, num_categories)
        self.encoder = encoder
        en_dims = encoder.dims[::-1]  # coarsest first
        self.decoders = nn.ModuleList()
        channels = en_dims[0]
        for out, blocks, skip in zip(de_dims, de_blocks, en_dims[1:]):
            self.decoders.append(PointMLPPropagation(channels + skip, out, blocks, res_expansion, bias))
            channels = out
        self.gmp_maps = nn.ModuleList([LinearBN(d, gmp_dim, bias=bias) for d in encoder.dims])
        self.gmp_end = LinearBN(gmp_dim * len(encoder.dims), gmp_dim, bias=bias)
        self.category_map = (
            nn.Sequential(LinearBN(num_categories, cls_dim, bias=bias), LinearBN(cls_dim, cls_dim, bias=bias))
            if num_categories
            else None
        )
        self.head = mlp_head(self.num_features, check_widths("head", head, allow_empty=True), num_classes,
                             dropout, bias=bias, final_bias=bias)

    def forward_features(self, x: Tensor, category: Tensor | None = None) -> Tensor:
        check_points(x)
        onehot = self.category_onehot(category, x)
        levels = self.encoder(x)
        feats = levels[-1][1]
        for i, fp in enumerate(self.decoders):
            xyz_dst, skip = levels[-2 - i]
            feats = fp(xyz_dst, levels[-1 - i][0], skip, feats)
        pooled = [m(f).amax(1) for m, (_, f) in zip(self.gmp_maps, levels)]
        glob = [self.gmp_end(torch.cat(pooled, dim=-1))]
        if onehot is not None and self.category_map is not None:
            glob.append(self.category_map(onehot))
        return torch.cat([feats, _broadcast(torch.cat(glob, dim=-1), x.shape[1])], dim=-1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)


@register_model(task="partseg")
def pointnet2_seg(num_classes: int, **cfg: Any) -> PointNet2Seg:
    """PointNet++ SSG part segmentation (512/128 centroids at 2048 points)."""
    return build(PointNet2Seg, num_classes, cfg)


@register_model(task="partseg")
def dgcnn_seg(num_classes: int, **cfg: Any) -> DGCNNSeg:
    """DGCNN part segmentation, k=40, with transform net."""
    return build(DGCNNSeg, num_classes, cfg)


@register_model(task="partseg")
def pointmlp_seg(num_classes: int, **cfg: Any) -> PointMLPSeg:
    """PointMLP part segmentation, official config (N/4 groups per stage, k=32, 4-block decoder); a teacher."""
    return build(PointMLPSeg, num_classes, cfg)


@register_model(task="partseg")
def pointnet2_seg_tiny(num_classes: int, **cfg: Any) -> PointNet2Seg:
    """Tiny PointNet++ part segmentation for CPU tests (64/16 centroids at 256 points)."""
    return build(
        PointNet2Seg, num_classes, cfg, npoints=(64, 16), radii=(0.25, 0.5), nsamples=(16, 32),
        sa_widths=((32, 32, 64), (64, 64, 128)), global_widths=(128, 256), fp_widths=((128, 128), (128, 64),
        (64, 64)), head=(64,), num_points=256,
    )


@register_model(task="partseg")
def dgcnn_seg_tiny(num_classes: int, **cfg: Any) -> DGCNNSeg:
    """Tiny DGCNN part segmentation for CPU tests: k=10, no transform net, emb 128."""
    return build(
        DGCNNSeg, num_classes, cfg, k=10, edge_widths=((32, 32), (32,), (32,)), emb_dims=128, category_dim=16,
        head=(128, 64), input_transform=False,
    )


@register_model(task="partseg")
def pointmlp_seg_tiny(num_classes: int, **cfg: Any) -> PointMLPSeg:
    """Tiny PointMLP part segmentation for CPU tests: 3 stages (N/4, N/8, N/16 groups), k=16, 1-block decoder."""
    return build(
        PointMLPSeg, num_classes, cfg, embed_dim=32, dim_expansion=(2, 2, 2), pre_blocks=(1, 1, 1),
        pos_blocks=(1, 1, 1), k_neighbors=(16, 16, 16), reducers=(4, 2, 2), res_expansion=0.25,
        de_dims=(128, 64, 64), de_blocks=(1, 1, 1), gmp_dim=32, cls_dim=32, head=(64,),
    )

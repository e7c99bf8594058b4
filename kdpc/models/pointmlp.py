"""PointMLP (Ma et al., ICLR 2022): residual point MLPs with a geometric affine module, no convolutions on
neighbourhood structure beyond k-NN grouping.

Follows the official ``ma-xu/pointMLP-pytorch`` code, with two deliberate differences:

* the group counts are derived from the actual N of each batch (``N // reducer`` per stage, as the official code
  does for its fixed 1024 points) and k is clamped to the points available, so any N works;
* the geometric affine std is computed per cloud (as in the official part-segmentation code), not over the whole
  batch as in the official classification code, so a cloud's output never depends on its batch-mates.

The paper's parameter counts are in units of 2**20: "12.6M" is 13.2M parameters, "0.68M" is 0.72M.

* ``PointMLPCls``: encoder, global max pool, MLP head.
* ``PointMLPSeg``: part segmentation (official code): the encoder, a residual feature-propagation decoder,
  multi-level global context and a category token. Takes xyz by default (the official model also takes normals:
  ``in_channels=6``) and has a ReLU between the head's BN and dropout (the official head has none, making it a
  linear map).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KdpcError
from .base import (
    LinearBN,
    PointClsModel,
    PointSegModel,
    check_in_channels,
    check_points,
    check_positive,
    check_same_length,
    check_widths,
    mlp_head,
)
from .ops import broadcast_to_points, farthest_point_sample, index_points, interpolate_features, knn
from .registry import build, register_model

NORMALIZE = ("anchor", "center", None)


class LocalGrouper(nn.Module):
    """FPS centroids + k-NN groups, normalised by the geometric affine module.

    ``xyz [B, N, 3]``, ``feats [B, N, C]`` -> ``new_xyz [B, S, 3]``, normalised groups ``[B, S, k, C (+3)]`` and
    the centroids' own features ``[B, S, C]`` (the reference concatenates the latter to every group member; the
    consumer, ``PreExtraction``, does that implicitly).
    """

    def __init__(self, channels: int, use_xyz: bool, normalize: str | None) -> None:
        super().__init__()
        self.use_xyz = use_xyz
        self.normalize = normalize
        if normalize is not None:
            width = channels + (3 if use_xyz else 0)
            self.affine_alpha = nn.Parameter(torch.ones(1, 1, 1, width))
            self.affine_beta = nn.Parameter(torch.zeros(1, 1, 1, width))

    def forward(self, xyz: Tensor, feats: Tensor, groups: int, k: int) -> tuple[Tensor, Tensor, Tensor]:
        batch = xyz.shape[0]
        fps_idx = farthest_point_sample(xyz, groups)
        new_xyz, new_feats = index_points(xyz, fps_idx), index_points(feats, fps_idx)
        idx = knn(new_xyz, xyz, k)
        grouped = index_points(feats, idx)  # [B, S, k, C]
        if self.use_xyz:
            grouped = torch.cat([grouped, index_points(xyz, idx)], dim=-1)
        if self.normalize is not None:
            if self.normalize == "center":
                mean = grouped.mean(dim=2, keepdim=True)
            else:
                mean = (torch.cat([new_feats, new_xyz], dim=-1) if self.use_xyz else new_feats).unsqueeze(2)
            grouped = grouped - mean
            # The std of the whole cloud's deviations (unbiased, like torch.std); vector_norm is several times
            # faster than torch.std on CPU.
            flat = grouped.reshape(batch, -1)
            centred = flat - flat.mean(dim=-1, keepdim=True)
            std = torch.linalg.vector_norm(centred, dim=-1).div(max(flat.shape[1] - 1, 1) ** 0.5)
            std = std.view(batch, 1, 1, 1)
            grouped = torch.addcmul(self.affine_beta, grouped, self.affine_alpha / (std + 1e-5))
        return new_xyz, grouped, new_feats


class ResBlock(nn.Module):
    """Residual point MLP ``relu(BN(W2 relu(BN(W1 x))) + x)`` with bottleneck width ``channels * expansion``."""

    def __init__(self, channels: int, expansion: float, bias: bool) -> None:
        super().__init__()
        mid = int(channels * expansion)
        self.net1 = LinearBN(channels, mid, bias=bias)
        self.net2 = LinearBN(mid, channels, act=None, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu_(self.net2(self.net1(x)).add_(x))


def res_blocks(channels: int, blocks: int, expansion: float, bias: bool) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, expansion, bias) for _ in range(blocks)])


class PreExtraction(nn.Module):
    """Per-neighbourhood residual MLP, then max over the group: -> ``[B, S, out_channels]``.

    The reference feeds ``cat(group member, centroid feature)`` to its first layer; that linear is split into
    its two halves here so the centroid half runs once per group instead of once per member (same weights and
    maths).
    """

    def __init__(
        self, group_channels: int, centre_channels: int, out_channels: int, blocks: int, expansion: float,
        bias: bool,
    ) -> None:
        super().__init__()
        self.group_channels = group_channels
        self.transfer = LinearBN(group_channels + centre_channels, out_channels, bias=bias)
        self.blocks = res_blocks(out_channels, blocks, expansion, bias)

    def forward(self, grouped: Tensor, centre: Tensor) -> Tensor:
        linear = self.transfer.linear
        w_group, w_centre = linear.weight.split([self.group_channels, linear.in_features - self.group_channels], 1)
        x = F.linear(grouped, w_group) + F.linear(centre, w_centre, linear.bias).unsqueeze(2)
        return self.blocks(self.transfer.finish(x)).amax(2)


class PointMLPStage(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, pre_blocks: int, pos_blocks: int, expansion: float,
        bias: bool, use_xyz: bool, normalize: str | None,
    ) -> None:
        super().__init__()
        self.grouper = LocalGrouper(in_channels, use_xyz, normalize)
        group_channels = in_channels + (3 if use_xyz else 0)
        self.pre = PreExtraction(group_channels, in_channels, out_channels, pre_blocks, expansion, bias)
        self.pos = res_blocks(out_channels, pos_blocks, expansion, bias)

    def forward(self, xyz: Tensor, feats: Tensor, groups: int, k: int) -> tuple[Tensor, Tensor]:
        new_xyz, grouped, centre = self.grouper(xyz, feats, groups, k)
        return new_xyz, self.pos(self.pre(grouped, centre))


class PointMLPEncoder(nn.Module):
    """Embedding + stages; ``forward`` returns ``(xyz, feats [B, S_i, C_i])`` of the embedding and every stage."""

    def __init__(
        self,
        embed_dim: int,
        dim_expansion: Sequence[int],
        pre_blocks: Sequence[int],
        pos_blocks: Sequence[int],
        k_neighbors: Sequence[int],
        reducers: Sequence[int],
        res_expansion: float,
        bias: bool,
        use_xyz: bool,
        normalize: str | None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_positive("embed_dim", embed_dim)
        check_same_length(dim_expansion=dim_expansion, pre_blocks=pre_blocks, pos_blocks=pos_blocks,
                          k_neighbors=k_neighbors, reducers=reducers)
        for name, seq in (("dim_expansion", dim_expansion), ("k_neighbors", k_neighbors), ("reducers", reducers)):
            check_widths(name, seq)
        for name, seq in (("pre_blocks", pre_blocks), ("pos_blocks", pos_blocks)):
            if any(not isinstance(b, int) or b < 0 for b in seq):
                raise KdpcError(f"model option {name} must be a list of integers >= 0, got {seq!r}")
        if normalize not in NORMALIZE:
            raise KdpcError(f"model option normalize must be one of {NORMALIZE}, got {normalize!r}")
        if not isinstance(res_expansion, (int, float)) or not res_expansion > 0:
            raise KdpcError(f"model option res_expansion must be a positive number, got {res_expansion!r}")
        self.k_neighbors = tuple(k_neighbors)
        self.reducers = tuple(reducers)
        self.embedding = LinearBN(in_channels, embed_dim, bias=bias)  # xyz and any extra channels (normals, colour)
        self.stages = nn.ModuleList()
        self.dims = [embed_dim]
        for expand, pre, pos in zip(dim_expansion, pre_blocks, pos_blocks):
            out = self.dims[-1] * expand
            self.stages.append(PointMLPStage(self.dims[-1], out, pre, pos, res_expansion, bias, use_xyz, normalize))
            self.dims.append(out)

    def forward(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``x [B, N, in_channels]``, xyz first."""
        feats = self.embedding(x)
        xyz = x[..., :3].contiguous()
        levels = [(xyz, feats)]
        groups = xyz.shape[1]
        for stage, k, reducer in zip(self.stages, self.k_neighbors, self.reducers):
            n = xyz.shape[1]
            groups = max(1, groups // reducer)
            xyz, feats = stage(xyz, feats, groups, min(k, n))
            levels.append((xyz, feats))
        return levels


class PointMLPCls(PointClsModel):
    """PointMLP classifier: encoder -> global max pool (``num_features`` = last stage width) -> MLP head."""

    def __init__(
        self,
        num_classes: int,
        embed_dim: int = 64,
        dim_expansion: Sequence[int] = (2, 2, 2, 2),
        pre_blocks: Sequence[int] = (2, 2, 2, 2),
        pos_blocks: Sequence[int] = (2, 2, 2, 2),
        k_neighbors: Sequence[int] = (24, 24, 24, 24),
        reducers: Sequence[int] = (2, 2, 2, 2),
        res_expansion: float = 1.0,
        bias: bool = False,
        use_xyz: bool = False,
        normalize: str | None = "anchor",
        head: Sequence[int] = (512, 256),
        dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        encoder = PointMLPEncoder(embed_dim, dim_expansion, pre_blocks, pos_blocks, k_neighbors, reducers,
                                  res_expansion, bias, use_xyz, normalize, check_in_channels(in_channels))
        super().__init__(num_classes, encoder.dims[-1], in_channels)
        self.encoder = encoder
        self.head = mlp_head(encoder.dims[-1], check_widths("head", head, allow_empty=True), num_classes, dropout)

    def forward_features(self, x: Tensor) -> Tensor:
        check_points(x, self.in_channels)
        _, feats = self.encoder(x)[-1]
        return feats.amax(1)


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
        in_channels: int = 3,
    ) -> None:
        encoder = PointMLPEncoder(embed_dim, dim_expansion, pre_blocks, pos_blocks, k_neighbors, reducers,
                                  res_expansion, bias, use_xyz, normalize, check_in_channels(in_channels))
        de_dims = check_widths("de_dims", de_dims)
        if not len(de_dims) == len(de_blocks) == len(encoder.stages):
            raise KdpcError(f"model options de_dims and de_blocks need one entry per encoder stage "
                            f"({len(encoder.stages)}), got {len(de_dims)} and {len(de_blocks)}")
        if any(not isinstance(b, int) or b < 0 for b in de_blocks):
            raise KdpcError(f"model option de_blocks must be a list of integers >= 0, got {de_blocks!r}")
        check_positive("gmp_dim", gmp_dim)
        check_positive("cls_dim", cls_dim)
        token_dim = cls_dim if num_categories else 0
        super().__init__(num_classes, de_dims[-1] + gmp_dim + token_dim, num_categories, in_channels)
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
        check_points(x, self.in_channels)
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
        return torch.cat([feats, broadcast_to_points(torch.cat(glob, dim=-1), x.shape[1])], dim=-1)


@register_model(published_params=12_600_000)
def pointmlp(num_classes: int, **cfg: Any) -> PointMLPCls:
    """PointMLP, official ModelNet40 config (embed 64, stages [2,2,2,2], k=24), 13.2M params ("12.6M")."""
    return build(PointMLPCls, num_classes, cfg)


@register_model(published_params=680_000)
def pointmlp_elite(num_classes: int, **cfg: Any) -> PointMLPCls:
    """PointMLP-elite, official config (embed 32, bottleneck 0.25, dims x[2,2,2,1]), 0.72M params ("0.68M")."""
    return build(
        PointMLPCls, num_classes, cfg, embed_dim=32, res_expansion=0.25, dim_expansion=(2, 2, 2, 1),
        pre_blocks=(1, 1, 2, 1), pos_blocks=(1, 1, 2, 1),
    )


@register_model
def pointmlp_tiny(num_classes: int, **cfg: Any) -> PointMLPCls:
    """Small, fast PointMLP for CPU demos and as a CPU teacher: 3 stages, N/4, N/8, N/16 groups, k=16."""
    return build(
        PointMLPCls, num_classes, cfg, embed_dim=32, res_expansion=0.25, dim_expansion=(2, 2, 2),
        pre_blocks=(1, 1, 1), pos_blocks=(1, 1, 1), k_neighbors=(16, 16, 16), reducers=(4, 2, 2), head=(128,),
    )


@register_model(task="partseg")
def pointmlp_seg(num_classes: int, **cfg: Any) -> PointMLPSeg:
    """PointMLP part segmentation, official config (N/4 groups per stage, k=32, 4-block decoder); a teacher."""
    return build(PointMLPSeg, num_classes, cfg)


@register_model(task="partseg")
def pointmlp_seg_tiny(num_classes: int, **cfg: Any) -> PointMLPSeg:
    """Tiny PointMLP part segmentation for CPU tests: 3 stages (N/4, N/8, N/16 groups), k=16, 1-block decoder."""
    return build(
        PointMLPSeg, num_classes, cfg, embed_dim=32, dim_expansion=(2, 2, 2), pre_blocks=(1, 1, 1),
        pos_blocks=(1, 1, 1), k_neighbors=(16, 16, 16), reducers=(4, 2, 2), res_expansion=0.25,
        de_dims=(128, 64, 64), de_blocks=(1, 1, 1), gmp_dim=32, cls_dim=32, head=(64,),
    )

"""PointMLP (Ma et al., ICLR 2022): residual point MLPs with a geometric affine module, no convolutions on
neighbourhood structure beyond k-NN grouping.

Follows the official ``ma-xu/pointMLP-pytorch`` code, with two deliberate differences:

* the group counts are derived from the actual N of each batch (``N // reducer`` per stage, as the official code
  does for its fixed 1024 points) and k is clamped to the points available, so any N works;
* the geometric affine std is computed per cloud (as in the official part-segmentation code), not over the whole
  batch as in the official classification code, so a cloud's output never depends on its batch-mates.

The paper's parameter counts are in units of 2**20: "12.6M" is 13.2M parameters, "0.68M" is 0.72M.
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
    check_points,
    check_positive,
    check_same_length,
    check_widths,
    mlp_head,
)
from .ops import farthest_point_sample, index_points, knn
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
        self.embedding = LinearBN(3, embed_dim, bias=bias)
        self.stages = nn.ModuleList()
        self.dims = [embed_dim]
        for expand, pre, pos in zip(dim_expansion, pre_blocks, pos_blocks):
            out = self.dims[-1] * expand
            self.stages.append(PointMLPStage(self.dims[-1], out, pre, pos, res_expansion, bias, use_xyz, normalize))
            self.dims.append(out)

    def forward(self, xyz: Tensor) -> list[tuple[Tensor, Tensor]]:
        feats = self.embedding(xyz)
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
    ) -> None:
        encoder = PointMLPEncoder(embed_dim, dim_expansion, pre_blocks, pos_blocks, k_neighbors, reducers,
                                  res_expansion, bias, use_xyz, normalize)
        super().__init__(num_classes, encoder.dims[-1])
        self.encoder = encoder
        self.head = mlp_head(encoder.dims[-1], check_widths("head", head, allow_empty=True), num_classes, dropout)

    def forward_features(self, x: Tensor) -> Tensor:
        check_points(x)
        _, feats = self.encoder(x)[-1]
        return feats.amax(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)


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

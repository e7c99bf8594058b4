"""DGCNN (Wang et al., TOG 2019): stacked EdgeConvs on a k-NN graph recomputed in feature space.

Follows the authors' PyTorch code (bias-free convs, LeakyReLU 0.2). Permutation invariant (classification) /
equivariant (segmentation) up to k-NN ties.

* ``DGCNNCls``: single-layer EdgeConvs, max+avg global pooling, MLP head.
* ``DGCNNSeg``: part segmentation (authors' ``DGCNN_partseg``): transform net, three EdgeConv blocks (k=40),
  the global feature and a category embedding broadcast to every point.
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
    check_points,
    check_positive,
    check_widths,
    leaky_relu,
    mlp_head,
    shared_mlp,
)
from .ops import broadcast_to_points, index_points, knn
from .registry import build, register_model


class EdgeConv(nn.Module):
    """k-NN graph in the space of ``x [B, N, C]`` (self included, k clamped to N) -> shared MLP over the edge
    features ``(x_j - x_i, x_i)`` -> max over neighbours: ``[B, N, C] -> [B, N, widths[-1]]``.

    The first layer is linear in the edge feature, ``W (x_j - x_i, x_i) = W_a x_j + (W_b - W_a) x_i``, so it runs
    per point and is gathered afterwards: same weights and maths as the reference's Conv2d over
    ``[B, 2C, N, k]``, k times fewer multiply-adds.
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.out_channels = widths[-1]
        self.mlp = shared_mlp(2 * in_channels, widths, act=leaky_relu, bias=False)

    def forward(self, x: Tensor, k: int, graph: Tensor | None = None) -> Tensor:
        """``graph``: the points whose k-NN define the edges (default ``x`` itself)."""
        pos = x if graph is None else graph
        idx = knn(pos, pos, min(k, x.shape[1]))
        first = self.mlp[0]
        w_nbr, w_ctr = first.linear.weight.split(x.shape[-1], dim=1)
        edges = index_points(F.linear(x, w_nbr), idx).add_(F.linear(x, w_ctr - w_nbr).unsqueeze(2))  # [B, N, k, C']
        return self.mlp[1:](first.finish(edges)).amax(2)


class TransformNet(nn.Module):
    """DGCNN's spatial transformer: a 3x3 matrix predicted from the xyz edge features, identity at init."""

    def __init__(self, edge_widths: Sequence[int] = (64, 128), width: int = 1024, hidden: Sequence[int] = (512, 256)):
        super().__init__()
        self.edge = EdgeConv(3, edge_widths)
        self.conv = LinearBN(edge_widths[-1], width, act=leaky_relu, bias=False)
        self.fc = shared_mlp(width, hidden, act=leaky_relu, bias=False)
        self.out = nn.Linear(hidden[-1], 9)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.copy_(torch.eye(3).flatten())

    def forward(self, xyz: Tensor, k: int) -> Tensor:
        feat = self.conv(self.edge(xyz, k)).amax(1)
        return self.out(self.fc(feat)).view(-1, 3, 3)


class DGCNNCls(PointClsModel):
    """DGCNN classifier: one single-layer EdgeConv per ``edge_widths`` entry, then a shared linear to
    ``emb_dims``, global max and mean pooling concatenated (``num_features = 2 * emb_dims``), MLP head."""

    def __init__(
        self,
        num_classes: int,
        k: int = 20,
        edge_widths: Sequence[int] = (64, 64, 128, 256),
        emb_dims: int = 1024,
        head: Sequence[int] = (512, 256),
        dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        check_positive("k", k)
        check_positive("emb_dims", emb_dims)
        edge_widths = check_widths("edge_widths", edge_widths)
        super().__init__(num_classes, 2 * emb_dims, in_channels)
        self.k = k
        self.edges = nn.ModuleList()
        channels = self.in_channels
        for width in edge_widths:
            self.edges.append(EdgeConv(channels, (width,)))
            channels = width
        self.conv = LinearBN(sum(edge_widths), emb_dims, act=leaky_relu, bias=False)
        head = check_widths("head", head, allow_empty=True)
        # The reference's first head linear has no bias (a BN follows), the others do.
        biases = [i > 0 for i in range(len(head))]
        self.head = mlp_head(2 * emb_dims, head, num_classes, dropout, act=leaky_relu, bias=biases)

    def forward_features(self, x: Tensor) -> Tensor:
        check_points(x, self.in_channels)
        # the first graph is built on xyz alone; extra channels (normals, colour) are features, not coordinates
        graph = x[..., :3] if self.in_channels > 3 else None
        outs = []
        for i, edge in enumerate(self.edges):
            x = edge(x, self.k, graph if i == 0 else None)
            outs.append(x)
        x = self.conv(torch.cat(outs, dim=-1))
        return torch.cat([x.amax(1), x.mean(1)], dim=-1)


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
        in_channels: int = 3,
    ) -> None:
        check_positive("k", k)
        check_positive("emb_dims", emb_dims)
        check_positive("category_dim", category_dim)
        blocks = [check_widths("edge_widths", w) for w in edge_widths]
        if not blocks:
            raise KdpcError("model option edge_widths must not be empty")
        cat_dim = category_dim if num_categories else 0
        local = sum(b[-1] for b in blocks)
        super().__init__(num_classes, emb_dims + cat_dim + local, num_categories, in_channels)
        self.k = k
        self.transform = TransformNet() if input_transform else None
        self.edges = nn.ModuleList()
        channels = self.in_channels
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
        check_points(x, self.in_channels)
        onehot = self.category_onehot(category, x)
        n = x.shape[1]
        xyz = x[..., :3]
        if self.transform is not None:
            xyz = torch.bmm(xyz, self.transform(xyz, self.k))
        x = xyz if self.in_channels == 3 else torch.cat([xyz, x[..., 3:]], dim=-1)
        graph = xyz if self.in_channels > 3 else None
        outs = []
        for i, edge in enumerate(self.edges):
            x = edge(x, self.k, graph if i == 0 else None)
            outs.append(x)
        local = torch.cat(outs, dim=-1)
        glob = [self.conv(local).amax(1)]
        if onehot is not None and self.category_embed is not None:
            glob.append(self.category_embed(onehot))
        return torch.cat([broadcast_to_points(torch.cat(glob, dim=-1), n), local], dim=-1)


@register_model(published_params=1_800_000)
def dgcnn(num_classes: int, **cfg: Any) -> DGCNNCls:
    """DGCNN classifier, k=20, emb 1024, ~1.8M params."""
    return build(DGCNNCls, num_classes, cfg)


@register_model
def dgcnn_tiny(num_classes: int, **cfg: Any) -> DGCNNCls:
    """Tiny DGCNN for CPU demos: k=10, EdgeConvs 32-32-64-64, emb 128."""
    return build(DGCNNCls, num_classes, cfg, k=10, edge_widths=(32, 32, 64, 64), emb_dims=128, head=(128,))


@register_model(task="partseg")
def dgcnn_seg(num_classes: int, **cfg: Any) -> DGCNNSeg:
    """DGCNN part segmentation, k=40, with transform net."""
    return build(DGCNNSeg, num_classes, cfg)


@register_model(task="partseg")
def dgcnn_seg_tiny(num_classes: int, **cfg: Any) -> DGCNNSeg:
    """Tiny DGCNN part segmentation for CPU tests: k=10, no transform net, emb 128."""
    return build(
        DGCNNSeg, num_classes, cfg, k=10, edge_widths=((32, 32), (32,), (32,)), emb_dims=128, category_dim=16,
        head=(128, 64), input_transform=False,
    )

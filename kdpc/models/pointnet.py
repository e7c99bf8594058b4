"""PointNet (Qi et al., CVPR 2017): shared per-point MLPs, optional T-nets, global max pooling.

Permutation invariant by construction (everything is per point until the symmetric max pool).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .base import PointClsModel, check_points, check_widths, mlp_head, shared_mlp
from .registry import build, register_model


class TNet(nn.Module):
    """Predicts a ``k x k`` alignment matrix from a point set ``[B, N, k]``; starts as the identity."""

    def __init__(self, k: int, widths: Sequence[int], hidden: Sequence[int]) -> None:
        super().__init__()
        self.k = k
        self.mlp = shared_mlp(k, widths)
        self.fc = shared_mlp(widths[-1], hidden)
        self.out = nn.Linear(hidden[-1] if hidden else widths[-1], k * k)
        # Zero init makes the initial transform exactly the identity (the reference adds eye to a random output).
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.fc(self.mlp(x).amax(1))
        eye = torch.eye(self.k, dtype=x.dtype, device=x.device)
        return self.out(feat).view(-1, self.k, self.k) + eye


class PointNetCls(PointClsModel):
    """Vanilla PointNet classifier.

    ``stem`` widths run before the (optional) feature transform, ``widths`` after it; the last of ``widths`` is
    the global feature size (``num_features``). With ``in_channels > 3`` the input transform aligns xyz and the
    extra channels (normals, colour) join them unchanged, as in the reference's ``normal_channel`` variant.
    """

    def __init__(
        self,
        num_classes: int,
        stem: Sequence[int] = (64, 64),
        widths: Sequence[int] = (64, 128, 1024),
        head: Sequence[int] = (512, 256),
        dropout: float = 0.3,
        input_transform: bool = True,
        feature_transform: bool = True,
        tnet_widths: Sequence[int] = (64, 128, 1024),
        tnet_head: Sequence[int] = (512, 256),
        in_channels: int = 3,
    ) -> None:
        stem, widths = check_widths("stem", stem), check_widths("widths", widths)
        head = check_widths("head", head, allow_empty=True)
        super().__init__(num_classes, widths[-1], in_channels)
        tnet_widths = check_widths("tnet_widths", tnet_widths)
        tnet_head = check_widths("tnet_head", tnet_head, allow_empty=True)
        self.input_tnet = TNet(3, tnet_widths, tnet_head) if input_transform else None
        self.stem = shared_mlp(self.in_channels, stem)
        self.feature_tnet = TNet(stem[-1], tnet_widths, tnet_head) if feature_transform else None
        self.mlp = shared_mlp(stem[-1], widths)
        self.head = mlp_head(widths[-1], head, num_classes, dropout)

    def forward_features(self, x: Tensor) -> Tensor:
        check_points(x, self.in_channels)
        if self.input_tnet is not None:
            xyz = x[..., :3]
            aligned = torch.bmm(xyz, self.input_tnet(xyz))
            x = aligned if self.in_channels == 3 else torch.cat([aligned, x[..., 3:]], dim=-1)
        x = self.stem(x)
        if self.feature_tnet is not None:
            x = torch.bmm(x, self.feature_tnet(x))
        return self.mlp(x).amax(1)


@register_model(published_params=3_500_000)
def pointnet(num_classes: int, **cfg: Any) -> PointNetCls:
    """PointNet with input and feature T-nets (Qi et al. 2017), ~3.5M params."""
    return build(PointNetCls, num_classes, cfg)


@register_model
def pointnet_tiny(num_classes: int, **cfg: Any) -> PointNetCls:
    """Tiny PointNet without T-nets for CPU demos (22k params at 40 classes)."""
    return build(
        PointNetCls, num_classes, cfg, stem=(32,), widths=(64, 128), head=(64,), dropout=0.3,
        input_transform=False, feature_transform=False,
    )

"""A point-based U-Net for scene segmentation (PointNeXt-style local aggregation on a voxel hierarchy), pure PyTorch.

Each point aggregates its neighbours in the 3x3x3 voxels around it: a message ``W_f f_j + W_p (p_j - p_i) / v``
(``v`` = the level's voxel edge), a max over the neighbours that exist, BN and GELU - a PointNet++ set abstraction
whose ball is the voxel neighbourhood, so no kNN over the whole scene is needed. Blocks are inverted residuals
(aggregation, then a 4x MLP, added to the input); grid pooling and unpooling (stride 2) make the U-Net. Unlike the
transformer there is no attention and no per-offset weight: parameters grow with C^2, not 27 C^2.

Presets (parameters at 13 classes)::

    pointunet        5.18M  channels 32-64-128-256-512, depths 1-1-2-2-1
    pointunet-tiny   0.22M  CPU student: channels 16-32-64-96, depths 1-1-1-1
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import KdpcError
from .registry import build, register_model
from .scene_base import GridPool, GridUnpool, SceneSegModel, norm_act, stage_list
from .scene_ops import Level


class LocalAggregation(nn.Module):
    """``GELU(BN(max_j (W_f f_j + W_p (p_j - p_i) / v)))`` over the voxel neighbourhood.

    Computed as ``max_j G_j - W_p p_i / v`` with ``G = W_f f + W_p p / v`` (the position term of the centre does not
    depend on j), so the ``[N, 27, C]`` tensor is one gather and one max; in float32, since positions in voxel units
    reach the hundreds and bf16 would blur their differences."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.feat = nn.Linear(in_channels, out_channels, bias=False)
        self.pos = nn.Linear(3, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor, level: Level, voxel: float) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            centre = self.pos(level.coord.float() / voxel)
            g = self.feat(x.float()) + centre
            padded = torch.cat([g, g.new_full((1, g.shape[1]), float("-inf"))])  # missing neighbours never win
            pooled = padded[level.neighbours.reshape(-1)].view(*level.neighbours.shape, -1).max(1).values - centre
        return self.act(self.norm(pooled.to(x.dtype)))


class InvResBlock(nn.Module):
    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        self.aggregate = LocalAggregation(channels, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, expansion * channels), norm_act(expansion * channels),
                                 nn.Linear(expansion * channels, channels), nn.BatchNorm1d(channels))
        self.act = nn.GELU()

    def forward(self, x: Tensor, level: Level, voxel: float) -> Tensor:
        return self.act(x + self.mlp(self.aggregate(x, level, voxel)))


class PointUNet(SceneSegModel):
    """See the module docstring. ``forward(coord, feat, offset)`` -> ``[N, num_classes]``."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 6,
        grid_size: float = 0.02,
        enc_channels: Sequence[int] = (32, 64, 128, 256, 512),
        enc_depths: Sequence[int] = (1, 1, 2, 2, 1),
        dec_channels: Sequence[int] = (64, 64, 128, 256),
        dec_depths: Sequence[int] = (1, 1, 1, 1),
        dropout: float = 0.0,
    ) -> None:
        stages = len(enc_channels)
        if stages < 1:
            raise KdpcError("model option enc_channels must name at least one stage")
        enc_channels = stage_list("enc_channels", list(enc_channels), stages)
        enc_depths = stage_list("enc_depths", list(enc_depths), stages)
        dec_channels = stage_list("dec_channels", list(dec_channels), stages - 1)
        dec_depths = stage_list("dec_depths", list(dec_depths), stages - 1)
        if min(enc_channels) < 1 or (dec_channels and min(dec_channels) < 1):
            raise KdpcError("model options: channels must be >= 1")
        out_features = dec_channels[0] if stages > 1 else enc_channels[0]
        super().__init__(num_classes, out_features, in_channels, grid_size)
        self.stem = LocalAggregation(in_channels, enc_channels[0])
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for s in range(stages):
            self.down.append(GridPool(enc_channels[s - 1], enc_channels[s]) if s else nn.Identity())
            self.enc.append(nn.ModuleList(InvResBlock(enc_channels[s]) for _ in range(enc_depths[s])))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for s in range(stages - 1):
            coarse = enc_channels[-1] if s == stages - 2 else dec_channels[s + 1]
            self.up.append(GridUnpool(coarse, enc_channels[s], dec_channels[s]))
            self.dec.append(nn.ModuleList(InvResBlock(dec_channels[s]) for _ in range(dec_depths[s])))
        self.head = nn.Sequential(nn.Linear(out_features, out_features), norm_act(out_features),
                                  nn.Dropout(dropout), nn.Linear(out_features, num_classes))

    def forward_features(self, coord: Tensor, feat: Tensor, offset: Tensor) -> Tensor:
        self.check_inputs(coord, feat, offset)
        levels = [self.first_level(coord, offset)]
        x = self.stem(feat, levels[0], self.grid_size)
        skips = []
        for s, (down, blocks) in enumerate(zip(self.down, self.enc)):
            if s:
                skips.append(x)
                levels.append(levels[-1].pool())
                x = down(x, levels[-1])
            for block in blocks:
                x = block(x, levels[-1], self.grid_size * 2**s)
        for s in reversed(range(len(self.up))):
            x = self.up[s](x, skips[s], levels[s + 1])
            for block in self.dec[s]:
                x = block(x, levels[s], self.grid_size * 2**s)
        return x


@register_model(task="semseg")
def pointunet(num_classes: int, **cfg) -> PointUNet:
    """Point-based U-Net student (<15M parameters): voxel-neighbourhood set abstraction, channels 32-...-512."""
    return build(PointUNet, num_classes, cfg)


@register_model(task="semseg")
def pointunet_tiny(num_classes: int, **cfg) -> PointUNet:
    """A CPU-sized point-based U-Net student: channels 16-32-64-96."""
    return build(PointUNet, num_classes, cfg, enc_channels=(16, 32, 64, 96), enc_depths=(1, 1, 1, 1),
                 dec_channels=(32, 32, 64), dec_depths=(1, 1, 1))

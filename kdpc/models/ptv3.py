"""A Point Transformer V3-style scene segmenter (Wu et al., CVPR 2024) in pure PyTorch.

As in PTv3: points are voxelised on a grid, serialised along space-filling curves (z-order, Hilbert and their
xy-transposed variants; each block uses one, cycling, and the assignment is shuffled per training step), attention
runs inside patches of ``patch_size`` consecutive serialised points (``scaled_dot_product_attention``, no relative
position bias), a conditional positional encoding (xCPE: a submanifold 3x3x3 convolution + linear + LayerNorm)
precedes every block, grid pooling / unpooling (stride 2) build a U-Net, and the head is one linear layer. Where PTv3
needs spconv, ``scene_ops`` gathers voxel neighbours by sorted-key search; the stem is a 3x3x3 (or 5x5x5) sparse
convolution. Padding slots of the last patch of a scene are masked out of the attention instead of borrowed.

Presets (parameters at 13 classes)::

    ptv3        46.2M   the published PTv3 layout: channels 32-64-128-256-512, depths 2-2-2-6-2, patch 1024,
                        5x5x5 stem (GPU)
    ptv3-small  12.6M   a student of the same family: 32-64-128-192-256, depths 2-2-2-2-2, decoder depth 1
    ptv3-tiny    1.28M  CPU teacher: 16-32-64-128, depths 1-1-2-1, no decoder block at full resolution, patch 128
    ptv3-nano    0.45M  CPU student: 16-32-48-64, depths 0-1-1-1, patch 64
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KdpcError
from .registry import build, register_model
from .scene_base import (DropPath, GridPool, GridUnpool, SceneSegModel, SparseConv3, drop_path_rates, norm_act,
                         stage_list)
from .scene_ops import ORDERS, Level, Patches, gather_neighbours, neighbour_map


class PatchAttention(nn.Module):
    """Multi-head self-attention within each patch of serialised points."""

    def __init__(self, channels: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise KdpcError(f"model: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, patches: Patches) -> Tensor:
        num, size = patches.index.shape
        channels = x.shape[1]
        qkv = self.qkv(x)[patches.index.reshape(-1)]
        q, k, v = qkv.view(num, size, 3, self.heads, channels // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if patches.full else patches.valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(num * size, channels)[patches.slot]
        return self.proj_drop(self.proj(out))


class PTv3Block(nn.Module):
    """xCPE, then pre-norm patch attention and MLP, each residual (with stochastic depth)."""

    def __init__(self, channels: int, heads: int, patch_size: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.cpe = SparseConv3(channels, channels)
        self.cpe_out = nn.Sequential(nn.Linear(channels, channels), nn.LayerNorm(channels))
        self.norm1 = nn.LayerNorm(channels)
        self.attn = PatchAttention(channels, heads)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, level: Level, order: str) -> Tensor:
        x = x + self.cpe_out(self.cpe(x, level))
        x = x + self.drop_path(self.attn(self.norm1(x), level.patches(order, self.patch_size)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stem(nn.Module):
    """Sparse convolution (3x3x3, or 5x5x5 as in PTv3) from the input channels, BN, GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        if kernel not in (3, 5):
            raise KdpcError(f"model option stem_kernel must be 3 or 5, got {kernel!r}")
        self.kernel = kernel
        self.conv = nn.Linear(kernel**3 * in_channels, out_channels, bias=False)
        self.norm = norm_act(out_channels)

    def forward(self, feat: Tensor, level: Level) -> Tensor:
        nbr = level.neighbours if self.kernel == 3 else neighbour_map(level.grid, level.batch, radius=2)
        return self.norm(self.conv(gather_neighbours(feat, nbr).flatten(1)))


class PointTransformerV3(SceneSegModel):
    """See the module docstring. ``forward(coord, feat, offset)`` -> ``[N, num_classes]``."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 6,
        grid_size: float = 0.02,
        enc_channels: Sequence[int] = (32, 64, 128, 256, 512),
        enc_depths: Sequence[int] = (2, 2, 2, 6, 2),
        enc_heads: Sequence[int] = (2, 4, 8, 16, 32),
        dec_channels: Sequence[int] = (64, 64, 128, 256),
        dec_depths: Sequence[int] = (2, 2, 2, 2),
        dec_heads: Sequence[int] = (4, 4, 8, 16),
        patch_size: int = 1024,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.3,
        orders: Sequence[str] = ORDERS,
        shuffle_orders: bool = True,
        stem_kernel: int = 3,
    ) -> None:
        stages = len(enc_channels)
        if stages < 1:
            raise KdpcError("model option enc_channels must name at least one stage")
        enc_channels = stage_list("enc_channels", list(enc_channels), stages)
        enc_depths = stage_list("enc_depths", list(enc_depths), stages)
        enc_heads = stage_list("enc_heads", list(enc_heads), stages)
        dec_channels = stage_list("dec_channels", list(dec_channels), stages - 1)
        dec_depths = stage_list("dec_depths", list(dec_depths), stages - 1)
        dec_heads = stage_list("dec_heads", list(dec_heads), stages - 1)
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise KdpcError(f"model option patch_size must be a positive integer, got {patch_size!r}")
        bad = [o for o in orders if o not in ORDERS]
        if bad or not orders:
            raise KdpcError(f"model option orders takes names from {', '.join(ORDERS)}, got {list(orders)!r}")
        if min(enc_channels) < 1 or (dec_channels and min(dec_channels) < 1) or min(enc_heads) < 1:
            raise KdpcError("model options: channels and heads must be >= 1")
        out_features = dec_channels[0] if stages > 1 else enc_channels[0]
        super().__init__(num_classes, out_features, in_channels, grid_size)
        self.orders = tuple(orders)
        self.shuffle_orders = bool(shuffle_orders)
        self.stem = Stem(in_channels, enc_channels[0], stem_kernel)
        rates = iter(drop_path_rates(drop_path, enc_depths))
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for s in range(stages):
            self.down.append(GridPool(enc_channels[s - 1], enc_channels[s]) if s else nn.Identity())
            self.enc.append(nn.ModuleList(PTv3Block(enc_channels[s], enc_heads[s], patch_size, mlp_ratio, next(rates))
                                          for _ in range(enc_depths[s])))
        rates = iter(drop_path_rates(drop_path, dec_depths))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for s in range(stages - 1):
            coarse = enc_channels[-1] if s == stages - 2 else dec_channels[s + 1]
            self.up.append(GridUnpool(coarse, enc_channels[s], dec_channels[s]))
            self.dec.append(nn.ModuleList(PTv3Block(dec_channels[s], dec_heads[s], patch_size, mlp_ratio, next(rates))
                                          for _ in range(dec_depths[s])))
        self.head = nn.Linear(out_features, num_classes)

    def _orders(self) -> list[str]:
        if self.training and self.shuffle_orders and len(self.orders) > 1:
            return [self.orders[i] for i in torch.randperm(len(self.orders)).tolist()]
        return list(self.orders)

    def forward_features(self, coord: Tensor, feat: Tensor, offset: Tensor) -> Tensor:
        self.check_inputs(coord, feat, offset)
        orders = self._orders()
        levels = [self.first_level(coord, offset)]
        x = self.stem(feat, levels[0])
        skips = []
        k = 0
        for s, (down, blocks) in enumerate(zip(self.down, self.enc)):
            if s:
                skips.append(x)
                levels.append(levels[-1].pool())
                x = down(x, levels[-1])
            for block in blocks:
                x = block(x, levels[-1], orders[k % len(orders)])
                k += 1
        for s in reversed(range(len(self.up))):
            x = self.up[s](x, skips[s], levels[s + 1])
            for block in self.dec[s]:
                x = block(x, levels[s], orders[k % len(orders)])
                k += 1
        return x



@register_model(task="semseg", published_params=46_200_000)
def ptv3(num_classes: int, **cfg) -> PointTransformerV3:
    """Point Transformer V3 (Wu et al. 2024) layout, 46M parameters; a GPU teacher for ScanNet / S3DIS."""
    return build(PointTransformerV3, num_classes, cfg, stem_kernel=5)


@register_model(task="semseg")
def ptv3_small(num_classes: int, **cfg) -> PointTransformerV3:
    """A narrow PTv3 student (<15M parameters): channels 32-64-128-192-256, depths 2-2-2-2-2."""
    return build(PointTransformerV3, num_classes, cfg, enc_channels=(32, 64, 128, 192, 256), enc_depths=(2, 2, 2, 2, 2),
                 enc_heads=(2, 4, 8, 12, 16), dec_channels=(64, 64, 128, 192), dec_depths=(1, 1, 1, 1),
                 dec_heads=(4, 4, 8, 12), drop_path=0.2)


@register_model(task="semseg")
def ptv3_tiny(num_classes: int, **cfg) -> PointTransformerV3:
    """A CPU-sized PTv3 teacher: 4 stages 24-48-96-192, patch 128."""
    return build(PointTransformerV3, num_classes, cfg, enc_channels=(16, 32, 64, 128), enc_depths=(1, 1, 2, 1),
                 enc_heads=(1, 2, 4, 8), dec_channels=(32, 32, 64), dec_depths=(0, 1, 1), dec_heads=(2, 2, 4),
                 patch_size=128, drop_path=0.1)


@register_model(task="semseg")
def ptv3_nano(num_classes: int, **cfg) -> PointTransformerV3:
    """A CPU-sized PTv3 student: 4 stages 16-32-48-64, no attention at full resolution, patch 64."""
    return build(PointTransformerV3, num_classes, cfg, enc_channels=(16, 32, 48, 64), enc_depths=(0, 1, 1, 1),
                 enc_heads=(1, 2, 3, 4), dec_channels=(32, 32, 48), dec_depths=(0, 1, 1), dec_heads=(2, 2, 3),
                 patch_size=64, drop_path=0.0)

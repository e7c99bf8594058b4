"""Point-cloud ops in pure, vectorised PyTorch (no CUDA extensions), device-agnostic.

Conventions: point sets are channels-last ``[B, N, C]``; index tensors are ``int64``. Everything here is
deterministic for a given input on a given device: farthest point sampling starts at index 0 and ties are
broken towards the lowest index.
"""

from __future__ import annotations

import torch
from torch import Tensor


def square_distance(src: Tensor, dst: Tensor) -> Tensor:
    """Squared euclidean distances ``[B, N, M]`` between ``src [B, N, C]`` and ``dst [B, M, C]``.

    Uses the ``|a|^2 + |b|^2 - 2ab`` expansion (one matmul, O(NM) memory) and clamps the rounding negatives.
    """
    dist = torch.matmul(src, dst.transpose(1, 2)).mul_(-2.0)
    dist.add_(src.pow(2).sum(-1).unsqueeze(-1)).add_(dst.pow(2).sum(-1).unsqueeze(-2))
    return dist.clamp_min_(0.0)


def index_points(points: Tensor, idx: Tensor) -> Tensor:
    """Gather ``points [B, N, C]`` at ``idx [B, *S]`` (values in ``[0, N)``) -> ``[B, *S, C]``."""
    batch, n, channels = points.shape
    # index_select on the flattened rows is several times faster than gather with an expanded index on CPU.
    offset = torch.arange(batch, device=idx.device).view(batch, *([1] * (idx.dim() - 1))) * n
    rows = points.reshape(batch * n, channels).index_select(0, (idx + offset).reshape(-1))
    return rows.view(*idx.shape, channels)


def farthest_point_sample(xyz: Tensor, npoint: int) -> Tensor:
    """Farthest point sampling ``xyz [B, N, 3] -> idx [B, npoint]``, starting at index 0 of every cloud.

    The loop over ``npoint`` is inherently sequential; every step is batched over B.
    """
    batch, n, _ = xyz.shape
    if not 0 < npoint <= n:
        raise ValueError(f"farthest_point_sample: npoint must be in [1, {n}], got {npoint}")
    xyz = xyz.detach()
    idx = torch.zeros(batch, npoint, dtype=torch.long, device=xyz.device)
    nearest = torch.full((batch, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    farthest = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    for i in range(1, npoint):
        centroid = torch.gather(xyz, 1, farthest.view(batch, 1, 1).expand(-1, 1, xyz.shape[-1]))
        nearest = torch.minimum(nearest, (xyz - centroid).pow(2).sum(-1))
        farthest = nearest.argmax(-1)  # argmax returns the first maximal index: deterministic ties
        idx[:, i] = farthest
    return idx


def knn(query: Tensor, ref: Tensor, k: int) -> Tensor:
    """Indices ``[B, M, k]`` of the k nearest ``ref [B, N, C]`` points of each ``query [B, M, C]``, nearest first.

    A query that is also in ``ref`` finds itself first (distance 0), as in DGCNN and PointMLP.
    """
    n = ref.shape[1]
    if not 0 < k <= n:
        raise ValueError(f"knn: k must be in [1, {n}], got {k}")
    return square_distance(query, ref).topk(k, dim=-1, largest=False, sorted=True).indices


def ball_query(radius: float, nsample: int, xyz: Tensor, new_xyz: Tensor) -> Tensor:
    """PointNet++ ball query: ``[B, M, nsample]`` indices of ``xyz [B, N, 3]`` within ``radius`` of each centre.

    Takes the lowest-index points inside the ball (in index order, not distance order) and pads with the first
    one found. A centre with no point inside its ball (impossible when centres are drawn from ``xyz``) gets
    index 0 throughout.
    """
    n = xyz.shape[1]
    inside = square_distance(new_xyz, xyz) <= radius * radius
    candidates = torch.arange(n, device=xyz.device).expand_as(inside)
    candidates = torch.where(inside, candidates, torch.full_like(candidates, n))
    take = min(nsample, n)
    idx = candidates.topk(take, dim=-1, largest=False, sorted=True).values
    if take < nsample:
        idx = torch.cat([idx, idx.new_full((*idx.shape[:-1], nsample - take), n)], dim=-1)
    first = idx[..., :1]
    first = torch.where(first == n, torch.zeros_like(first), first)
    return torch.where(idx == n, first.expand_as(idx), idx)


def broadcast_to_points(per_cloud: Tensor, n: int) -> Tensor:
    """Give every one of ``n`` points its cloud's feature: ``[B, C] -> [B, n, C]`` (a view, no copy)."""
    return per_cloud.unsqueeze(1).expand(-1, n, -1)


def interpolate_features(xyz_dst: Tensor, xyz_src: Tensor, feats_src: Tensor, k: int = 3) -> Tensor:
    """PointNet++ feature propagation: inverse-distance weighted mean over the k nearest source points.

    ``xyz_dst [B, N, 3]``, ``xyz_src [B, S, 3]``, ``feats_src [B, S, C]`` -> ``[B, N, C]``. Uses fewer neighbours
    when ``S < k``; a single source point is broadcast.
    """
    s = xyz_src.shape[1]
    if s == 1:
        return feats_src.expand(-1, xyz_dst.shape[1], -1)
    k = min(k, s)
    dist, idx = square_distance(xyz_dst, xyz_src).topk(k, dim=-1, largest=False, sorted=True)
    weight = 1.0 / (dist + 1e-8)
    weight = weight / weight.sum(-1, keepdim=True)
    return (index_points(feats_src, idx) * weight.unsqueeze(-1)).sum(-2)


def scaled_count(count: int, num_points: int, ref_points: int, upper: int) -> int:
    """Scale a sample count published for ``ref_points`` input points to ``num_points``, clamped to [1, upper].

    Lets a preset that hardcodes e.g. 512 centroids for 1024 points run on any N.
    """
    return max(1, min(upper, (count * num_points) // ref_points))

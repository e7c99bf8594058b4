"""Point ops against brute-force references, and the models' factorised first layers against the naive maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpc.models.dgcnn import EdgeConv
from kdpc.models.ops import (
    ball_query,
    farthest_point_sample,
    index_points,
    interpolate_features,
    knn,
    scaled_count,
    square_distance,
)
from kdpc.models.pointmlp import LocalGrouper, PreExtraction
from kdpc.models.pointnet2 import SetAbstraction


def _cloud(b: int, n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (b, n, 3))).to(dtype)


def _dist_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def test_square_distance_matches_brute_force() -> None:
    a, b = _cloud(2, 7, 0), _cloud(2, 5, 1)
    got = square_distance(a, b).numpy()
    for i in range(2):
        np.testing.assert_allclose(got[i], _dist_np(a[i].numpy(), b[i].numpy()), atol=1e-12)
    assert (square_distance(a, a) >= 0).all()


def test_index_points_any_index_shape() -> None:
    pts = torch.arange(2 * 6 * 4, dtype=torch.float32).view(2, 6, 4)
    idx = torch.tensor([[[0, 5], [2, 2], [1, 3]], [[4, 0], [5, 5], [3, 1]]])
    got = index_points(pts, idx)
    assert got.shape == (2, 3, 2, 4)
    for bi in range(2):
        np.testing.assert_array_equal(got[bi].numpy(), pts[bi].numpy()[idx[bi].numpy()])


def _fps_ref(xyz: np.ndarray, npoint: int) -> list[int]:
    chosen = [0]
    nearest = np.full(len(xyz), np.inf)
    for _ in range(npoint - 1):
        nearest = np.minimum(nearest, ((xyz - xyz[chosen[-1]]) ** 2).sum(-1))
        chosen.append(int(np.argmax(nearest)))
    return chosen


def test_farthest_point_sample_matches_reference_and_starts_at_zero() -> None:
    xyz = _cloud(3, 40, 2)
    idx = farthest_point_sample(xyz, 12)
    assert idx.shape == (3, 12) and idx.dtype == torch.long
    for bi in range(3):
        assert idx[bi].tolist() == _fps_ref(xyz[bi].numpy(), 12)
        assert len(set(idx[bi].tolist())) == 12
    assert (idx[:, 0] == 0).all()
    assert torch.equal(farthest_point_sample(xyz.float(), 12), farthest_point_sample(xyz.float(), 12))


def test_farthest_point_sample_rejects_too_many() -> None:
    with pytest.raises(ValueError):
        farthest_point_sample(_cloud(1, 5, 0), 6)


def test_knn_matches_brute_force_nearest_first() -> None:
    q, r = _cloud(2, 6, 3), _cloud(2, 20, 4)
    idx = knn(q, r, 5)
    assert idx.shape == (2, 6, 5)
    for bi in range(2):
        ref = np.argsort(_dist_np(q[bi].numpy(), r[bi].numpy()), axis=1)[:, :5]
        np.testing.assert_array_equal(idx[bi].numpy(), ref)
    # A point queried against its own cloud finds itself first.
    assert (knn(r, r, 1)[..., 0] == torch.arange(20)).all()
    with pytest.raises(ValueError):
        knn(q, r, 21)


def _ball_ref(radius: float, nsample: int, xyz: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = []
    for c in centres:
        inside = [j for j in range(len(xyz)) if ((xyz[j] - c) ** 2).sum() <= radius**2][:nsample]
        first = inside[0] if inside else 0
        out.append(inside + [first] * (nsample - len(inside)))
    return np.array(out)


@pytest.mark.parametrize("nsample", [4, 30])  # 30 > N: every row is padded
def test_ball_query_matches_reference(nsample: int) -> None:
    xyz = _cloud(2, 25, 5)
    centres = torch.cat([xyz[:, :3], torch.full((2, 1, 3), 5.0, dtype=xyz.dtype)], dim=1)  # last: empty ball
    idx = ball_query(0.6, nsample, xyz, centres)
    assert idx.shape == (2, 4, nsample)
    for bi in range(2):
        np.testing.assert_array_equal(idx[bi].numpy(), _ball_ref(0.6, nsample, xyz[bi].numpy(), centres[bi].numpy()))
    # The padding case really occurs: the first centre's ball holds fewer than 30 points but itself.
    assert (idx[:, 0] == 0).any()


def test_interpolate_features_inverse_distance_three_nn() -> None:
    dst, src = _cloud(1, 5, 6), _cloud(1, 8, 7)
    feats = torch.from_numpy(np.random.default_rng(8).normal(size=(1, 8, 2)))
    got = interpolate_features(dst, src, feats)[0].numpy()
    d = _dist_np(dst[0].numpy(), src[0].numpy())
    for i in range(5):
        nn3 = np.argsort(d[i])[:3]
        w = 1.0 / (d[i, nn3] + 1e-8)
        np.testing.assert_allclose(got[i], (feats[0].numpy()[nn3] * (w / w.sum())[:, None]).sum(0), rtol=1e-10)
    single = interpolate_features(dst, src[:, :1], feats[:, :1])
    assert torch.equal(single, feats[:, :1].expand(-1, 5, -1))
    assert interpolate_features(dst, src[:, :2], feats[:, :2]).shape == (1, 5, 2)


def test_scaled_count() -> None:
    assert scaled_count(512, 1024, 1024, upper=1024) == 512
    assert scaled_count(512, 256, 1024, upper=256) == 128
    assert scaled_count(128, 256, 1024, upper=64) == 32
    assert scaled_count(16, 10, 1024, upper=10) == 1
    assert scaled_count(512, 4096, 1024, upper=100) == 100


def test_edgeconv_equals_naive_edge_features() -> None:
    torch.manual_seed(0)
    conv = EdgeConv(5, (8, 6)).eval()
    x = torch.randn(2, 30, 5)
    idx = knn(x, x, 7)
    nbr = index_points(x, idx)
    centre = x.unsqueeze(2).expand_as(nbr)
    edges = torch.cat([nbr - centre, centre], dim=-1)  # the reference's (x_j - x_i, x_i)
    expected = conv.mlp(edges).amax(2)
    torch.testing.assert_close(conv(x, 7), expected, rtol=1e-5, atol=1e-5)


def test_set_abstraction_equals_naive_grouping() -> None:
    torch.manual_seed(0)
    sa = SetAbstraction(0.5, 6, 4, (8, 8)).eval()
    xyz, feats = torch.rand(2, 40, 3), torch.randn(2, 40, 4)
    new_xyz, out = sa(xyz, feats, npoint=10)
    assert torch.equal(new_xyz, index_points(xyz, farthest_point_sample(xyz, 10)))
    idx = ball_query(0.5, 6, xyz, new_xyz)
    grouped = torch.cat([index_points(xyz, idx) - new_xyz.unsqueeze(2), index_points(feats, idx)], dim=-1)
    torch.testing.assert_close(out, sa.mlp(grouped).amax(2), rtol=1e-5, atol=1e-5)


def test_pointmlp_pre_extraction_equals_concatenated_input() -> None:
    torch.manual_seed(0)
    grouper = LocalGrouper(6, use_xyz=True, normalize="anchor")
    pre = PreExtraction(9, 6, 12, blocks=1, expansion=0.5, bias=True).eval()
    xyz, feats = torch.rand(2, 32, 3), torch.randn(2, 32, 6)
    new_xyz, grouped, centre = grouper(xyz, feats, groups=8, k=5)
    assert grouped.shape == (2, 8, 5, 9) and centre.shape == (2, 8, 6)
    # Reference: concat the centroid feature to every group member, one linear over the concatenation.
    cat = torch.cat([grouped, centre.unsqueeze(2).expand(-1, -1, 5, -1)], dim=-1)
    expected = pre.blocks(pre.transfer(cat)).amax(2)
    torch.testing.assert_close(pre(grouped, centre), expected, rtol=1e-5, atol=1e-5)


def test_local_grouper_anchor_normalisation_uses_per_cloud_std() -> None:
    grouper = LocalGrouper(2, use_xyz=False, normalize="anchor")
    xyz, feats = torch.rand(2, 20, 3), torch.randn(2, 20, 2)
    _, grouped, centre = grouper(xyz, feats, groups=4, k=3)
    idx = knn(index_points(xyz, farthest_point_sample(xyz, 4)), xyz, 3)
    dev = index_points(feats, idx) - centre.unsqueeze(2)
    for bi in range(2):
        torch.testing.assert_close(grouped[bi], dev[bi] / (dev[bi].std() + 1e-5))
    # A cloud's groups do not depend on its batch-mates.
    _, alone, _ = grouper(xyz[:1], feats[:1], groups=4, k=3)
    torch.testing.assert_close(alone[0], grouped[0])

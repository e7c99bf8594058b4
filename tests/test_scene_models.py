"""Scene models: registry and sizes, the serialisation / neighbour / patch ops against brute force, batches of
scenes that do not see each other, permutation equivariance, gradients, and bad inputs."""

from __future__ import annotations

import itertools

import pytest
import torch

from kdpc.errors import KdpcError
from kdpc.models import count_parameters, create_model, list_models, model_task
from kdpc.models.scene_ops import (grid_pool, hilbert, make_patches, neighbour_map, serial_code, z_order)

SCENE_MODELS = ["pointunet", "pointunet-tiny", "ptv3", "ptv3-nano", "ptv3-small", "ptv3-tiny"]
CPU_MODELS = ["ptv3-tiny", "ptv3-nano", "pointunet-tiny"]


def _scenes(sizes=(700, 500), grid: float = 0.125, seed: int = 0, channels: int = 6):
    """Points at the centres of distinct voxels (exact binary fractions: no two points of a scene share a voxel
    whatever the scene's minimum), scenes concatenated."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for n in sizes:
        cells = torch.randperm(40 * 40 * 20, generator=g)[:n]
        ijk = torch.stack([cells // 800, (cells // 20) % 40, cells % 20], 1).float()
        coords.append((ijk + 0.5) * grid)
    coord = torch.cat(coords)
    feat = torch.cat([coord, torch.rand(len(coord), channels - 3, generator=g)], 1)
    return coord, feat, torch.tensor(list(itertools.accumulate(sizes)))


def test_registry_sizes_and_listing():
    assert list_models("semseg") == SCENE_MODELS
    assert not set(SCENE_MODELS) & set(list_models())  # object-level listing unchanged
    assert set(list_models("all")) == set(list_models()) | set(SCENE_MODELS)
    assert all(model_task(n) == "semseg" for n in SCENE_MODELS)
    params = {name: count_parameters(create_model(name, 13)) for name in SCENE_MODELS}
    assert params["ptv3"] >= 40_000_000  # the PTv3 layout (46.2M published)
    assert abs(params["ptv3"] - 46_200_000) / 46_200_000 < 0.02
    for student in ("ptv3-small", "pointunet", "ptv3-nano", "pointunet-tiny"):
        assert params[student] < 15_000_000, student
    assert params["ptv3-nano"] < params["ptv3-tiny"] < params["ptv3-small"] < params["ptv3"]


def test_space_filling_curves_visit_every_voxel_once_and_hilbert_steps_to_neighbours():
    grid = torch.tensor(list(itertools.product(range(8), repeat=3)))
    for curve in (hilbert, z_order):
        code = curve(grid)
        assert len(set(code.tolist())) == 512 and int(code.max()) == 511
    walk = grid[hilbert(grid).argsort()]
    assert int((walk[1:] - walk[:-1]).abs().sum(1).max()) == 1  # Hilbert: always a face neighbour
    batch = torch.tensor([0] * 256 + [1] * 256)
    code = serial_code(grid, batch, "z-trans")
    assert bool((code[:256].max() < code[256:].min()))  # scene first
    with pytest.raises(KdpcError, match="order"):
        serial_code(grid, batch, "peano")


def test_neighbour_map_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    grid = torch.randint(0, 6, (300, 3), generator=g)
    batch = torch.randint(0, 2, (300,), generator=g)
    nbr = neighbour_map(grid, batch)
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)))
    for i in range(0, 300, 7):
        for k, off in enumerate(offsets):
            target = grid[i] + off
            match = ((grid == target).all(1) & (batch == batch[i])).nonzero().flatten().tolist()
            j = int(nbr[i, k])
            assert (j == 300) if not match else (j in match)


def test_patches_cover_every_point_once_within_one_scene():
    grid = torch.tensor(list(itertools.product(range(6), repeat=3)))
    batch = torch.tensor([0] * 100 + [1] * 116)
    counts = torch.bincount(batch)
    p = make_patches(serial_code(grid, batch, "hilbert"), batch, counts, 32)
    assert p.index.shape == (4 + 4, 32) and int(p.valid.sum()) == 216 and not p.full
    assert sorted(p.index[p.valid].tolist()) == list(range(216))
    assert torch.equal(p.index.reshape(-1)[p.slot], torch.arange(216))
    for row, ok in zip(p.index, p.valid):
        assert len(set(batch[row[ok]].tolist())) == 1
    pooled = grid_pool(grid, batch)
    assert torch.equal(pooled.grid[pooled.cluster], torch.div(grid, 2, rounding_mode="floor"))
    assert torch.equal(pooled.batch[pooled.cluster], batch)


@pytest.mark.parametrize("name", CPU_MODELS)
def test_scenes_in_a_batch_do_not_see_each_other_and_outputs_follow_points(name):
    torch.manual_seed(0)
    model = create_model(name, 5, in_channels=6, grid_size=0.125).eval()
    coord, feat, offset = _scenes()
    with torch.no_grad():
        both = model(coord, feat, offset)
        first = model(coord[:700], feat[:700], torch.tensor([700]))
        second = model(coord[700:], feat[700:], torch.tensor([500]))
        features = model.forward_features(coord, feat, offset)
        perm = torch.randperm(700)
        permuted = model(coord[:700][perm], feat[:700][perm], torch.tensor([700]))
    assert both.shape == (1200, 5) and features.shape == (1200, model.num_features)
    torch.testing.assert_close(both[:700], first, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(both[700:], second, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(permuted, first[perm], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.forward_head(features), both)
    # points sharing voxels: still independent of the batch-mates (stable sorts keep each scene's own order)
    dense = torch.rand(1200, 3, generator=torch.Generator().manual_seed(1)) * 1.5
    feat = torch.cat([dense, torch.rand(1200, 3)], 1)
    with torch.no_grad():
        both = model(dense, feat, offset)
        second = model(dense[700:], feat[700:], torch.tensor([500]))
    torch.testing.assert_close(both[700:], second, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ptv3-nano", "pointunet-tiny"])
def test_a_few_steps_fit_a_scene_and_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, 3, in_channels=6, grid_size=0.125)
    coord, feat, offset = _scenes((400, 300))
    target = (coord[:, 2] > coord[:, 2].median()).long() + (coord[:, 0] > 2.0).long()  # a layout to learn
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for step in range(25):
        loss = torch.nn.functional.cross_entropy(model(coord, feat, offset), target)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not missing, missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_inputs_are_kdpc_errors():
    model = create_model("ptv3-nano", 4, in_channels=6)
    coord, feat, offset = _scenes((50,))
    with pytest.raises(KdpcError, match="in_channels=6"):
        model(coord, feat[:, :4], offset)
    with pytest.raises(KdpcError, match="offset"):
        model(coord, feat, torch.tensor([49]))
    with pytest.raises(KdpcError, match="offset"):
        model(coord, feat, torch.tensor([0, 50]))
    with pytest.raises(KdpcError, match="metres"):
        model(coord * 1e4, feat, offset)
    with pytest.raises(KdpcError, match="enc_depths"):
        create_model("ptv3-tiny", 4, enc_depths=[1, 1])
    with pytest.raises(KdpcError, match="unknown model option"):
        create_model("pointunet-tiny", 4, heads=3)

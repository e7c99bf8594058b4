"""Scene views: parameters as pure functions of (stream, seed, scene, view), stored dtypes, exact replay, grid
sampling, crops, and the evaluation view that carries predictions back to every point."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from kdpc.data.scenes import Scene, SceneDataset
from kdpc.errors import KdpcError
from kdpc.scenes.batch import collate_scenes
from kdpc.scenes.grid import voxel_keys, voxel_sample
from kdpc.scenes.transforms import (SceneAugmentConfig, ScenePointAugmentConfig, apply_scene_point_noise,
                                    draw_scene_params, eval_scene_view, replay_scene_view, scene_param_specs)


def _dataset(num_points: int = 1500, grid: float = 0.1, n: int = 3000,
             channels=("xyz", "normals", "rgb")) -> SceneDataset:
    rng = np.random.default_rng(0)
    scenes = []
    for i in range(2):
        coord = (rng.random((n + 100 * i, 3)) * [6.0, 5.0, 3.0] + [100.0, -40.0, 2.0]).astype(np.float32)
        normal = rng.standard_normal(coord.shape).astype(np.float32)
        scenes.append(Scene(name=f"s{i}", coord=coord, segment=rng.integers(-1, 5, len(coord)),
                            color=rng.integers(0, 256, coord.shape).astype(np.uint8), normal=normal))
    return SceneDataset(name="fixture", split="train", class_names=list("abcde"), scenes=scenes,
                        num_points=num_points, grid_size=grid, channels=channels)


def test_params_are_a_pure_function_of_stream_seed_sample_view_in_their_stored_dtypes():
    cfg = SceneAugmentConfig()
    a = draw_scene_params(cfg, 7, np.array([0, 1, 1]), np.array([0, 0, 3]), stream="record")
    b = draw_scene_params(cfg, 7, np.array([1]), np.array([3]), stream="record")
    specs = {s.name: s for s in scene_param_specs(cfg)}
    assert list(a) == list(specs)
    for name, values in a.items():
        assert values.dtype == np.dtype(specs[name].dtype) and values.shape[1:] == specs[name].shape, name
        assert np.array_equal(values[2], b[name][0])  # independent of which other views are drawn with it
    train = draw_scene_params(cfg, 7, np.array([1]), np.array([3]), stream="train")
    assert not np.array_equal(train["angle"], b["angle"])
    assert len({float(x) for x in a["angle"]}) == 3 and np.all(np.abs(a["angle"].astype(np.float64)) <= math.pi + 1e-3)
    assert np.all((a["scale"] >= np.float16(0.9)) & (a["scale"] <= np.float16(1.1)))
    flat = SceneAugmentConfig(rotation="none", crop="none", flip=0.0)
    assert [s.name for s in scene_param_specs(flat)] == ["seed", "scale", "flip", "translate"]
    assert not draw_scene_params(flat, 7, np.arange(50), 0, stream="train")["flip"].any()
    with pytest.raises(KdpcError, match="crop"):
        SceneAugmentConfig(crop="cylinder")
    with pytest.raises(KdpcError, match="unknown scene augment"):
        SceneAugmentConfig.from_dict({"rotate": "z"})


def test_replay_from_stored_params_is_exact():
    data = _dataset()
    cfg = SceneAugmentConfig(crop="box")
    params = {k: v[0] for k, v in draw_scene_params(cfg, 3, np.array([1]), np.array([5]), stream="record").items()}
    stored = io.BytesIO()
    np.savez(stored, **params)  # what a store would keep
    stored.seek(0)
    loaded = dict(np.load(stored))
    one, two = replay_scene_view(data, 1, params, cfg), replay_scene_view(data, 1, loaded, cfg)
    for key in ("coord", "segment", "index", "inverse", "color", "normal"):
        assert np.array_equal(getattr(one, key), getattr(two, key)), key
    assert one.coord.dtype == np.float32 and one.num_points == 1500  # cropped to the dataset's num_points
    other = replay_scene_view(data, 1, {k: v[0] for k, v in draw_scene_params(cfg, 3, np.array([1]), np.array([6]),
                                                                              stream="record").items()}, cfg)
    assert not np.array_equal(one.index, other.index)


def test_transform_order_rotation_flip_scale_translate():
    data = _dataset(num_points=10**6, grid=1e-3)  # no crop; a grid this fine keeps every point
    base = eval_scene_view(data, 0)
    assert base.num_points == data.scenes[0].num_points and (base.inverse >= 0).all()
    params = {"seed": np.uint32(0), "angle": np.float16(0.5), "scale": np.array([1.0, 2.0, 0.5], np.float16),
              "flip": np.uint8(1), "translate": np.array([0.25, -0.5, 1.0], np.float16)}
    view = replay_scene_view(data, 0, params)
    order = np.argsort(view.index)
    ref = np.argsort(base.index)
    centred = base.coord[ref].astype(np.float64)
    angle = float(np.float16(0.5))
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    expected = centred @ rot.T
    expected[:, 0] *= -1
    expected = expected * [1.0, 2.0, 0.5] + [0.25, -0.5, 1.0]
    np.testing.assert_allclose(view.coord[order], expected, atol=1e-4)
    normals = (base.normal[ref].astype(np.float64) @ rot.T) * [-1, 1, 1]  # rotated and flipped, never scaled
    np.testing.assert_allclose(view.normal[order], normals, atol=1e-5)
    np.testing.assert_array_equal(view.segment[order], base.segment[ref])
    # centring: x, y about the middle of the bounding box, z from the floor
    lo, hi = base.coord.min(0), base.coord.max(0)
    np.testing.assert_allclose([lo[0] + hi[0], lo[1] + hi[1], lo[2]], 0, atol=1e-5)


def test_grid_sampling_keeps_one_seeded_point_per_voxel():
    rng = np.random.default_rng(1)
    coord = (rng.random((5000, 3)) * 2).astype(np.float32)
    kept, inverse = voxel_sample(coord, 0.25, seed=11)
    keys = voxel_keys(coord, 0.25)
    assert len(np.unique(keys[kept])) == len(kept) == len(np.unique(keys))
    assert np.array_equal(keys[kept][inverse], keys)  # every point maps to the kept point of its own voxel
    assert np.all(np.diff(keys[kept]) > 0)  # in voxel-key order
    other, _ = voxel_sample(coord, 0.25, seed=12)
    assert np.array_equal(keys[other], keys[kept]) and (other != kept).mean() > 0.8
    assert np.array_equal(voxel_sample(coord, 0.25, seed=11)[0], kept)


@pytest.mark.parametrize("shape", ["sphere", "box"])
def test_crop_keeps_the_points_nearest_a_seeded_centre(shape):
    data = _dataset(num_points=700)
    cfg = SceneAugmentConfig(rotation="none", scale_low=1.0, scale_high=1.0, flip=0.0, translate=0.0, crop=shape)
    params = {k: v[0] for k, v in draw_scene_params(cfg, 0, np.array([0]), np.array([0]), stream="train").items()}
    full = replay_scene_view(data, 0, params, cfg, crop=False)
    view = replay_scene_view(data, 0, params, cfg)
    assert view.num_points == 700 and full.num_points > 700
    centre = full.coord[int(params["crop"]) % full.num_points]
    diff = full.coord - centre
    dist = np.sqrt((diff**2).sum(1)) if shape == "sphere" else np.abs(diff[:, :2]).max(1)
    inside = np.isin(full.index, view.index)
    assert dist[inside].max() <= dist[~inside].min()
    # inverse: scene points whose voxel point was cropped away are -1, the others point at their view point
    kept = view.inverse >= 0
    assert kept.sum() < len(view.inverse) and set(np.unique(view.inverse[kept])) == set(range(700))


def test_point_noise_and_collate():
    data = _dataset()
    cfg = SceneAugmentConfig()
    items = []
    for i in range(2):
        params = {k: v[0] for k, v in draw_scene_params(cfg, 0, np.array([i]), np.array([0]), stream="train").items()}
        view = replay_scene_view(data, i, params, cfg)
        noisy = apply_scene_point_noise(view, ScenePointAugmentConfig(), np.random.default_rng(0))
        assert np.array_equal(noisy.segment, view.segment) and not np.array_equal(noisy.coord, view.coord)
        assert np.abs(noisy.coord - view.coord).max() <= 0.02 + 1e-6
        assert noisy.color.min() >= 0 and noisy.color.max() <= 1
        feat = noisy.features(data.channels)  # the groups in the dataset's order: xyz, normals, rgb
        np.testing.assert_array_equal(feat, np.concatenate([noisy.coord, noisy.normal, noisy.color], 1))
        assert np.array_equal(noisy.features(("xyz", "rgb"))[:, 3:], noisy.color)
        items.append({"coord": noisy.coord, "feat": feat, "segment": noisy.segment, "index": i})
    batch = collate_scenes(items)
    assert batch["offset"].tolist() == [1500, 3000] and batch["feat"].shape == (3000, 9)
    assert batch["coord"].dtype.is_floating_point and batch["segment"].min() >= -1

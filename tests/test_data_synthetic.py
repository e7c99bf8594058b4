"""The embedded procedural dataset ``synthetic``, the registry and the PointCloudDataset contract."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from kdpc.data import PointCloudDataset, create_dataset, list_datasets
from kdpc.data.shapes import CLASS_NAMES
from kdpc.errors import KdpcError

TINY = dict(samples_per_class=3, num_raw_points=64, num_points=32)


def tiny(**kw):
    return create_dataset("synthetic", **{**TINY, **kw})


def test_registry_lists_all_datasets_with_descriptions():
    names = dict(list_datasets())
    for n in ("synthetic", "synthetic-parts", "modelnet40", "modelnet40-resampled", "scanobjectnn", "shapenetpart"):
        assert n in names and names[n] and "\n" not in names[n]


def test_unknown_dataset_and_option_are_user_errors():
    with pytest.raises(KdpcError, match="unknown dataset 'nope'.*synthetic"):
        create_dataset("nope")
    with pytest.raises(KdpcError, match="unknown option.*colour.*known:.*noise"):
        create_dataset("synthetic", colour=1)
    with pytest.raises(KdpcError, match="split"):
        tiny(split="validation")
    with pytest.raises(KdpcError, match="noise"):
        tiny(noise=-1)
    with pytest.raises(KdpcError, match="classes"):
        tiny(classes=["table", "spaceship"])


def test_shapes_dtypes_and_class_count():
    ds = tiny()
    assert isinstance(ds, PointCloudDataset) and isinstance(ds, torch.utils.data.Dataset)
    assert ds.task == "cls" and ds.split == "train" and ds.name == "synthetic"
    assert ds.num_classes == len(CLASS_NAMES) == 18 and ds.class_names == list(CLASS_NAMES)
    assert len(ds) == 3 * 18
    assert ds.points.shape == (54, 64, 3) and ds.points.dtype == np.float32
    assert ds.labels.shape == (54,) and ds.labels.dtype == np.int64
    assert np.array_equal(np.bincount(ds.labels), np.full(18, 3))
    assert ds.num_points == 32 and ds.num_raw_points == 64 and ds.num_parts == 0
    pts, label = ds[5]
    assert pts.shape == (32, 3) and pts.dtype == np.float32 and np.array_equal(pts, ds.points[5, :32])
    assert label.dtype == np.int64 and label == ds.labels[5]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 32, 3) and batch[0].dtype == torch.float32 and batch[1].dtype == torch.int64
    # the classes are interleaved, so a prefix of the split is not one class
    assert len(set(ds.labels[:18].tolist())) > 5


def test_defaults():
    ds = create_dataset("synthetic", samples_per_class=2)
    assert ds.num_points == 256 and ds.num_raw_points == 512
    test = create_dataset("synthetic", split="test", num_raw_points=16, num_points=8)
    train = create_dataset("synthetic", num_raw_points=16, num_points=8)
    val = create_dataset("synthetic", split="val", num_raw_points=16, num_points=8)
    # 100 test shapes per class: one seed's test sampling error stays under a point of accuracy
    assert len(test) == 100 * test.num_classes and len(train) == 100 * train.num_classes
    assert len(val) == 50 * val.num_classes
    cfg = train.config
    assert cfg["samples_per_class"] is None and cfg["noise"] == 0.01 and cfg["occlusion"] == 0.5
    json.dumps(cfg)  # JSON-able


def test_recorded_train_config_rebuilds_the_test_split_at_its_own_size():
    train = create_dataset("synthetic", num_raw_points=16, num_points=8)
    rebuilt = create_dataset("synthetic", split="test", num_points=8, **train.config)
    assert len(rebuilt) == 100 * train.num_classes


def test_normalised_once():
    ds = tiny(noise=0.05)
    assert np.abs(ds.points.mean(1)).max() < 1e-5
    assert np.allclose(np.linalg.norm(ds.points, axis=-1).max(1), 1.0, atol=1e-5)


def test_deterministic_and_seeded():
    a, b = tiny(seed=3), tiny(seed=3)
    assert a.points is not b.points  # the cache hands out copies
    assert np.array_equal(a.points, b.points) and np.array_equal(a.labels, b.labels)
    assert a.fingerprint() == b.fingerprint()
    c = tiny(seed=4)
    assert not np.array_equal(a.points, c.points) and a.fingerprint() != c.fingerprint()
    t, v = tiny(seed=3, split="test"), tiny(seed=3, split="val")
    assert len({a.fingerprint(), t.fingerprint(), v.fingerprint()}) == 3
    # the splits share no instance (each split draws from its own streams)
    clouds = [{p.tobytes() for p in ds.points} for ds in (a, t, v)]
    assert not (clouds[0] & clouds[1]) and not (clouds[0] & clouds[2]) and not (clouds[1] & clouds[2])


def test_cache_cannot_be_corrupted_by_a_caller():
    a = tiny(seed=5)
    ref = a.points.copy()
    a.points[0] += 1.0
    assert np.array_equal(tiny(seed=5).points, ref)


def test_fingerprint_is_stable_across_processes_and_tracks_every_point():
    ds = tiny()
    code = (
        "from kdpc.data import create_dataset;"
        "print(create_dataset('synthetic', samples_per_class=3, num_raw_points=64, num_points=32).fingerprint())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ds.fingerprint() and len(out) == 64
    pts = ds.points.copy()
    pts[7, 60, 1] += 1e-6  # a point outside the evaluation view still counts
    other = PointCloudDataset(name="synthetic", split="train", task="cls", class_names=ds.class_names,
                              points=pts, labels=ds.labels, num_points=32, config=ds.config, normalize=False)
    assert other.fingerprint() != ds.fingerprint()
    labels = ds.labels.copy()
    labels[0] = (labels[0] + 1) % 18
    other = PointCloudDataset(name="synthetic", split="train", task="cls", class_names=ds.class_names,
                              points=ds.points, labels=labels, num_points=32, normalize=False)
    assert other.fingerprint() != ds.fingerprint()
    # num_points does not change the data, so not the fingerprint
    assert tiny(num_points=8).fingerprint() == ds.fingerprint()


def test_describe():
    ds = tiny()
    d = ds.describe()
    assert d["name"] == "synthetic" and d["split"] == "train" and d["task"] == "cls"
    assert (d["num_samples"], d["num_points"], d["num_raw_points"], d["num_classes"]) == (54, 32, 64, 18)
    assert d["fingerprint"] == ds.fingerprint() and d["config"]["seed"] == 0
    json.dumps(d)


def test_num_points_too_large_or_invalid():
    with pytest.raises(KdpcError, match="num_points=65.*only 64"):
        tiny(num_points=65)
    with pytest.raises(KdpcError, match="num_points"):
        tiny(num_points=0)


def test_difficulty_knobs_change_the_data():
    still = dict(noise=0.0, occlusion=0.0, stretch=0.0, max_tilt=0.0, max_yaw=0.0, num_raw_points=256)

    def extent_spread(ds):  # how much the bounding-box extents vary within a class, averaged over classes
        ext = np.ptp(ds.points, axis=1)
        return np.mean([ext[ds.labels == c].std(0).mean() for c in range(ds.num_classes)])

    canonical, varied = tiny(jitter=0.0, **still), tiny(jitter=1.0, **still)
    assert extent_spread(canonical) < 0.5 * extent_spread(varied)
    noisy = tiny(jitter=0.0, **{**still, "noise": 0.05})
    assert 0.02 < np.abs(noisy.points - canonical.points).mean() < 0.1
    occ = tiny(jitter=0.0, **{**still, "occlusion": 1.0, "occlusion_max": 0.6})
    assert occ.points.shape == canonical.points.shape  # resampled back to num_raw_points
    # losing up to 60% of one side shifts what is left: the cloud is no longer symmetric about its centre
    assert extent_spread(occ) > 1.5 * extent_spread(canonical)


def test_upright_by_default_yaw_only():
    """y is up: with tilt off, the table tops lie above the legs, whatever the yaw."""
    ds = create_dataset("synthetic-parts", classes=["table"], samples_per_class=6, num_raw_points=256,
                        max_tilt=0.0, occlusion=0.0)
    top = ds.part_labels == ds.category_parts[0][0]
    for i in range(len(ds)):
        assert ds.points[i, top[i], 1].mean() > ds.points[i, ~top[i], 1].mean() + 0.2


def test_classes_subset_keeps_each_class_instances():
    full = tiny()
    sub = tiny(classes=["mug", "cone"])
    assert sub.class_names == ["mug", "cone"] and len(sub) == 6
    mug_full = full.points[full.labels == CLASS_NAMES.index("mug")]
    mug_sub = sub.points[sub.labels == 0]
    # same per-class stream; only the final normalisation (already done per sample) could differ
    assert np.allclose(np.sort(mug_full.reshape(-1)), np.sort(mug_sub.reshape(-1)), atol=1e-5)


def test_classes_are_distinguishable_by_simple_statistics():
    """A nearest-centroid on coarse shape statistics is far above chance (the data carries class signal),
    yet far from perfect (the classes are not trivially separable)."""
    tr = create_dataset("synthetic", samples_per_class=20, num_raw_points=256)
    te = create_dataset("synthetic", samples_per_class=10, num_raw_points=256, split="test")

    def feats(p):
        r = np.linalg.norm(p, axis=-1)
        y = p[..., 1]
        h = np.linalg.norm(p[..., [0, 2]], axis=-1)
        qs = [np.quantile(v, [0.1, 0.5, 0.9], axis=1).T for v in (r, y, h)]
        return np.concatenate(qs, 1)

    ftr, fte = feats(tr.points), feats(te.points)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    cent = np.stack([ftr[tr.labels == c].mean(0) for c in range(18)])
    pred = np.argmin(((fte[:, None] - cent[None]) ** 2).sum(-1), 1)
    acc = (pred == te.labels).mean()
    assert 0.15 < acc < 0.85, acc


def test_default_generation_size():
    ds = create_dataset("synthetic")
    assert ds.points.shape == (1800, 512, 3) and ds.num_points == 256

"""Part segmentation datasets: shapenetpart (both layouts) and the embedded synthetic-parts."""

import json

import h5py
import numpy as np
import pytest

from fixture_writers import SHAPENETPART_CATEGORIES, write_shapenetpart_h5, write_shapenetpart_txt
from kdpc.data import create_dataset, normalize_points
from kdpc.data.base import resample_indices, string_seed
from kdpc.data.shapes import PART_CLASS_NAMES
from kdpc.errors import KdpcError

STANDARD_RANGES = {
    "Airplane": (0, 3), "Bag": (4, 5), "Cap": (6, 7), "Car": (8, 11), "Chair": (12, 15), "Earphone": (16, 18),
    "Guitar": (19, 21), "Knife": (22, 23), "Lamp": (24, 27), "Laptop": (28, 29), "Motorbike": (30, 35),
    "Mug": (36, 37), "Pistol": (38, 40), "Rocket": (41, 43), "Skateboard": (44, 46), "Table": (47, 49),
}  # fmt: skip


def _check_partseg(ds):
    assert ds.task == "partseg" and ds.part_labels.dtype == np.int64
    assert ds.part_labels.shape == ds.points.shape[:2]
    for i in range(len(ds)):
        assert set(np.unique(ds.part_labels[i])) <= set(ds.category_parts[int(ds.labels[i])])
    pts, label, parts = ds[0]
    assert pts.shape == (ds.num_points, 3) and parts.shape == (ds.num_points,) and parts.dtype == np.int64
    assert np.array_equal(parts, ds.part_labels[0, : ds.num_points]) and label == ds.labels[0]


# ---------------------------------------------------------------------------------------------------- shapenetpart
def test_shapenetpart_h5_layout(tmp_path):
    root = write_shapenetpart_h5(tmp_path / "sp", n_train=5, n_val=2, n_test=3, num_points=40)
    ds = create_dataset("shapenetpart", root=root, split="train", num_points=32)
    assert ds.config == {"layout": "h5", "num_raw_points": 40}
    assert ds.num_classes == 16 and ds.num_parts == 50 and len(ds.part_names) == 50
    assert ds.class_names == [c for c, _, _ in SHAPENETPART_CATEGORIES]
    for i, name in enumerate(ds.class_names):
        lo, hi = STANDARD_RANGES[name]
        assert ds.category_parts[i] == list(range(lo, hi + 1))
    assert ds.points.shape == (5, 40, 3) and ds.labels.tolist() == [0, 1, 2, 3, 4]
    _check_partseg(ds)
    with h5py.File(root / "hdf5_data/ply_data_train0.h5", "r") as f:
        assert np.array_equal(ds.part_labels, f["pid"][()].astype(np.int64))
        assert np.allclose(ds.points, normalize_points(f["data"][()]), atol=1e-6)
    tv = create_dataset("shapenetpart", root=root, split="trainval", num_points=32)
    assert len(tv) == 7 and np.array_equal(tv.points[:5], ds.points) and tv.labels.tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert len(create_dataset("shapenetpart", root=root / "hdf5_data", split="test", num_points=32)) == 3
    short = create_dataset("shapenetpart", root=root, num_raw_points=20, num_points=20)
    assert short.points.shape == (5, 20, 3) and np.array_equal(short.part_labels, ds.part_labels[:, :20])
    d = ds.describe()
    assert d["task"] == "partseg" and d["num_parts"] == 50


def test_shapenetpart_txt_layout(tmp_path):
    root = write_shapenetpart_txt(tmp_path / "txt", n_train=4, n_val=1, n_test=2, point_counts=(20, 60))
    ds = create_dataset("shapenetpart", root=root, split="train", num_raw_points=32, num_points=16)
    assert ds.config == {"layout": "txt", "num_raw_points": 32}
    assert ds.points.shape == (4, 32, 3) and ds.labels.tolist() == [0, 1, 2, 3]
    _check_partseg(ds)
    # each shape's points (and their part ids) are a deterministic resampling of the file's lines
    entries = json.loads((root / "train_test_split/shuffled_train_file_list.json").read_text())
    counts = []
    for i, entry in enumerate(entries):
        synset, shape_id = entry.split("/")[1:]
        raw = np.loadtxt(root / synset / f"{shape_id}.txt")
        counts.append(raw.shape[0])
        idx = resample_indices(string_seed(f"{synset}/{shape_id}"), raw.shape[0], 32)
        assert len(set(idx.tolist())) == min(raw.shape[0], 32)  # repeats only when the file has too few points
        assert np.allclose(ds.points[i], normalize_points(raw[None, idx, :3])[0], atol=1e-5)
        assert np.array_equal(ds.part_labels[i], raw[idx, 6].astype(np.int64))
        # the evaluation view is a spread-out subset, not the first lines of the file
        assert not np.array_equal(np.sort(idx[:16]), np.arange(16))
    assert min(counts) < 32 < max(counts)  # both the subsample and the pad-with-repeats paths ran
    again = create_dataset("shapenetpart", root=root, split="train", num_raw_points=32, num_points=16)
    assert again.fingerprint() == ds.fingerprint()
    tv = create_dataset("shapenetpart", root=root, split="trainval", num_raw_points=32, num_points=16)
    assert len(tv) == 5
    default = create_dataset("shapenetpart", root=root, split="test")
    assert default.num_raw_points == 2048 and default.num_points == 2048


def test_shapenetpart_layout_detection_and_errors(tmp_path):
    both = tmp_path / "both"
    write_shapenetpart_h5(both, num_points=24)
    write_shapenetpart_txt(both / "shapenetcore_partanno_segmentation_benchmark_v0_normal", point_counts=(5, 9))
    assert create_dataset("shapenetpart", root=both, num_points=8).config["layout"] == "h5"
    txt = create_dataset("shapenetpart", root=both, layout="txt", num_raw_points=8, num_points=8)
    assert txt.config["layout"] == "txt"
    with pytest.raises(KdpcError, match="layout must be"):
        create_dataset("shapenetpart", root=both, layout="ply")
    (tmp_path / "none").mkdir()
    with pytest.raises(KdpcError, match="hdf5_data.*synsetoffset2category.txt"):
        create_dataset("shapenetpart", root=tmp_path / "none")
    with pytest.raises(KdpcError, match="unknown split"):
        create_dataset("shapenetpart", root=both, split="all")
    with pytest.raises(KdpcError, match="num_points=25.*only 24"):
        create_dataset("shapenetpart", root=both, num_points=25)
    with h5py.File(both / "hdf5_data/ply_data_val0.h5", "w") as f:
        f.create_dataset("data", data=np.zeros((1, 24, 3), np.float32))
        f.create_dataset("label", data=np.zeros((1, 1), np.uint8))
    with pytest.raises(KdpcError, match="no 'pid' dataset.*'pid' \\(n, 2048\\)"):
        create_dataset("shapenetpart", root=both, split="val", num_points=8)
    (both / "hdf5_data/test_hdf5_file_list.txt").unlink()
    with pytest.raises(KdpcError, match="test_hdf5_file_list.txt|hdf5_file_list"):
        create_dataset("shapenetpart", root=both, split="test", num_points=8)
    txt_root = both / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (txt_root / "train_test_split/shuffled_test_file_list.json").write_text('["shape_data/99999999/abc"]')
    with pytest.raises(KdpcError, match="99999999"):
        create_dataset("shapenetpart", root=txt_root, split="test", num_raw_points=8, num_points=8)


# ------------------------------------------------------------------------------------------------ synthetic-parts
def test_synthetic_parts_contract():
    ds = create_dataset("synthetic-parts", samples_per_class=3, num_raw_points=128, num_points=64)
    assert ds.class_names == list(PART_CLASS_NAMES) and ds.num_classes == 11
    assert ds.num_points == 64 and ds.num_parts == len(ds.part_names) == 32
    _check_partseg(ds)
    ids = sorted(p for ps in ds.category_parts.values() for p in ps)
    assert ids == list(range(32))  # every global part belongs to exactly one category
    assert ds.part_names[ds.category_parts[ds.class_names.index("mug")][1]] == "mug/handle"
    # every category shows at least two of its parts
    for c in range(11):
        assert len(np.unique(ds.part_labels[ds.labels == c])) >= 2, ds.class_names[c]
    again = create_dataset("synthetic-parts", samples_per_class=3, num_raw_points=128, num_points=64)
    assert again.fingerprint() == ds.fingerprint()
    other = create_dataset("synthetic-parts", samples_per_class=3, num_raw_points=128, num_points=64, seed=1)
    assert other.fingerprint() != ds.fingerprint()


def test_synthetic_parts_match_the_geometry():
    """Part labels sit where the part is: table tops above legs, chair backs above seats, lamp shades above poles."""
    ds = create_dataset("synthetic-parts", classes=["table", "chair", "lamp"], samples_per_class=4,
                        num_raw_points=256, max_tilt=0.0, noise=0.0, occlusion=0.0)
    y = ds.points[..., 1]
    for c, (upper, lower) in enumerate([("top", "legs"), ("back", "seat"), ("shade", "pole")]):
        name = ds.class_names[c]
        up_id = ds.part_names.index(f"{name}/{upper}")
        lo_id = ds.part_names.index(f"{name}/{lower}")
        for i in np.flatnonzero(ds.labels == c):
            assert y[i][ds.part_labels[i] == up_id].mean() > y[i][ds.part_labels[i] == lo_id].mean(), name


def test_synthetic_parts_same_points_as_synthetic():
    """The two embedded datasets share the generator: same config, same clouds for a class."""
    kw = dict(classes=["mug", "lamp"], samples_per_class=2, num_raw_points=64, num_points=32)
    cls, seg = create_dataset("synthetic", **kw), create_dataset("synthetic-parts", **kw)
    assert np.array_equal(cls.points, seg.points) and np.array_equal(cls.labels, seg.labels)
    with pytest.raises(KdpcError, match="classes"):
        create_dataset("synthetic-parts", classes=["cylinder"])  # not a composite

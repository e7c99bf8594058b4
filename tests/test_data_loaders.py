"""File datasets on tiny fixtures in the real layouts: modelnet40, modelnet40-resampled, scanobjectnn."""

import h5py
import numpy as np
import pytest

from fixture_writers import (
    MODELNET40_NAMES,
    write_modelnet40_h5,
    write_modelnet40_resampled,
    write_scanobjectnn,
)
from kdpc.data import create_dataset, normalize_points
from kdpc.errors import KdpcError


def _normalised(pts):
    return np.abs(pts[..., :3].mean(1)).max() < 1e-5 and np.allclose(
        np.linalg.norm(pts[..., :3], axis=-1).max(1), 1.0, atol=1e-5
    )


# ---------------------------------------------------------------------------------------------------- modelnet40
def test_modelnet40_h5_layout(tmp_path):
    root = write_modelnet40_h5(tmp_path / "mn", n_train=7, n_test=3, num_points=48, files_per_split=3)
    assert "data/modelnet40_ply_hdf5_2048/ply_data_train0.h5" in (root / "train_files.txt").read_text()
    ds = create_dataset("modelnet40", root=root, split="train", num_points=16)
    assert ds.task == "cls" and ds.class_names == list(MODELNET40_NAMES) and ds.num_classes == 40
    assert ds.points.shape == (7, 48, 3) and ds.points.dtype == np.float32
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == list(range(7))
    assert _normalised(ds.points)
    # the files' clouds, in list order, normalised; item i is the first num_points of them
    raw = np.concatenate([h5py.File(root / f"ply_data_train{k}.h5", "r")["data"][()] for k in range(3)])
    assert np.allclose(ds.points, normalize_points(raw), atol=1e-6)
    assert not np.allclose(ds.points, raw)
    pts, label = ds[4]
    assert pts.shape == (16, 3) and np.array_equal(pts, ds.points[4, :16]) and label == 4
    test = create_dataset("modelnet40", root=root, split="test", num_points=48)
    assert len(test) == 3 and test.fingerprint() != ds.fingerprint()
    assert create_dataset("modelnet40", root=root, num_points=16).fingerprint() == ds.fingerprint()
    assert ds.describe()["num_raw_points"] == 48


def test_modelnet40_default_num_points_and_parent_root(tmp_path):
    write_modelnet40_h5(tmp_path / "modelnet40_ply_hdf5_2048", n_train=2, n_test=2, num_points=2048, files_per_split=1)
    ds = create_dataset("modelnet40", root=tmp_path, split="test")  # the folder holding the layout also works
    assert ds.num_points == 1024 and ds.num_raw_points == 2048


def test_modelnet40_errors(tmp_path):
    with pytest.raises(KdpcError, match="does not exist.*data-root"):
        create_dataset("modelnet40", root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdpcError, match="train_files.txt.*ply_data_train.*modelnet40_ply_hdf5_2048"):
        create_dataset("modelnet40", root=tmp_path / "empty")
    root = write_modelnet40_h5(tmp_path / "mn", n_train=4, n_test=2, num_points=32, files_per_split=2)
    with pytest.raises(KdpcError, match="num_points=33.*only 32"):
        create_dataset("modelnet40", root=root, num_points=33)
    with pytest.raises(KdpcError, match="unknown split 'val'"):
        create_dataset("modelnet40", root=root, split="val", num_points=8)
    with pytest.raises(KdpcError, match="unknown option"):
        create_dataset("modelnet40", root=root, variant="x")
    (root / "ply_data_train1.h5").unlink()
    with pytest.raises(KdpcError, match="train_files.txt lists.*ply_data_train1.h5"):
        create_dataset("modelnet40", root=root, num_points=8)
    with h5py.File(root / "ply_data_train1.h5", "w") as f:
        f.create_dataset("data", data=np.zeros((2, 32, 3), np.float32))
    with pytest.raises(KdpcError, match="no 'label' dataset.*'data' float32"):
        create_dataset("modelnet40", root=root, num_points=8)
    (root / "ply_data_train1.h5").write_bytes(b"not hdf5")
    with pytest.raises(KdpcError, match="not a readable HDF5"):
        create_dataset("modelnet40", root=root, num_points=8)


# -------------------------------------------------------------------------------------------- modelnet40-resampled
def test_modelnet40_resampled_layout(tmp_path):
    root = write_modelnet40_resampled(tmp_path / "rs", n_train=4, n_test=2, num_points=40)
    assert (root / "night_stand" / "night_stand_0001.txt").is_file()
    ds = create_dataset("modelnet40-resampled", root=root, num_raw_points=30, num_points=20)
    assert ds.points.shape == (4, 30, 3) and ds.num_classes == 40
    assert [ds.class_names[i] for i in ds.labels] == ["airplane", "night_stand"] * 2
    raw = np.loadtxt(root / "night_stand" / "night_stand_0001.txt", delimiter=",")[:30]
    assert np.allclose(ds.points[1], normalize_points(raw[None, :, :3])[0], atol=1e-5)
    assert _normalised(ds.points) and ds.config == {
        "layout": "modelnet40_normal_resampled", "num_raw_points": 30, "use_normals": False}
    nrm = create_dataset("modelnet40-resampled", root=root, num_raw_points=30, num_points=20, use_normals=True)
    assert nrm.points.shape == (4, 30, 6) and nrm.num_channels == 6 and nrm[0][0].shape == (20, 6)
    assert np.allclose(nrm.points[..., :3], ds.points) and np.allclose(nrm.points[1, :, 3:], raw[:, 3:], atol=1e-6)
    assert nrm.fingerprint() != ds.fingerprint()
    test = create_dataset("modelnet40-resampled", root=root, split="test", num_raw_points=40, num_points=40)
    assert len(test) == 2 and test.num_raw_points == 40


def test_modelnet40_resampled_errors(tmp_path):
    root = write_modelnet40_resampled(tmp_path / "rs", n_train=2, n_test=1, num_points=20)
    with pytest.raises(KdpcError, match="has 20 points but 30 are needed"):
        create_dataset("modelnet40-resampled", root=root, num_raw_points=30, num_points=10)
    with pytest.raises(KdpcError, match="modelnet40_shape_names.txt.*modelnet40_normal_resampled"):
        create_dataset("modelnet40-resampled", root=tmp_path)
    (root / "airplane" / "airplane_0001.txt").unlink()
    with pytest.raises(KdpcError, match="airplane_0001.*missing"):
        create_dataset("modelnet40-resampled", root=root, num_raw_points=10, num_points=10)
    (root / "airplane" / "airplane_0001.txt").write_text("1,2,3,0,0,1\nfoo,bar\n")
    with pytest.raises(KdpcError, match="cannot parse"):
        create_dataset("modelnet40-resampled", root=root, num_raw_points=2, num_points=2)


# ---------------------------------------------------------------------------------------------------- scanobjectnn
def test_scanobjectnn_variants(tmp_path):
    root = write_scanobjectnn(tmp_path / "so", n_train=5, n_test=3, num_points=40)
    prints = set()
    for variant in ("obj_bg", "obj_only", "pb_t50_rs"):
        ds = create_dataset("scanobjectnn", root=root, variant=variant, num_points=32)
        assert ds.points.shape == (5, 40, 3) and ds.num_classes == 15 and ds.class_names[14] == "toilet"
        assert ds.labels.tolist() == [0, 1, 2, 3, 4] and _normalised(ds.points)
        assert ds.config == {"variant": variant}
        prints.add(ds.fingerprint())
        assert len(create_dataset("scanobjectnn", root=root, variant=variant, split="test", num_points=8)) == 3
    assert len(prints) == 3  # three different files
    default = create_dataset("scanobjectnn", root=root / "h5_files", num_points=32)  # root may be h5_files itself
    assert default.config["variant"] == "pb_t50_rs"
    with h5py.File(root / "h5_files/main_split/training_objectdataset_augmentedrot_scale75.h5", "r") as f:
        assert np.allclose(default.points, normalize_points(f["data"][()]), atol=1e-6)


def test_scanobjectnn_errors(tmp_path):
    root = write_scanobjectnn(tmp_path / "so", variants=("obj_bg",), num_points=40)
    with pytest.raises(KdpcError, match="unknown variant 'hardest'.*pb_t50_rs"):
        create_dataset("scanobjectnn", root=root, variant="hardest")
    with pytest.raises(KdpcError, match="main_split_nobg/training_objectdataset.h5"):
        create_dataset("scanobjectnn", root=root, variant="obj_only")
    with pytest.raises(KdpcError, match="num_points=1024.*only 40"):
        create_dataset("scanobjectnn", root=root, variant="obj_bg")
    with h5py.File(root / "h5_files/main_split/training_objectdataset.h5", "w") as f:
        f.create_dataset("label", data=np.zeros(3, np.int64))
    with pytest.raises(KdpcError, match="no 'data' dataset"):
        create_dataset("scanobjectnn", root=root, variant="obj_bg", num_points=8)

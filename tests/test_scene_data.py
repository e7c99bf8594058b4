"""Scene datasets: synthetic-rooms, S3DIS (Pointcept npy folders and the original text release) and ScanNet,
loaded from fixture folders in the real layouts; the one-line errors for bad scenes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_one_line_error, run_kdpc
from kdpc.data import create_dataset, dataset_splits
from kdpc.data.scenes import SceneDataset
from kdpc.errors import KdpcError
from scene_fixture_writers import S3DIS_CLASSES, write_s3dis_pointcept, write_s3dis_txt, write_scannet

ROOMS = {"rooms": 2}


# -------------------------------------------------------------------------------------------- synthetic-rooms
def test_synthetic_rooms_are_deterministic_ragged_labelled_scenes():
    a = create_dataset("synthetic-rooms", split="val", **ROOMS)
    b = create_dataset("synthetic-rooms", split="val", **ROOMS)
    assert isinstance(a, SceneDataset) and a.task == "semseg" and len(a) == 2
    assert a.fingerprint() == b.fingerprint()
    assert create_dataset("synthetic-rooms", split="val", seed=1, **ROOMS).fingerprint() != a.fingerprint()
    assert create_dataset("synthetic-rooms", split="test", **ROOMS).fingerprint() != a.fingerprint()
    assert a.class_names[:5] == ["ceiling", "floor", "wall", "door", "window"] and a.num_classes == 14
    assert a.channels == ("xyz", "rgb") and a.num_channels == 6 and a.grid_size == 0.05
    sizes = [s.num_points for s in a.scenes]
    assert sizes[0] != sizes[1] and all(10_000 <= n <= 100_000 for n in sizes)
    for scene in a.scenes:
        assert scene.coord.dtype == np.float32 and scene.color.dtype == np.uint8
        assert scene.segment.min() >= 0 and scene.segment.max() < 14
        extent = scene.coord.max(0) - scene.coord.min(0)
        assert 3.0 < extent[0] < 8.5 and 3.0 < extent[1] < 7.5 and 2.4 < extent[2] < 3.3  # rooms, in metres
        for cls in ("ceiling", "floor", "wall", "door"):  # every room has a shell and a door
            assert (scene.segment == a.class_names.index(cls)).any(), cls
    # a larger split keeps the rooms of a smaller one
    bigger = create_dataset("synthetic-rooms", split="val", rooms=3)
    np.testing.assert_array_equal(bigger.scenes[1].coord, a.scenes[1].coord)


def test_synthetic_rooms_cover_the_furniture_classes_and_options():
    data = create_dataset("synthetic-rooms", split="train", rooms=8, density=60.0)
    seen = set(np.unique(np.concatenate([s.segment for s in data.scenes])).tolist())
    assert len(seen) >= 12, sorted(data.class_names[i] for i in seen)
    assert sum(s.num_points for s in data.scenes) < 8 * 30_000  # density scales the rooms
    assert create_dataset("synthetic-rooms", split="val", channels="xyz", **ROOMS).num_channels == 3
    with pytest.raises(KdpcError, match="no normals"):
        create_dataset("synthetic-rooms", channels="xyz+normals+rgb", **ROOMS)
    with pytest.raises(KdpcError, match="option channels"):
        create_dataset("synthetic-rooms", channels="xyz+depth", **ROOMS)
    with pytest.raises(KdpcError, match="unknown option"):
        create_dataset("synthetic-rooms", voxel=0.1)


def test_holdout_makes_a_disjoint_validation_split_of_scenes(tmp_path):
    root = write_s3dis_pointcept(tmp_path / "s3dis", areas=(1, 2, 3, 5), rooms_per_area=3)
    assert dataset_splits("s3dis") == ("train", "test") and "val" in dataset_splits("s3dis", 0.2)
    full = create_dataset("s3dis", root=root)
    train = create_dataset("s3dis", root=root, holdout=0.2)
    val = create_dataset("s3dis", root=root, split="val", holdout=0.2)
    names = lambda d: [s.name for s in d.scenes]  # noqa: E731
    assert len(val) == 2 and len(train) == 7 and sorted(names(val) + names(train)) == sorted(names(full))
    assert val.config["holdout"] == 0.2 and train.fingerprint() != full.fingerprint()


# ---------------------------------------------------------------------------------------------------- S3DIS
def test_s3dis_pointcept_layout(tmp_path):
    root = write_s3dis_pointcept(tmp_path / "s3dis")
    train = create_dataset("s3dis", root=root)
    test = create_dataset("s3dis", root=root, split="test", channels="xyz+normals+rgb")
    assert [s.name for s in train.scenes] == ["Area_1/conferenceRoom_2", "Area_1/office_1",
                                             "Area_2/conferenceRoom_2", "Area_2/office_1"]
    assert [s.name for s in test.scenes] == ["Area_5/conferenceRoom_2", "Area_5/office_1"]
    assert train.config["layout"] == "pointcept" and train.class_names == list(S3DIS_CLASSES)
    assert train.num_channels == 6 and test.num_channels == 9 and train.num_points == 80_000
    scene = test.scenes[1]
    on_disk = np.load(root / "Area_5" / "office_1" / "segment.npy")
    np.testing.assert_array_equal(scene.segment, on_disk.reshape(-1))
    np.testing.assert_array_equal(scene.color, np.load(root / "Area_5" / "office_1" / "color.npy"))
    other = create_dataset("s3dis", root=root, split="test", test_area=1)
    assert [s.name for s in other.scenes] == ["Area_1/conferenceRoom_2", "Area_1/office_1"]
    with pytest.raises(KdpcError, match="Area_6"):
        create_dataset("s3dis", root=root, split="test", test_area=6)


def test_s3dis_text_release_policy_for_its_blemishes(tmp_path):
    root = write_s3dis_txt(tmp_path / "txt")
    ann = root / "Area_5" / "office_1" / "Annotations"
    lines = (ann / "ceiling_1.txt").read_text().splitlines()
    lines[7] = "5.913 1.0\x10 2.1 10 20 30"  # the release's stray control character
    lines[9] = "1.0 2.0 3.0 300 20 30"  # a colour out of range
    (ann / "ceiling_1.txt").write_text("\r\n".join(lines) + "\r\n")  # and Windows line ends
    test = create_dataset("s3dis", root=root, split="test")
    assert test.config["layout"] == "txt" and test.config["bad_lines"] == "skip"
    assert test.notes == {"skipped_lines": 2, "unknown_class_files": 2}
    scene = test.scenes[0]
    assert scene.name == "Area_5/office_1" and scene.num_points == 5 * 60 - 2
    counts = np.bincount(scene.segment, minlength=13)
    assert counts[S3DIS_CLASSES.index("ceiling")] == 58 and counts[S3DIS_CLASSES.index("chair")] == 60
    assert counts[S3DIS_CLASSES.index("clutter")] == 60  # stairs_5.txt
    first = np.array(lines[0].split(), dtype=np.float64)
    np.testing.assert_allclose(scene.coord[0], first[:3].astype(np.float32))
    np.testing.assert_array_equal(scene.color[0], first[3:].astype(np.uint8))
    with pytest.raises(KdpcError, match=r"ceiling_1.txt'? line 8: unreadable annotation line"):
        create_dataset("s3dis", root=root, split="test", bad_lines="error")
    (ann / "chair_4.txt").write_text("garbage\n")
    assert create_dataset("s3dis", root=root, split="test").notes["skipped_lines"] == 3


# -------------------------------------------------------------------------------------------------- ScanNet
def test_scannet_layout_test_is_the_val_folder(tmp_path):
    root = write_scannet(tmp_path / "scannet")
    train = create_dataset("scannet", root=root)
    test = create_dataset("scannet", root=root, split="test")
    assert [s.name for s in train.scenes] == ["scene0000_00", "scene0001_00", "scene0002_00"]
    assert [s.name for s in test.scenes] == ["scene0003_00", "scene0004_00"]
    assert train.num_classes == 20 and train.channels == ("xyz", "normals", "rgb") and train.num_channels == 9
    seg = np.load(root / "val" / "scene0003_00" / "segment20.npy")
    np.testing.assert_array_equal(test.scenes[0].segment, seg)
    assert (test.scenes[0].segment == -1).any()  # unlabelled points stay -1 (ignored by the loss and the metrics)
    with pytest.raises(KdpcError, match="unknown split"):
        create_dataset("scannet", root=root, split="val")  # kdpc's val is a hold-out: --dataset-opt holdout=...


# ---------------------------------------------------------------------------------------------- bad scenes
def test_bad_scene_folders_are_one_error_each(tmp_path):
    root = write_s3dis_pointcept(tmp_path / "s3dis", areas=(1, 5), rooms_per_area=1)
    room = root / "Area_1" / "office_1"
    (room / "segment.npy").unlink()
    with pytest.raises(KdpcError, match="missing segment.npy"):
        create_dataset("s3dis", root=root)
    np.save(room / "segment.npy", np.full((400, 1), 13, dtype=np.int16))
    with pytest.raises(KdpcError, match="labels outside the class range: found 13..13, expected 0..12"):
        create_dataset("s3dis", root=root)
    np.save(room / "segment.npy", np.zeros((0, 1), dtype=np.int16))
    np.save(room / "coord.npy", np.zeros((0, 3), dtype=np.float32))
    np.save(room / "color.npy", np.zeros((0, 3), dtype=np.uint8))
    with pytest.raises(KdpcError, match="office_1 has zero points"):
        create_dataset("s3dis", root=root)
    coord = np.zeros((400, 3), dtype=np.float32)
    coord[17, 1] = np.nan
    np.save(room / "coord.npy", coord)
    np.save(room / "color.npy", np.zeros((400, 3), dtype=np.uint8))
    np.save(room / "segment.npy", np.zeros((400, 1), dtype=np.int16))
    with pytest.raises(KdpcError, match="NaN"):
        create_dataset("s3dis", root=root)
    np.save(room / "coord.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(KdpcError, match="not a plain numeric .npy"):
        create_dataset("s3dis", root=root)


def test_pth_scene_files_are_refused_never_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self):
            return (marker.write_text, ("ran",))

    root = tmp_path / "scannet"
    (root / "train").mkdir(parents=True)
    (root / "train" / "scene0000_00.pth").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(KdpcError, match="never unpickles .pth"):
        create_dataset("scannet", root=root)
    assert not marker.exists()


def test_cli_errors_are_one_line(tmp_path):
    root = write_scannet(tmp_path / "scannet", counts=(("train", 1), ("val", 1)))
    (root / "train" / "scene0000_00" / "segment20.npy").unlink()
    proc = run_kdpc("train", "--model", "ptv3-nano", "--dataset", "scannet", "--data-root", str(root), "--epochs",
                    "1", "--out", str(tmp_path / "x.pt"), check=False)
    assert_one_line_error(proc, "scene0000_00", "segment20.npy")
    txt = write_s3dis_txt(tmp_path / "txt", rooms_per_area=1)
    (txt / "Area_1" / "office_1" / "Annotations" / "wall_3.txt").write_text("1 2 3 4 5 6\n1 2 three 4 5 6\n")
    proc = run_kdpc("train", "--model", "ptv3-nano", "--dataset", "s3dis", "--data-root", str(txt), "--dataset-opt",
                    "bad_lines=error", "--epochs", "1", "--out", str(tmp_path / "y.pt"), check=False)
    assert_one_line_error(proc, "wall_3.txt", "line 2", "unreadable annotation line")


def test_a_scene_model_needs_scene_data(tmp_path):
    from kdpc.training.train import TrainConfig, train

    with pytest.raises(KdpcError, match="semseg model but dataset synthetic is a cls dataset"):
        train(TrainConfig(model="ptv3-nano", dataset_cfg={"samples_per_class": 2}, out=str(tmp_path / "z.pt")),
              log=lambda line: None)
    with pytest.raises(KdpcError, match="partseg model but dataset synthetic-rooms is a semseg dataset"):
        train(TrainConfig(model="dgcnn-seg-tiny", dataset="synthetic-rooms", dataset_cfg={"rooms": 1},
                          out=str(tmp_path / "z.pt")), log=lambda line: None)

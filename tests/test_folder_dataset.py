"""The `folder` dataset: ImageFolder layout, mixed point files and meshes, extra channels, deterministic sampling,
a fingerprint that follows files / labels / sampling, and the parse cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from byo import make_folder_dataset
from kdpc.data import create_dataset, pointfiles
from kdpc.errors import KdpcError


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDPC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def load(root, **opts):
    opts = {"num_raw_points": 64, "num_points": 32, **opts}
    return create_dataset("folder", root=str(root), **opts)


def test_mixed_files_of_different_sizes_load_deterministically(tmp_path, cache):
    root = make_folder_dataset(tmp_path / "data", per_class={"train": 2, "test": 1})
    train = load(root, cache=False)
    assert train.class_names == ["ball", "box"] and train.points.shape == (16, 64, 3)
    assert train.labels.tolist() == [0] * 8 + [1] * 8
    assert train.describe()["config"] == {"num_raw_points": 64, "channels": "xyz", "seed": 0}
    test = load(root, split="test", cache=False)
    assert len(test) == 8 and test.class_names == train.class_names
    # every cloud on the unit sphere, and the same files always give the same points
    radius = np.linalg.norm(train.points, axis=-1).max(axis=1)
    assert np.allclose(radius, 1.0, atol=1e-5) and np.allclose(train.points.mean(1), 0, atol=1e-5)
    again = load(root, cache=False)
    assert np.array_equal(again.points, train.points) and again.fingerprint() == train.fingerprint()
    # meshes are sampled on their surface: a box's points lie on its faces (one |coordinate| at the max)
    box_mesh = train.class_names.index("box")
    files = sorted((root / "train" / "box").iterdir())
    mesh_row = 8 + [f.name for f in files].index("mesh0.off")
    assert train.labels[mesh_row] == box_mesh
    raw = pointfiles.read_cloud(root / "train" / "box" / "mesh0.off", ("xyz",), 64, seed=1)
    assert np.allclose(np.abs(raw).max(axis=1), 0.5, atol=1e-6)


def test_fingerprint_follows_files_labels_and_sampling(tmp_path, cache):
    root = make_folder_dataset(tmp_path / "data", per_class={"train": 1, "test": 1})
    base = load(root).fingerprint()
    assert load(root, seed=1).fingerprint() != base  # other sampling
    assert load(root, num_raw_points=48, num_points=32).fingerprint() != base
    (root / "classes.txt").write_text("box\nball\n")  # same files, other labels
    relabelled = load(root)
    assert relabelled.class_names == ["box", "ball"] and relabelled.fingerprint() != base
    (root / "classes.txt").unlink()
    np.save(root / "train" / "ball" / "points0.npy", np.random.default_rng(5).random((70, 3)).astype(np.float32))
    assert load(root).fingerprint() != base  # a changed file (and the cache notices)
    assert load(root).fingerprint() == load(root, cache=False).fingerprint()


def test_the_parse_cache_skips_parsing_the_second_time(tmp_path, cache, monkeypatch):
    root = make_folder_dataset(tmp_path / "data", per_class={"train": 1, "test": 1})
    first = load(root)
    assert list(cache.rglob("*.npz"))

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr("kdpc.data.folder.read_cloud", no_parsing)
    second = load(root)
    assert np.array_equal(second.points, first.points) and second.fingerprint() == first.fingerprint()
    os.utime(root / "train" / "box" / "cloud0.ply", ns=(1, 1))  # touched: parsed again
    with pytest.raises(AssertionError, match="parsed again"):
        load(root)


def test_extra_channels_from_ply_npz_text_and_meshes(tmp_path, cache):
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    xyz, nrm, rgb = rng.random((30, 3)), rng.standard_normal((30, 3)), rng.integers(0, 256, (30, 3))
    from plyfile import PlyData, PlyElement

    vertex = np.array([tuple(x) + tuple(n) + tuple(c) for x, n, c in zip(xyz, nrm, rgb)],
                      dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4"),
                             ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    PlyData([PlyElement.describe(vertex, "vertex")], text=True).write(str(root / "train" / "a" / "p.ply"))
    np.savez(root / "train" / "a" / "q.npz", points=xyz, normals=nrm, colors=rgb.astype(np.uint8))
    np.savetxt(root / "train" / "a" / "r.txt", np.concatenate([xyz, nrm, rgb / 255.0], 1), delimiter=",")
    import trimesh

    trimesh.creation.box().export(root / "test" / "a" / "m.obj")
    data = load(root, channels="xyz+normals+rgb", num_raw_points=30, num_points=30)
    assert data.channels == ("xyz", "normals", "rgb") and data.points.shape == (3, 30, 9)
    assert data.describe()["channels"] == "xyz+normals+rgb"
    # the same cloud from three formats: identical after the same (seeded) resampling and normalisation
    assert np.allclose(data.points[0], data.points[1], atol=1e-6) and np.allclose(data.points[0], data.points[2],
                                                                                   atol=1e-6)
    order = np.argsort(data.points[0][:, 6])
    assert np.allclose(np.sort(data.points[0][:, 6]), np.sort(rgb[:, 0] / 255.0), atol=1e-6) and order.size == 30
    # a mesh gives the normals of its faces (unit, axis-aligned for a box), not colour
    with pytest.raises(KdpcError, match="m.obj: meshes give xyz and normals; colour"):
        load(root, split="test", channels="xyz+rgb", num_raw_points=30, num_points=30)
    mesh = load(root, split="test", channels="xyz+normals", num_raw_points=30, num_points=30)
    normals = mesh.points[0][:, 3:]
    assert np.allclose(np.linalg.norm(normals, axis=1), 1) and np.allclose(np.abs(normals).max(1), 1)


def test_bad_layouts_and_files_are_one_line_errors(tmp_path, cache):
    with pytest.raises(KdpcError, match="pass --data-root"):
        create_dataset("folder")
    root = make_folder_dataset(tmp_path / "data", per_class={"train": 1})
    with pytest.raises(KdpcError, match="has no test/ folder"):
        load(root, split="test")
    with pytest.raises(KdpcError, match="channels must start with xyz"):
        load(root, channels="normals")
    (root / "train" / "ball" / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n")
    with pytest.raises(KdpcError, match="broken.ply"):
        load(root)
    (root / "train" / "ball" / "broken.ply").unlink()
    (root / "train" / "ball" / "short.txt").write_text("1 2\n3 4\n")
    with pytest.raises(KdpcError, match=r"short.txt: expected a numeric array \[points, >= 3 columns\]"):
        load(root)
    (root / "train" / "ball" / "short.txt").unlink()
    with pytest.raises(KdpcError, match="ascii0.ply: channels xyz\\+normals need vertex properties nx, ny, nz"):
        load(root, channels="xyz+normals")
    with pytest.raises(KdpcError, match="points0.npy has 3 columns but channels xyz\\+normals need 6"):
        pointfiles.read_cloud(root / "train" / "ball" / "points0.npy", ("xyz", "normals"), 16, seed=0)
    (root / "classes.txt").write_text("ball\n")
    with pytest.raises(KdpcError, match="class folder train/box is not in classes.txt"):
        load(root)

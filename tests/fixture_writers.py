"""Write tiny datasets in the exact on-disk layouts of the real ones, for tests.

Every writer takes the folder to write into (created if needed), sizes and a seed, fills it with random clouds
(random offset and scale per cloud, so normalisation has work to do) and returns the folder to pass as ``root``.
Labels cycle through the classes, so sample ``i`` of a split has label ``i % num_classes`` unless said otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

MODELNET40_NAMES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip
SHAPENETPART_CATEGORIES = (
    ("Airplane", "02691156", 4), ("Bag", "02773838", 2), ("Cap", "02954340", 2), ("Car", "02958343", 4),
    ("Chair", "03001627", 4), ("Earphone", "03261776", 3), ("Guitar", "03467517", 3), ("Knife", "03624134", 2),
    ("Lamp", "03636649", 4), ("Laptop", "03642806", 2), ("Motorbike", "03790512", 6), ("Mug", "03797390", 2),
    ("Pistol", "03948459", 3), ("Rocket", "04099429", 3), ("Skateboard", "04225987", 3), ("Table", "04379243", 3),
)  # fmt: skip
SCANOBJECTNN_FILES = {
    "obj_bg": ("main_split", "training_objectdataset.h5", "test_objectdataset.h5"),
    "obj_only": ("main_split_nobg", "training_objectdataset.h5", "test_objectdataset.h5"),
    "pb_t50_rs": (
        "main_split",
        "training_objectdataset_augmentedrot_scale75.h5",
        "test_objectdataset_augmentedrot_scale75.h5",
    ),
}


def random_clouds(rng: np.random.Generator, n: int, num_points: int) -> np.ndarray:
    """float32 [n, num_points, 3]: Gaussian blobs with a random offset and scale each."""
    pts = rng.standard_normal((n, num_points, 3)) * rng.uniform(0.2, 3.0, (n, 1, 1)) + rng.uniform(-2, 2, (n, 1, 3))
    return pts.astype(np.float32)


def _part_ranges() -> list[range]:
    out, off = [], 0
    for _, _, k in SHAPENETPART_CATEGORIES:
        out.append(range(off, off + k))
        off += k
    return out


def _chunks(n: int, files: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, files + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------------------------------- ModelNet40
def write_modelnet40_h5(
    root,
    n_train: int = 8,
    n_test: int = 4,
    num_points: int = 64,
    files_per_split: int = 2,
    list_prefix: str = "data/modelnet40_ply_hdf5_2048/",
    seed: int = 0,
) -> Path:
    """``modelnet40_ply_hdf5_2048``: shape_names.txt, {train,test}_files.txt listing ``list_prefix`` +
    ply_data_{split}N.h5 (so the loader must resolve them by basename), each with ``data`` float32 (n, P, 3),
    ``label`` uint8 (n, 1) and the real files' extra ``normal`` / ``faceId`` datasets."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (root / "shape_names.txt").write_text("\n".join(MODELNET40_NAMES) + "\n")
    for split, n in (("train", n_train), ("test", n_test)):
        data = random_clouds(rng, n, num_points)
        labels = (np.arange(n) % len(MODELNET40_NAMES)).astype(np.uint8).reshape(n, 1)
        names = []
        for k, (a, b) in enumerate(_chunks(n, files_per_split)):
            fname = f"ply_data_{split}{k}.h5"
            with h5py.File(root / fname, "w") as f:
                f.create_dataset("data", data=data[a:b])
                f.create_dataset("label", data=labels[a:b])
                f.create_dataset("normal", data=np.zeros_like(data[a:b]))
                f.create_dataset("faceId", data=np.zeros((b - a, num_points), dtype=np.int32))
            names.append(list_prefix + fname)
        (root / f"{split}_files.txt").write_text("\n".join(names) + "\n")
    return root


def write_modelnet40_resampled(
    root,
    n_train: int = 4,
    n_test: int = 2,
    num_points: int = 64,
    classes: tuple[str, ...] = ("airplane", "night_stand"),
    seed: int = 0,
) -> Path:
    """``modelnet40_normal_resampled``: modelnet40_shape_names.txt (all 40), modelnet40_{train,test}.txt with ids
    ``<class>_NNNN`` cycling through ``classes``, and ``<class>/<id>.txt`` with ``num_points`` comma-separated
    ``x,y,z,nx,ny,nz`` lines (unit normals)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_NAMES) + "\n")
    counter = {c: 0 for c in classes}
    for split, n in (("train", n_train), ("test", n_test)):
        ids = []
        for i in range(n):
            cls = classes[i % len(classes)]
            counter[cls] += 1
            shape_id = f"{cls}_{counter[cls]:04d}"
            xyz = random_clouds(rng, 1, num_points)[0]
            normals = rng.standard_normal((num_points, 3))
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            rows = np.concatenate([xyz, normals], 1)
            (root / cls).mkdir(exist_ok=True)
            np.savetxt(root / cls / f"{shape_id}.txt", rows, fmt="%.6f", delimiter=",")
            ids.append(shape_id)
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    return root


# ------------------------------------------------------------------------------------------------- ScanObjectNN
def write_scanobjectnn(
    root,
    n_train: int = 6,
    n_test: int = 3,
    num_points: int = 64,
    variants: tuple[str, ...] = ("obj_bg", "obj_only", "pb_t50_rs"),
    subdir: str = "h5_files",
    seed: int = 0,
) -> Path:
    """ScanObjectNN ``h5_files/``: for each variant, ``<main_split|main_split_nobg>/<training|test>_*.h5`` with
    ``data`` float32 (n, P, 3), ``label`` (n,) and ``mask`` (n, P). Returns ``root`` (the files live under
    ``root/subdir``; the loader finds them either way)."""
    root = Path(root)
    base = root / subdir if subdir else root
    rng = np.random.default_rng(seed)
    for variant in variants:
        sub, train_file, test_file = SCANOBJECTNN_FILES[variant]
        (base / sub).mkdir(parents=True, exist_ok=True)
        for fname, n in ((train_file, n_train), (test_file, n_test)):
            with h5py.File(base / sub / fname, "w") as f:
                f.create_dataset("data", data=random_clouds(rng, n, num_points))
                f.create_dataset("label", data=(np.arange(n) % 15).astype(np.int64))
                f.create_dataset("mask", data=(rng.random((n, num_points)) < 0.7).astype(np.int64))
    return root


# ------------------------------------------------------------------------------------------------- ShapeNetPart
def write_shapenetpart_h5(
    root,
    n_train: int = 4,
    n_val: int = 2,
    n_test: int = 2,
    num_points: int = 64,
    subdir: str = "hdf5_data",
    seed: int = 0,
) -> Path:
    """PointNet's ``hdf5_data``: all_object_categories.txt, {train,val,test}_hdf5_file_list.txt (basenames) and
    ply_data_{split}0.h5 with ``data`` float32 (n, P, 3), ``label`` uint8 (n, 1) (category ``i % 16``) and
    ``pid`` uint8 (n, P) drawn from that category's global part ids. Returns ``root`` (files under ``root/subdir``)."""
    root = Path(root)
    base = root / subdir if subdir else root
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ranges = _part_ranges()
    (base / "all_object_categories.txt").write_text(
        "".join(f"{c}\t{s}\n" for c, s, _ in SHAPENETPART_CATEGORIES)
    )
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = np.arange(n) % len(SHAPENETPART_CATEGORIES)
        pid = np.stack([rng.integers(ranges[c].start, ranges[c].stop, num_points) for c in labels])
        fname = f"ply_data_{split}0.h5"
        with h5py.File(base / fname, "w") as f:
            f.create_dataset("data", data=random_clouds(rng, n, num_points))
            f.create_dataset("label", data=labels.astype(np.uint8).reshape(n, 1))
            f.create_dataset("pid", data=pid.astype(np.uint8))
        (base / f"{split}_hdf5_file_list.txt").write_text(fname + "\n")
    return root


def write_shapenetpart_txt(
    root,
    n_train: int = 3,
    n_val: int = 2,
    n_test: int = 2,
    point_counts: tuple[int, int] = (40, 90),
    seed: int = 0,
) -> Path:
    """``shapenetcore_partanno_segmentation_benchmark_v0_normal``: synsetoffset2category.txt,
    train_test_split/shuffled_{train,val,test}_file_list.json (``shape_data/<synset>/<id>``) and
    ``<synset>/<id>.txt`` with a variable number (in ``point_counts``) of space-separated
    ``x y z nx ny nz part`` lines, part a float-formatted global part id of the shape's category ``i % 16``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ranges = _part_ranges()
    (root / "synsetoffset2category.txt").write_text("".join(f"{c}\t{s}\n" for c, s, _ in SHAPENETPART_CATEGORIES))
    (root / "train_test_split").mkdir(exist_ok=True)
    k = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        entries = []
        for i in range(n):
            cat = i % len(SHAPENETPART_CATEGORIES)
            synset = SHAPENETPART_CATEGORIES[cat][1]
            shape_id = f"{k:08x}{'ab' * 12}"
            k += 1
            count = int(rng.integers(point_counts[0], point_counts[1] + 1))
            xyz = random_clouds(rng, 1, count)[0]
            normals = rng.standard_normal((count, 3))
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            part = rng.integers(ranges[cat].start, ranges[cat].stop, count).astype(np.float64)
            (root / synset).mkdir(exist_ok=True)
            np.savetxt(root / synset / f"{shape_id}.txt", np.concatenate([xyz, normals, part[:, None]], 1),
                       fmt="%.6f", delimiter=" ")
            entries.append(f"shape_data/{synset}/{shape_id}")
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))
    return root

"""ShapeNetPart part segmentation: 16 object categories, 50 global part ids.

Two layouts, detected automatically (option ``layout``: ``auto`` (default), ``h5`` or ``txt``):

- ``h5`` (PointNet's ``hdf5_data``): ``{train,val,test}_hdf5_file_list.txt`` listing ``ply_data_*.h5`` files with
  ``data`` (n, 2048, 3), ``label`` (n, 1) (the category) and ``pid`` (n, 2048) (global part ids);
  ``all_object_categories.txt`` (``Airplane\\t02691156`` lines). The root may be the folder holding ``hdf5_data/``.
- ``txt`` (``shapenetcore_partanno_segmentation_benchmark_v0_normal``): ``synsetoffset2category.txt``,
  ``train_test_split/shuffled_{train,val,test}_file_list.json`` (entries ``shape_data/<synset>/<id>``) and
  ``<synset>/<id>.txt`` files with ``x y z nx ny nz part`` lines, a variable number of them per shape; each shape
  is resampled to ``num_raw_points`` (default 2048) in a seeded order that depends only on its id.

Split ``trainval`` is train followed by val.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import KdpcError
from .base import (
    PointCloudDataset,
    check_split,
    layout_error,
    one_line,
    read_h5,
    read_lines,
    resample_indices,
    resolve_listed_file,
    resolve_num_points,
    resolve_root,
    string_seed,
)
from .modelnet40 import read_text_cloud
from .registry import register_dataset

SPLITS = ("train", "val", "test", "trainval")
H5_DIR = "hdf5_data"
TXT_DIR = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
# (category, synset, number of parts); global part ids are consecutive in this order (Airplane 0-3 ... Table 47-49)
CATEGORIES: tuple[tuple[str, str, int], ...] = (
    ("Airplane", "02691156", 4),
    ("Bag", "02773838", 2),
    ("Cap", "02954340", 2),
    ("Car", "02958343", 4),
    ("Chair", "03001627", 4),
    ("Earphone", "03261776", 3),
    ("Guitar", "03467517", 3),
    ("Knife", "03624134", 2),
    ("Lamp", "03636649", 4),
    ("Laptop", "03642806", 2),
    ("Motorbike", "03790512", 6),
    ("Mug", "03797390", 2),
    ("Pistol", "03948459", 3),
    ("Rocket", "04099429", 3),
    ("Skateboard", "04225987", 3),
    ("Table", "04379243", 3),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c for c, _, _ in CATEGORIES)
SYNSET_TO_INDEX = {s: i for i, (_, s, _) in enumerate(CATEGORIES)}
CATEGORY_PARTS: dict[int, list[int]] = {}
PART_NAMES: list[str] = []
for _i, (_cat, _syn, _n) in enumerate(CATEGORIES):
    CATEGORY_PARTS[_i] = list(range(len(PART_NAMES), len(PART_NAMES) + _n))
    PART_NAMES.extend(f"{_cat}/{_k}" for _k in range(_n))
NUM_PARTS = len(PART_NAMES)  # 50


def _split_parts(split: str) -> tuple[str, ...]:
    return ("train", "val") if split == "trainval" else (split,)


def _check_categories(name: str, path: Path) -> None:
    """``all_object_categories.txt`` / ``synsetoffset2category.txt`` must be the standard 16 (name, synset) pairs."""
    found = []
    for line in read_lines(path):
        fields = line.split()
        if len(fields) < 2:
            raise KdpcError(f"{name}: {str(path)!r} line {line!r} is not '<Category> <synset>'")
        found.append((fields[0].lower(), fields[1]))
    standard = {(c.lower(), s) for c, s, _ in CATEGORIES}
    unknown = [f"{c} {s}" for c, s in found if (c, s) not in standard]
    if unknown:
        raise KdpcError(
            f"{name}: {str(path)!r} has categories that are not the 16 ShapeNetPart ones: {', '.join(unknown)}"
        )


def _load_h5(name: str, folder: Path, split: str):
    expected = (
        f"<root>/{{train,val,test}}_hdf5_file_list.txt listing ply_data_*.h5 files with 'data' (n, 2048, 3), "
        f"'label' (n, 1) and 'pid' (n, 2048) (the {H5_DIR} layout)"
    )
    cats = folder / "all_object_categories.txt"
    if cats.is_file():
        _check_categories(name, cats)
    datas, labels, pids = [], [], []
    for part in _split_parts(split):
        list_file = folder / f"{part}_hdf5_file_list.txt"
        if not list_file.is_file():
            raise layout_error(name, folder, expected)
        entries = read_lines(list_file)
        if not entries:
            raise KdpcError(f"{name}: {str(list_file)!r} lists no files; expected {expected}")
        for entry in entries:
            path = resolve_listed_file(name, folder, entry, list_file)
            arr = read_h5(name, path, ("data", "label", "pid"), expected)
            data, label, pid = arr["data"], np.asarray(arr["label"]).reshape(-1), np.asarray(arr["pid"])
            if data.ndim != 3 or data.shape[2] < 3 or label.shape[0] != data.shape[0] or pid.shape != data.shape[:2]:
                raise KdpcError(
                    f"{name}: {str(path)!r} has 'data' {list(data.shape)}, 'label' {list(label.shape)}, "
                    f"'pid' {list(pid.shape)}; expected {expected}"
                )
            if datas and data.shape[1] != datas[0].shape[1]:
                raise KdpcError(f"{name}: {str(path)!r} has {data.shape[1]} points per cloud, the files before "
                                f"it {datas[0].shape[1]}; all files must agree")
            datas.append(np.asarray(data[:, :, :3], dtype=np.float32))
            labels.append(label.astype(np.int64))
            pids.append(pid.astype(np.int64))
    return np.concatenate(datas), np.concatenate(labels), np.concatenate(pids)


def _load_txt(name: str, folder: Path, split: str, num_raw_points: int):
    expected = (
        f"<root>/synsetoffset2category.txt, <root>/train_test_split/shuffled_{{train,val,test}}_file_list.json "
        f"and <root>/<synset>/<id>.txt files with 'x y z nx ny nz part' lines (the {TXT_DIR} layout)"
    )
    cats = folder / "synsetoffset2category.txt"
    if not cats.is_file():
        raise layout_error(name, folder, expected)
    _check_categories(name, cats)
    entries: list[str] = []
    for part in _split_parts(split):
        list_file = folder / "train_test_split" / f"shuffled_{part}_file_list.json"
        if not list_file.is_file():
            raise layout_error(name, folder, expected)
        try:
            with open(list_file, encoding="utf-8") as f:
                items = json.load(f)
        except (OSError, ValueError) as exc:
            raise KdpcError(f"{name}: cannot read {str(list_file)!r} as a JSON list ({one_line(exc)})") from None
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise KdpcError(f"{name}: {str(list_file)!r} must be a JSON list of 'shape_data/<synset>/<id>' strings")
        entries.extend(items)
    if not entries:
        raise KdpcError(f"{name}: the {split} file lists are empty; expected {expected}")
    points = np.empty((len(entries), num_raw_points, 3), dtype=np.float32)
    labels = np.empty(len(entries), dtype=np.int64)
    pids = np.empty((len(entries), num_raw_points), dtype=np.int64)
    for k, entry in enumerate(entries):
        bits = entry.strip("/").split("/")
        if len(bits) < 2 or bits[-2] not in SYNSET_TO_INDEX:
            raise KdpcError(f"{name}: file list entry {entry!r} is not 'shape_data/<synset>/<id>' with a "
                            f"ShapeNetPart synset")
        synset, shape_id = bits[-2], bits[-1]
        path = folder / synset / f"{shape_id}.txt"
        if not path.is_file():
            raise KdpcError(f"{name}: the {split} list names {entry!r} but {str(path)!r} is missing; "
                            f"expected {expected}")
        arr = read_text_cloud(name, path, None, 7, None)
        idx = resample_indices(string_seed(f"{synset}/{shape_id}"), arr.shape[0], num_raw_points)
        points[k] = arr[idx, :3]
        part = arr[idx, 6]
        pid = np.rint(part).astype(np.int64)
        if np.any(np.abs(part - pid) > 1e-3):
            raise KdpcError(f"{name}: {str(path)!r} has non-integer part labels in its 7th column")
        pids[k] = pid
        labels[k] = SYNSET_TO_INDEX[synset]
    return points, labels, pids


@register_dataset(
    "shapenetpart",
    "ShapeNetPart part segmentation, 16 categories / 50 parts (hdf5_data or the "
    "shapenetcore_partanno_segmentation_benchmark_v0_normal text layout; splits train/val/test/trainval)",
    splits=SPLITS,
)
def shapenetpart(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    layout: str | None = None,
    num_raw_points: int | None = None,
) -> PointCloudDataset:
    name = "shapenetpart"
    check_split(name, split, SPLITS)
    layout = "auto" if layout is None else layout
    if layout not in ("auto", "h5", "txt"):
        raise KdpcError(f"{name}: option layout must be auto, h5 or txt, got {layout!r}")
    if num_raw_points is not None and (
        isinstance(num_raw_points, bool) or not isinstance(num_raw_points, (int, np.integer)) or num_raw_points < 1
    ):
        raise KdpcError(f"{name}: option num_raw_points must be a positive integer, got {num_raw_points!r}")
    h5_dir = resolve_root(
        name, root, "train_hdf5_file_list.txt", subdirs=(H5_DIR, f"shapenet_part_seg_hdf5_data/{H5_DIR}")
    )
    txt_dir = resolve_root(name, root, "synsetoffset2category.txt", subdirs=(TXT_DIR,))
    has_h5 = (h5_dir / "train_hdf5_file_list.txt").is_file()
    has_txt = (txt_dir / "synsetoffset2category.txt").is_file()
    if layout == "auto":
        if not (has_h5 or has_txt):
            raise layout_error(
                name,
                h5_dir,
                f"either <root>/{H5_DIR}/{{train,val,test}}_hdf5_file_list.txt with ply_data_*.h5 files ('data', "
                f"'label', 'pid') or <root>/synsetoffset2category.txt with train_test_split/*.json and "
                f"<synset>/<id>.txt files ({TXT_DIR})",
            )
        layout = "h5" if has_h5 else "txt"
    if layout == "h5":
        points, labels, pids = _load_h5(name, h5_dir, split)
        if num_raw_points is not None:
            if num_raw_points > points.shape[1]:
                raise KdpcError(f"{name}: num_raw_points={num_raw_points} but the h5 clouds have "
                                f"{points.shape[1]} points")
            points, pids = points[:, :num_raw_points], pids[:, :num_raw_points]
        folder = h5_dir
    else:
        points, labels, pids = _load_txt(name, txt_dir, split, 2048 if num_raw_points is None else int(num_raw_points))
        folder = txt_dir
    return PointCloudDataset(
        name=name,
        split=split,
        task="partseg",
        class_names=CATEGORY_NAMES,
        points=points,
        labels=labels,
        num_points=resolve_num_points(num_points, 2048),
        config={"layout": layout, "num_raw_points": int(points.shape[1])},
        part_labels=pids,
        part_names=PART_NAMES,
        category_parts=CATEGORY_PARTS,
        root=str(folder),
    )

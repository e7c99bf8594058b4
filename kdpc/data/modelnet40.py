"""ModelNet40 in its two common distributions.

``modelnet40``: PointNet's ``modelnet40_ply_hdf5_2048``: ``train_files.txt`` / ``test_files.txt`` list
``ply_data_{train,test}N.h5`` (often as ``data/modelnet40_ply_hdf5_2048/ply_data_train0.h5``; resolved by basename
inside the root), each with ``data`` float32 (n, 2048, 3) and ``label`` (n, 1); ``shape_names.txt`` names the
classes. 9,840 train / 2,468 test shapes. The first ``num_points`` points are the evaluation view.

``modelnet40-resampled``: PointNet++'s ``modelnet40_normal_resampled``: ``modelnet40_shape_names.txt``,
``modelnet40_{train,test}.txt`` (ids like ``airplane_0001``), files ``<class>/<id>.txt`` with comma-separated
``x,y,z,nx,ny,nz`` lines (10,000 per file); the first ``num_raw_points`` lines are used.
"""

from __future__ import annotations

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
    resolve_listed_file,
    resolve_num_points,
    resolve_root,
)
from .registry import register_dataset

SPLITS = ("train", "test")
H5_LAYOUT = "modelnet40_ply_hdf5_2048"
RESAMPLED_LAYOUT = "modelnet40_normal_resampled"


def read_cls_h5_files(name: str, folder: Path, list_file: Path, expected: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``data`` / ``label`` of the h5 files listed in ``list_file`` (in list order)."""
    entries = read_lines(list_file)
    if not entries:
        raise KdpcError(f"{name}: {str(list_file)!r} lists no files; expected {expected}")
    datas, labels = [], []
    for entry in entries:
        path = resolve_listed_file(name, folder, entry, list_file)
        arrays = read_h5(name, path, ("data", "label"), expected)
        data, label = arrays["data"], np.asarray(arrays["label"]).reshape(-1)
        if data.ndim != 3 or data.shape[2] < 3:
            raise KdpcError(f"{name}: 'data' in {str(path)!r} has shape {list(data.shape)}; expected {expected}")
        if label.shape[0] != data.shape[0]:
            raise KdpcError(
                f"{name}: {str(path)!r} has {data.shape[0]} clouds but {label.shape[0]} labels; expected {expected}"
            )
        if datas and data.shape[1] != datas[0].shape[1]:
            raise KdpcError(
                f"{name}: {str(path)!r} has {data.shape[1]} points per cloud, the files before it "
                f"{datas[0].shape[1]}; all files of a split must agree"
            )
        datas.append(np.asarray(data[:, :, :3], dtype=np.float32))
        labels.append(label.astype(np.int64))
    return np.concatenate(datas), np.concatenate(labels)


@register_dataset(
    "modelnet40",
    "ModelNet40 from PointNet's modelnet40_ply_hdf5_2048 (train/test_files.txt + ply_data_*.h5, 2048 points)",
)
def modelnet40(
    root: str | Path | None = None, split: str = "train", num_points: int | None = None
) -> PointCloudDataset:
    name = "modelnet40"
    check_split(name, split, SPLITS)
    folder = resolve_root(name, root, "train_files.txt", subdirs=(H5_LAYOUT, f"data/{H5_LAYOUT}"))
    expected = (
        f"<root>/{split}_files.txt listing ply_data_{split}*.h5 (with 'data' float32 (n, 2048, 3) and "
        f"'label' (n, 1)) and <root>/shape_names.txt (the {H5_LAYOUT} layout)"
    )
    list_file = folder / f"{split}_files.txt"
    names_file = folder / "shape_names.txt"
    if not list_file.is_file() or not names_file.is_file():
        raise layout_error(name, folder, expected)
    class_names = read_lines(names_file)
    points, labels = read_cls_h5_files(name, folder, list_file, expected)
    return PointCloudDataset(
        name=name,
        split=split,
        task="cls",
        class_names=class_names,
        points=points,
        labels=labels,
        num_points=resolve_num_points(num_points, 1024),
        config={"layout": H5_LAYOUT},
        root=str(folder),
    )


def read_text_cloud(name: str, path: Path, rows: int | None, cols: int, delimiter: str | None) -> np.ndarray:
    """The first ``rows`` (default all) lines of a numeric text file as float32 [rows, >= cols]."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            arr = np.loadtxt(path, delimiter=delimiter, max_rows=rows, dtype=np.float64, ndmin=2)
    except (ValueError, IndexError) as exc:
        sep = "comma" if delimiter == "," else "space"
        raise KdpcError(f"{name}: cannot parse {str(path)!r} as {sep}-separated numbers ({one_line(exc)})") from None
    if arr.shape[0] == 0:
        raise KdpcError(f"{name}: {str(path)!r} contains no points")
    if rows is not None and arr.shape[0] < rows:
        raise KdpcError(
            f"{name}: {str(path)!r} has {arr.shape[0]} points but {rows} are needed; lower num_raw_points"
        )
    if arr.shape[1] < cols:
        raise KdpcError(f"{name}: {str(path)!r} has {arr.shape[1]} columns per line, expected at least {cols}")
    return arr.astype(np.float32)


@register_dataset(
    "modelnet40-resampled",
    "ModelNet40 from PointNet++'s modelnet40_normal_resampled (<class>/<id>.txt x,y,z,nx,ny,nz; options "
    "num_raw_points, use_normals)",
)
def modelnet40_resampled(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    num_raw_points: int | None = None,
    use_normals: bool | None = None,
) -> PointCloudDataset:
    name = "modelnet40-resampled"
    check_split(name, split, SPLITS)
    num_raw_points = 2048 if num_raw_points is None else num_raw_points
    use_normals = False if use_normals is None else use_normals
    if isinstance(num_raw_points, bool) or not isinstance(num_raw_points, (int, np.integer)) or num_raw_points < 1:
        raise KdpcError(f"{name}: option num_raw_points must be a positive integer, got {num_raw_points!r}")
    if not isinstance(use_normals, (bool, np.bool_)):
        raise KdpcError(f"{name}: option use_normals must be true or false, got {use_normals!r}")
    folder = resolve_root(name, root, "modelnet40_shape_names.txt", subdirs=(RESAMPLED_LAYOUT,))
    expected = (
        f"<root>/modelnet40_shape_names.txt, <root>/modelnet40_{split}.txt (ids like airplane_0001) and "
        f"<root>/<class>/<id>.txt files with x,y,z,nx,ny,nz lines (the {RESAMPLED_LAYOUT} layout)"
    )
    names_file = folder / "modelnet40_shape_names.txt"
    list_file = folder / f"modelnet40_{split}.txt"
    if not names_file.is_file() or not list_file.is_file():
        raise layout_error(name, folder, expected)
    class_names = read_lines(names_file)
    index = {c: i for i, c in enumerate(class_names)}
    ids = read_lines(list_file)
    if not ids:
        raise KdpcError(f"{name}: {str(list_file)!r} lists no shapes; expected {expected}")
    cols = 6 if use_normals else 3
    points = np.empty((len(ids), int(num_raw_points), cols), dtype=np.float32)
    labels = np.empty(len(ids), dtype=np.int64)
    for k, shape_id in enumerate(ids):
        cls = shape_id.rsplit("_", 1)[0]
        if cls not in index:
            raise KdpcError(
                f"{name}: {list_file.name} lists {shape_id!r} whose class {cls!r} is not in {names_file.name}"
            )
        path = folder / cls / f"{shape_id}.txt"
        if not path.is_file():
            raise KdpcError(f"{name}: {list_file.name} lists {shape_id!r} but {str(path)!r} is missing; "
                            f"expected {expected}")
        points[k] = read_text_cloud(name, path, int(num_raw_points), cols, ",")[:, :cols]
        labels[k] = index[cls]
    return PointCloudDataset(
        name=name,
        split=split,
        task="cls",
        class_names=class_names,
        points=points,
        labels=labels,
        num_points=resolve_num_points(num_points, 1024),
        config={"layout": RESAMPLED_LAYOUT, "num_raw_points": int(num_raw_points), "use_normals": bool(use_normals)},
        root=str(folder),
    )

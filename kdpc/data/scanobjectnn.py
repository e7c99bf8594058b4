"""ScanObjectNN (h5 files): ``data`` (n, 2048, 3), ``label`` (n,), ``mask`` (unused), 15 classes.

Variants (option ``variant``): ``obj_bg`` = ``main_split/{training,test}_objectdataset.h5``, ``obj_only`` =
``main_split_nobg/{training,test}_objectdataset.h5``, ``pb_t50_rs`` (default, the hardest) =
``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``. The root may also be the folder holding
``h5_files/`` (as the archive extracts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import KdpcError
from .base import PointCloudDataset, check_split, layout_error, read_h5, resolve_num_points, resolve_root
from .registry import register_dataset

SPLITS = ("train", "test")
CLASS_NAMES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip
VARIANTS = {
    "obj_bg": ("main_split", "training_objectdataset.h5", "test_objectdataset.h5"),
    "obj_only": ("main_split_nobg", "training_objectdataset.h5", "test_objectdataset.h5"),
    "pb_t50_rs": (
        "main_split",
        "training_objectdataset_augmentedrot_scale75.h5",
        "test_objectdataset_augmentedrot_scale75.h5",
    ),
}


@register_dataset(
    "scanobjectnn",
    "ScanObjectNN real scans, 15 classes (h5; option variant: obj_bg, obj_only, pb_t50_rs (default))",
)
def scanobjectnn(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    variant: str | None = None,
) -> PointCloudDataset:
    name = "scanobjectnn"
    check_split(name, split, SPLITS)
    variant = "pb_t50_rs" if variant is None else variant
    if variant not in VARIANTS:
        raise KdpcError(f"{name}: unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    sub, train_file, test_file = VARIANTS[variant]
    folder = resolve_root(name, root, sub, subdirs=("h5_files",))
    fname = train_file if split == "train" else test_file
    path = folder / sub / fname
    expected = (
        f"<root>/{sub}/{fname} with 'data' (n, 2048, 3) and 'label' (n,) (ScanObjectNN h5_files, variant {variant})"
    )
    if not path.is_file():
        raise layout_error(name, folder, expected)
    arrays = read_h5(name, path, ("data", "label"), expected)
    data, labels = arrays["data"], np.asarray(arrays["label"]).reshape(-1)
    if data.ndim != 3 or data.shape[2] < 3 or labels.shape[0] != data.shape[0]:
        raise KdpcError(
            f"{name}: {str(path)!r} has 'data' {list(data.shape)} and 'label' {list(labels.shape)}; expected {expected}"
        )
    return PointCloudDataset(
        name=name,
        split=split,
        task="cls",
        class_names=CLASS_NAMES,
        points=np.asarray(data[:, :, :3], dtype=np.float32),
        labels=labels.astype(np.int64),
        num_points=resolve_num_points(num_points, 1024),
        config={"variant": variant},
        root=str(folder),
    )

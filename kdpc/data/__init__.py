"""Datasets: ``create_dataset(name, root=None, split="train", num_points=None, **cfg)`` -> ``PointCloudDataset``.

Registered: ``synthetic`` (the default; embedded, procedural), ``synthetic-parts`` (embedded part segmentation),
``modelnet40`` (modelnet40_ply_hdf5_2048), ``modelnet40-resampled`` (modelnet40_normal_resampled),
``scanobjectnn`` (h5 variants obj_bg / obj_only / pb_t50_rs) and ``shapenetpart`` (hdf5_data or the
shapenetcore_partanno_segmentation_benchmark_v0_normal text layout); scene datasets for semantic
segmentation (``kdpc.data.scenes``: ``synthetic-rooms``, ``s3dis``, ``scannet``) return a ``SceneDataset``.
"""

from .base import PointCloudDataset, normalize_points
from .registry import DATASETS, create_dataset, dataset_options, dataset_splits, has_validation, list_datasets
from .registry import register_dataset

# importing the loader modules registers them
from . import synthetic as _synthetic  # noqa: E402,F401
from . import modelnet40 as _modelnet40  # noqa: E402,F401
from . import scanobjectnn as _scanobjectnn  # noqa: E402,F401
from . import shapenetpart as _shapenetpart  # noqa: E402,F401
from . import folder as _folder  # noqa: E402,F401
from . import scenes as _scenes  # noqa: E402,F401  (synthetic-rooms, s3dis, scannet)

DEFAULT_DATASET = "synthetic"

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "PointCloudDataset",
    "create_dataset",
    "dataset_options",
    "list_datasets",
    "normalize_points",
    "register_dataset",
    "dataset_splits",
    "has_validation",
]

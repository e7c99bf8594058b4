"""Scene datasets for semantic segmentation: ``SceneDataset`` (ragged whole scenes) and its loaders:
``synthetic-rooms`` (embedded, procedural), ``s3dis`` (Pointcept npy folders or the original text release) and
``scannet`` (Pointcept npy folders). Importing this package registers them."""

from .base import IGNORE_INDEX, SCENE_ARRAYS, Scene, SceneDataset
from . import synthetic_rooms as _synthetic_rooms  # noqa: F401
from . import s3dis as _s3dis  # noqa: F401
from . import scannet as _scannet  # noqa: F401

__all__ = ["IGNORE_INDEX", "SCENE_ARRAYS", "Scene", "SceneDataset"]

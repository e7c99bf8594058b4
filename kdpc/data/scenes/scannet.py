"""``scannet``: ScanNet v2 scenes with the 20 benchmark classes, in Pointcept's preprocessed layout
``{train,val,test}/<scene>/coord.npy, color.npy, normal.npy, segment20.npy`` (label -1: unlabelled).

ScanNet's own ``test`` scenes have no labels, so kdpc's ``test`` split is ScanNet's ``val`` folder (what papers
report), ``train`` is the ``train`` folder, and ``--dataset-opt holdout=0.1`` holds a deterministic tenth of the
training scenes out as kdpc's ``val`` for choosing the epoch (otherwise training keeps its last epoch).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import KdpcError
from ..base import check_split
from ..registry import register_dataset
from ..channels import channels_text
from .base import SceneDataset, scene_channels
from .npy import read_npy_scene, scene_folders

NAME = "scannet"
CLASS_NAMES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
               "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
               "otherfurniture")
FOLDERS = {"train": "train", "test": "val"}  # kdpc split -> ScanNet folder
DEFAULT_NUM_POINTS = 80_000
DEFAULT_GRID = 0.02
EXPECTED = ("train/ and val/ folders holding one folder per scene with coord.npy, color.npy, normal.npy and "
            "segment20.npy (Pointcept's preprocessed ScanNet)")


@register_dataset(
    NAME,
    "ScanNet v2 scenes (20 classes) in Pointcept's npy folders; test = ScanNet's val scenes",
)
def scannet(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    channels: str | list[str] | None = None,
    grid_size: float | None = None,
) -> SceneDataset:
    check_split(NAME, split, tuple(FOLDERS))
    chosen = scene_channels(NAME, channels, "xyz+normals+rgb")
    base = Path(root).expanduser() if root is not None else Path("data") / NAME
    if not base.is_dir():
        raise KdpcError(f"{NAME}: data folder {str(base)!r} does not exist; pass --data-root pointing at {EXPECTED}")
    folder = base / FOLDERS[split]
    if not folder.is_dir():
        raise KdpcError(f"{NAME}: expected {EXPECTED} in {str(base)!r}; {str(folder)!r} is missing")
    scenes = [read_npy_scene(NAME, scene, scene.name, "segment20.npy", chosen) for scene in scene_folders(NAME, folder)]
    cfg = {"layout": "pointcept", "channels": channels_text(chosen),
           "grid_size": DEFAULT_GRID if grid_size is None else grid_size}
    return SceneDataset(name=NAME, split=split, class_names=CLASS_NAMES, scenes=scenes,
                        num_points=DEFAULT_NUM_POINTS if num_points is None else num_points,
                        grid_size=cfg["grid_size"], channels=chosen, config=cfg, root=str(base))

"""Pointcept's preprocessed scene folders: one folder per scene with ``coord.npy``, ``color.npy``, ``normal.npy``
and a label file (``segment.npy`` for S3DIS, ``segment20.npy`` for ScanNet).

Files are opened with ``allow_pickle=False`` (and memory-mapped where their dtype is already the one kept), so a
split far larger than RAM streams through the page cache. Older Pointcept releases stored scenes as ``.pth``
pickles; kdpc never unpickles them and says how to get the npy layout instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import KdpcError
from ..base import one_line
from .base import SCENE_ARRAYS, Scene, as_colors

PTH_HINT = ("kdpc never unpickles .pth scene files (a pickle can run code); re-run Pointcept's preprocessing "
            "script of this dataset, which writes the npy layout (one folder per scene with coord.npy, color.npy, "
            "normal.npy and the label file)")


def load_npy(dataset: str, path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle; a truncated or foreign file
        raise KdpcError(f"{dataset}: {str(path)!r} is not a plain numeric .npy array ({one_line(exc)})") from None
    except OSError as exc:
        raise KdpcError(f"{dataset}: cannot read {str(path)!r} ({one_line(exc)})") from None


def refuse_pth(dataset: str, folder: Path) -> None:
    if folder.is_dir() and any(folder.glob("*.pth")) or folder.suffix == ".pth":
        raise KdpcError(f"{dataset}: {str(folder)!r} holds .pth files; {PTH_HINT}")


def read_npy_scene(dataset: str, folder: Path, name: str, label_file: str, channels: tuple[str, ...]) -> Scene:
    """One scene folder; a missing required file is one error naming it. Only the arrays ``channels`` use are read."""
    if not (folder / "coord.npy").is_file():
        refuse_pth(dataset, folder)
    wanted = [SCENE_ARRAYS[group] for group in channels[1:]]
    required = ["coord.npy", label_file] + [f"{key}.npy" for key in wanted]
    missing = [f for f in required if not (folder / f).is_file()]
    if missing:
        raise KdpcError(f"{dataset}: scene folder {str(folder)!r} is missing {', '.join(missing)}; every scene "
                        f"needs {', '.join(required)}")
    coord = load_npy(dataset, folder / "coord.npy")
    if coord.dtype != np.float32:
        if not np.issubdtype(coord.dtype, np.number):
            raise KdpcError(f"{dataset}: {folder / 'coord.npy'} holds {coord.dtype}, not numbers")
        coord = np.asarray(coord, dtype=np.float32)
    segment = load_npy(dataset, folder / label_file)
    if not np.issubdtype(segment.dtype, np.integer):
        raise KdpcError(f"{dataset}: {folder / label_file} holds {segment.dtype}; labels must be integers")
    if segment.ndim == 2 and segment.shape[1] == 1:  # Pointcept writes [n, 1] for some datasets
        segment = segment.reshape(-1)
    color = normal = None
    if "color" in wanted:
        color = load_npy(dataset, folder / "color.npy")
        if color.dtype != np.uint8:
            color = as_colors(dataset, name, np.asarray(color))
    if "normal" in wanted:
        normal = load_npy(dataset, folder / "normal.npy")
        if normal.dtype != np.float32:
            normal = np.asarray(normal, dtype=np.float32)
    return Scene(name=name, coord=coord, segment=segment, color=color, normal=normal)


def scene_folders(dataset: str, parent: Path) -> list[Path]:
    """The scene folders in ``parent``, sorted by name (stray files such as .DS_Store are skipped)."""
    refuse_pth(dataset, parent)
    return sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)

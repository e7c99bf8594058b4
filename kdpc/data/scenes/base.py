"""The in-memory (or memory-mapped) scene dataset every scene loader returns.

A ``SceneDataset`` is a split of whole scenes of different sizes: per scene ``coord`` [n, 3] float32 (metres),
``segment`` [n] (class ids, -1 = unlabelled), optional ``color`` [n, 3] uint8 and ``normal`` [n, 3] float32. Scenes
are kept as loaded (no centring: views centre them, see ``kdpc.scenes.transforms``). ``num_points`` is the most
points a training view keeps (a seeded crop), ``grid_size`` the voxel edge of every view, ``channels`` the input
columns of a model (``kdpc.data.channels``: ``xyz`` first, then ``normals`` and / or ``rgb``, 3 columns each).
Everything a checkpoint or store needs about it is in ``describe()``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ...errors import KdpcError
from ...hashing import hash_arrays
from ..channels import channels_text, parse_channels

SCENE_ARRAYS = {"normals": "normal", "rgb": "color"}  # channel group -> the Scene array holding it
IGNORE_INDEX = -1
_FINGERPRINT_VERSION = b"kdpc-scene-fingerprint-v1\n"


@dataclass(frozen=True)
class Scene:
    name: str
    coord: np.ndarray  # [n, 3] float32
    segment: np.ndarray  # [n] integer class ids, IGNORE_INDEX = unlabelled
    color: np.ndarray | None = None  # [n, 3] uint8
    normal: np.ndarray | None = None  # [n, 3] float32

    @property
    def num_points(self) -> int:
        return int(self.coord.shape[0])


def scene_channels(dataset: str, value: Any, default: str) -> tuple[str, ...]:
    """The ``channels`` option (``xyz+rgb``, ``xyz+normals+rgb``, a list; ``color`` / ``normal`` are aliases)."""
    return parse_channels(default if value is None else value, what=f"{dataset}: option channels")


def as_colors(dataset: str, scene: str, color: np.ndarray) -> np.ndarray:
    """uint8 [n, 3] from uint8, or from floats in [0, 255] (values <= 1 everywhere are taken as 0-1 colours)."""
    color = np.asarray(color)
    if color.dtype == np.uint8:
        return color
    values = color.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise KdpcError(f"{dataset}: scene {scene}: colours contain NaN or infinite values")
    top = float(values.max()) if values.size else 0.0
    if float(values.min(initial=0.0)) < 0 or top > 255:
        raise KdpcError(f"{dataset}: scene {scene}: colours must lie in 0..255 (or 0..1), found "
                        f"{float(values.min()):g}..{top:g}")
    if top <= 1.0:
        values = values * 255.0
    return np.round(values).astype(np.uint8)


def check_scene(dataset: str, scene: Scene, num_classes: int, channels: Iterable[str]) -> None:
    """One ``KdpcError`` naming the scene for anything a model cannot train on."""
    where = f"{dataset}: scene {scene.name}"
    coord = scene.coord
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise KdpcError(f"{where}: coordinates must have shape [n, 3], got {list(coord.shape)}")
    n = coord.shape[0]
    if n == 0:
        raise KdpcError(f"{where} has zero points")
    if not np.all(np.isfinite(coord)):
        raise KdpcError(f"{where}: coordinates contain NaN or infinite values")
    if scene.segment.shape != (n,):
        raise KdpcError(f"{where}: {scene.segment.shape[0] if scene.segment.ndim else 0} labels for {n} points")
    if scene.segment.size:
        lo, hi = int(scene.segment.min()), int(scene.segment.max())
        if lo < IGNORE_INDEX or hi >= num_classes:
            raise KdpcError(f"{where}: labels outside the class range: found {lo}..{hi}, expected 0..{num_classes - 1} "
                            f"({num_classes} classes; {IGNORE_INDEX} marks unlabelled points)")
    for group in list(channels)[1:]:
        key = SCENE_ARRAYS[group]
        arr = getattr(scene, key)
        if arr is None:
            raise KdpcError(f"{where} has no {key}; leave {group} out of the channels option")
        if arr.shape != (n, 3):
            raise KdpcError(f"{where}: {key} has shape {list(arr.shape)}, expected [{n}, 3]")
        if key == "normal" and not np.all(np.isfinite(arr)):
            raise KdpcError(f"{where}: normals contain NaN or infinite values")


class SceneDataset(Dataset):
    """A split of whole scenes for semantic segmentation. See the module docstring."""

    task = "semseg"

    def __init__(self, *, name: str, split: str, class_names: Sequence[str], scenes: Sequence[Scene],
                 num_points: int, grid_size: float, channels: Sequence[str], config: Mapping[str, Any] | None = None,
                 root: str | None = None, validate: bool = True, notes: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.split = split
        self.class_names = [str(c) for c in class_names]
        self.scenes = list(scenes)
        self.channels = tuple(channels)
        self.config: dict[str, Any] = dict(config or {})
        self.root = root
        self.notes = dict(notes or {})  # facts about the loading (e.g. skipped lines) shown by describe()
        if not self.scenes:
            raise KdpcError(f"{name} {split}: the split holds no scenes; check --data-root and the split's folders")
        if validate:
            for scene in self.scenes:
                check_scene(name, scene, self.num_classes, self.channels)
        if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
            raise KdpcError(f"{name}: num_points (the most points of a training view) must be an integer >= 1, "
                            f"got {num_points!r}")
        self.num_points = int(num_points)
        if isinstance(grid_size, bool) or not isinstance(grid_size, (int, float)) or not 0 < grid_size <= 10:
            raise KdpcError(f"{name}: grid_size must be a voxel edge in metres in (0, 10], got {grid_size!r}")
        self.grid_size = float(grid_size)
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_parts(self) -> int:
        return 0

    @property
    def output_names(self) -> list[str]:
        return list(self.class_names)

    @property
    def num_channels(self) -> int:
        """Input columns of a model: 3 per channel group (xyz first)."""
        return 3 * len(self.channels)

    @property
    def labels(self) -> np.ndarray:
        """One stratum for every scene, so ``holdout`` holds out a plain fraction of the scenes."""
        return np.zeros(len(self.scenes), dtype=np.int64)

    @property
    def total_points(self) -> int:
        return sum(s.num_points for s in self.scenes)

    def category_provenance(self) -> dict[str, Any]:
        return {"channels": channels_text(self.channels)}

    # ---------------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> Scene:
        return self.scenes[i]

    def subset(self, indices: np.ndarray, split: str, config: Mapping[str, Any]) -> "SceneDataset":
        return SceneDataset(name=self.name, split=split, class_names=self.class_names,
                            scenes=[self.scenes[int(i)] for i in np.asarray(indices).reshape(-1)],
                            num_points=self.num_points, grid_size=self.grid_size, channels=self.channels,
                            config=config, root=self.root, validate=False, notes=self.notes)

    def fingerprint(self) -> str:
        """sha256 over every scene's name, coordinates, labels and feature arrays in use; cached."""
        if self._fingerprint is None:
            h = hashlib.sha256(_FINGERPRINT_VERSION)
            for scene in self.scenes:
                h.update(f"scene:{scene.name}\n".encode())
                arrays = [("coord", scene.coord, "<f4"), ("segment", scene.segment, "<i4")]
                for group in self.channels[1:]:
                    key = SCENE_ARRAYS[group]
                    arrays.append((key, getattr(scene, key), "u1" if key == "color" else "<f4"))
                hash_arrays(h, arrays)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "split": self.split,
            "task": self.task,
            "num_samples": len(self),
            "num_points": self.num_points,
            "total_points": self.total_points,
            "grid_size": self.grid_size,
            "channels": channels_text(self.channels),
            "num_channels": self.num_channels,
            "num_classes": self.num_classes,
            "ignore_index": IGNORE_INDEX,
            "fingerprint": self.fingerprint(),
            "config": dict(self.config),
        }
        if self.notes:
            out["notes"] = dict(self.notes)
        return out

    def __repr__(self) -> str:
        return (f"SceneDataset({self.name!r}, split={self.split!r}, scenes={len(self.scenes)}, "
                f"points={self.total_points}, classes={self.num_classes})")

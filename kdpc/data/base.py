"""The in-memory point-cloud dataset every loader returns, and helpers the loaders share.

A ``PointCloudDataset`` holds a whole split as numpy arrays: ``points`` ``[n, P_raw, C]`` (xyz first, then the
extra channel groups named by ``channels``: 3 columns xyz, 6 xyz + normals or xyz + rgb, 9 xyz + normals + rgb;
see ``kdpc.data.channels``), ``labels`` ``[n]`` and, for part segmentation, ``part_labels`` ``[n, P_raw]``. Every
sample is centred on its mean and scaled to max norm 1 once, at load. Item ``i`` is the deterministic evaluation
view: the first ``num_points`` raw points. Augmentation (a seeded subset of the raw points, scale, rotation) lives
elsewhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..errors import KdpcError
from ..hashing import hash_arrays, stable_permutation
from ..plugins import plugin_of
from .channels import GROUP_WIDTH, channels_text, default_channels, parse_channels

TASKS = ("cls", "partseg")
_FINGERPRINT_VERSION = b"kdpc-dataset-fingerprint-v1\n"


def normalize_points(points: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Centre each sample's xyz on its mean and scale it to max norm 1 (float64 maths, float32 result).

    Extra channels (normals) are returned unchanged. A degenerate sample (all points equal) is only centred.
    Works on ``chunk`` samples at a time to bound the float64 temporaries.
    """
    pts = np.asarray(points)
    out = np.empty(pts.shape, dtype=np.float32)
    for s in range(0, pts.shape[0], chunk):
        xyz = pts[s : s + chunk, :, :3].astype(np.float64)
        xyz = xyz - xyz.mean(axis=1, keepdims=True)
        radius = np.sqrt((xyz * xyz).sum(axis=-1)).max(axis=1)
        out[s : s + chunk, :, :3] = xyz / np.where(radius > 0, radius, 1.0)[:, None, None]
    if pts.shape[-1] > 3:
        out[..., 3:] = pts[..., 3:]
    return out


class PointCloudDataset(Dataset):
    """A split of a point-cloud dataset, held in memory. See the module docstring for the array layout."""

    def __init__(
        self,
        *,
        name: str,
        split: str,
        task: str,
        class_names: Sequence[str],
        points: np.ndarray,
        labels: np.ndarray,
        num_points: int,
        config: Mapping[str, Any] | None = None,
        part_labels: np.ndarray | None = None,
        part_names: Sequence[str] | None = None,
        category_parts: Mapping[int, Sequence[int]] | None = None,
        normalize: bool = True,
        root: str | None = None,
        channels: Sequence[str] | str | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        points = np.asarray(points)
        if points.ndim != 3 or points.shape[2] < 3 or points.shape[1] < 1:
            raise KdpcError(f"{name}: points must have shape [n, points, 3+], got {list(points.shape)}")
        if points.shape[0] == 0:
            raise KdpcError(f"{name} {split}: the split holds no samples; check --data-root and the split's files")
        if not np.all(np.isfinite(points)):
            raise KdpcError(f"{name} {split}: the point data contains NaN or infinite values")
        self.channels = default_channels(points.shape[2]) if channels is None else parse_channels(channels)
        if GROUP_WIDTH * len(self.channels) != points.shape[2]:
            raise KdpcError(f"{name}: points have {points.shape[2]} columns but channels "
                            f"{channels_text(self.channels)} need {GROUP_WIDTH * len(self.channels)}")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != points.shape[0]:
            raise KdpcError(f"{name}: {points.shape[0]} point clouds but {labels.shape[0]} labels")
        self.name = name
        self.split = split
        self.task = task
        self.root = root
        self.class_names = [str(c) for c in class_names]
        self.points = normalize_points(points) if normalize else np.ascontiguousarray(points, dtype=np.float32)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise KdpcError(
                f"{name} {split}: labels must lie in 0..{len(self.class_names) - 1} "
                f"({len(self.class_names)} classes), found {int(self.labels.min())}..{int(self.labels.max())}"
            )
        self.config: dict[str, Any] = dict(config or {})
        self.part_labels: np.ndarray | None = None
        self.part_names: list[str] = []
        self.category_parts: dict[int, list[int]] = {}
        if task == "partseg":
            if part_labels is None or part_names is None or category_parts is None:
                raise ValueError("a partseg dataset needs part_labels, part_names and category_parts")
            part_labels = np.ascontiguousarray(part_labels, dtype=np.int64)
            if part_labels.shape != self.points.shape[:2]:
                raise KdpcError(
                    f"{name} {split}: part labels have shape {list(part_labels.shape)}, "
                    f"expected one per point {list(self.points.shape[:2])}"
                )
            if part_labels.size and (part_labels.min() < 0 or part_labels.max() >= len(part_names)):
                raise KdpcError(
                    f"{name} {split}: part labels must lie in 0..{len(part_names) - 1}, "
                    f"found {int(part_labels.min())}..{int(part_labels.max())}"
                )
            self.part_labels = part_labels
            self.part_names = [str(p) for p in part_names]
            self.category_parts = {int(c): [int(p) for p in ps] for c, ps in category_parts.items()}
        self.num_points = self._check_num_points(num_points)
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------------------------------ properties
    def _check_num_points(self, num_points: int) -> int:
        if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)):
            raise KdpcError(f"{self.name}: num_points must be an integer, got {num_points!r}")
        num_points = int(num_points)
        if num_points < 1:
            raise KdpcError(f"{self.name}: num_points must be >= 1, got {num_points}")
        if num_points > self.num_raw_points:
            raise KdpcError(
                f"{self.name} {self.split}: num_points={num_points} but the samples have only "
                f"{self.num_raw_points} points; use num_points <= {self.num_raw_points}"
            )
        return num_points

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_raw_points(self) -> int:
        return int(self.points.shape[1])

    @property
    def num_channels(self) -> int:
        """Columns per point: 3 (xyz), 6 (xyz + normals or rgb), 9 (xyz + normals + rgb); see ``channels``."""
        return int(self.points.shape[2])

    @property
    def num_parts(self) -> int:
        return len(self.part_names) if self.task == "partseg" else 0

    @property
    def output_names(self) -> list[str]:
        """What a model's outputs are: part names for part segmentation, else class names."""
        return list(self.part_names if self.task == "partseg" else self.class_names)

    def category_provenance(self) -> dict[str, Any]:
        """What a checkpoint keeps about the object categories (part segmentation: which parts each one has)."""
        out: dict[str, Any] = {"categories": list(self.class_names)}
        if self.task == "partseg":
            out["category_parts"] = {str(k): list(v) for k, v in self.category_parts.items()}
        return out

    # ---------------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, i: int):
        n = self.num_points
        pts = np.array(self.points[i, :n], dtype=np.float32, copy=True)
        label = np.int64(self.labels[i])
        if self.task == "partseg":
            return pts, label, np.array(self.part_labels[i, :n], dtype=np.int64, copy=True)
        return pts, label

    def subset(self, indices: np.ndarray, split: str, config: Mapping[str, Any]) -> "PointCloudDataset":
        """Samples ``indices`` of this split as a split of its own (named ``split``, with ``config``)."""
        idx = np.asarray(indices, dtype=np.int64)
        return PointCloudDataset(
            name=self.name, split=split, task=self.task, class_names=self.class_names, points=self.points[idx],
            labels=self.labels[idx], num_points=self.num_points, config=config,
            part_labels=None if self.part_labels is None else self.part_labels[idx],
            part_names=self.part_names if self.task == "partseg" else None,
            category_parts=self.category_parts if self.task == "partseg" else None, normalize=False, root=self.root,
            channels=self.channels)

    def fingerprint(self) -> str:
        """sha256 hex over the split's points, labels (and part labels), with their shapes; cached."""
        if self._fingerprint is None:
            h = hashlib.sha256(_FINGERPRINT_VERSION)
            arrays = [("points", self.points, "<f4"), ("labels", self.labels, "<i8")]
            if self.part_labels is not None:
                arrays.append(("part_labels", self.part_labels, "<i8"))
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
            "num_raw_points": self.num_raw_points,
            "num_channels": self.num_channels,
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint(),
            "config": dict(self.config),
        }
        if self.task == "partseg":
            out["num_parts"] = self.num_parts
        if self.num_channels > 3:
            out["channels"] = channels_text(self.channels)
        plugin = plugin_of("dataset", self.name)
        if plugin:
            out["plugin"] = plugin  # the user code that registered this dataset (kdpc --plugin)
        return out

    def __repr__(self) -> str:
        return (
            f"PointCloudDataset({getattr(self, 'name', '?')!r}, split={getattr(self, 'split', '?')!r}, "
            f"task={getattr(self, 'task', '?')!r}, points={getattr(self, 'num_points', '?')}/"
            f"{list(getattr(self, 'points', np.empty(0)).shape)}, classes={len(getattr(self, 'class_names', []))})"
        )


# ------------------------------------------------------------------------------------------- loader helpers
def check_split(name: str, split: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if split not in allowed:
        raise KdpcError(f"{name}: unknown split {split!r}; use one of {', '.join(allowed)}")
    return split


def resolve_num_points(num_points: int | None, default: int) -> int:
    return default if num_points is None else num_points


def resolve_root(name: str, root: str | Path | None, marker: str, subdirs: Sequence[str] = ()) -> Path:
    """The folder holding ``marker``: ``root`` itself or one of ``subdirs`` under it (default root ``data/<name>``).

    Falls back to ``root`` when the marker is nowhere, so the caller's error names the expected layout.
    """
    base = Path(root).expanduser() if root is not None else Path("data") / name
    if not base.is_dir():
        raise KdpcError(f"{name}: data folder {str(base)!r} does not exist; {_ROOT_HINT}")
    for cand in (base, *(base / s for s in subdirs)):
        if (cand / marker).exists():
            return cand
    return base


_ROOT_HINT = "pass --data-root (root=...) pointing at the extracted dataset"


def layout_error(name: str, root: Path, expected: str) -> KdpcError:
    return KdpcError(f"{name}: expected {expected} in {str(root)!r}; {_ROOT_HINT}")


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def resolve_listed_file(name: str, root: Path, entry: str, list_file: Path) -> Path:
    """A file named in a list file: as given (absolute or relative to root), else by its basename inside root."""
    entry = entry.strip().replace("\\", "/")
    cands = []
    p = Path(entry)
    if p.is_absolute():
        cands.append(p)
    else:
        cands.append(root / p)
    cands.append(root / p.name)
    for c in cands:
        if c.is_file():
            return c
    raise KdpcError(
        f"{name}: {list_file.name} lists {entry!r} but neither {str(root / p.name)!r} nor {str(cands[0])!r} exists; "
        f"the listed files must sit next to {list_file.name} (re-extract the dataset or fix --data-root)"
    )


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (the CLI prints KdpcErrors as a single line)."""
    return " ".join(str(exc).split())


def read_h5(name: str, path: Path, keys: Sequence[str], expected: str) -> dict[str, np.ndarray]:
    """Read whole datasets ``keys`` from an HDF5 file, with KdpcErrors naming the file and the expected layout."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise KdpcError(
            f"{name}: {str(path)!r} is not a readable HDF5 file ({one_line(exc)}); expected {expected}"
        ) from None
    with f:
        out = {}
        for key in keys:
            if key not in f or not isinstance(f[key], h5py.Dataset):
                have = ", ".join(sorted(f.keys())) or "none"
                raise KdpcError(
                    f"{name}: {str(path)!r} has no {key!r} dataset (it has: {have}); expected {expected}"
                )
            out[key] = f[key][()]
    return out


def string_seed(text: str, salt: int = 0) -> int:
    """A 64-bit seed from a string (sha256; the same in every process, unlike ``hash``)."""
    digest = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def resample_indices(seed: int, n_available: int, n_wanted: int) -> np.ndarray:
    """``n_wanted`` indices into ``n_available`` points in a seeded order; repeats only when there are too few."""
    if n_available < 1:
        raise ValueError("no points to resample")
    perm = stable_permutation(seed, n_available)
    if n_available >= n_wanted:
        return perm[:n_wanted]
    reps = -(-n_wanted // n_available)
    extra = np.concatenate([stable_permutation(seed + 1 + r, n_available) for r in range(reps)])
    return np.concatenate([perm, extra])[:n_wanted]

"""Reading one point cloud from a file, at a fixed number of points, with the channels asked for.

Point files: ``.npy`` / ``.npz`` (numpy, never unpickled), ``.txt`` / ``.xyz`` / ``.pts`` / ``.csv`` (whitespace or
comma separated numbers, ``#`` comments) and ``.ply`` (ascii and binary, read with ``plyfile``). Meshes: ``.off``,
``.obj``, ``.stl`` and ``.ply`` files with faces, read with ``trimesh`` and sampled uniformly on the surface (area
weighted) with a per-file seed, so the same file always gives the same points; normals of sampled points are the
normals of their faces. Meshes give xyz and normals, not colour.

Columns: ``xyz`` first, then ``normals`` and/or ``rgb`` as asked. Plain arrays (``.npy``, text, an ``.npz`` without
separate ``normals`` / ``rgb`` arrays) hold them in that order, extra columns ignored; ``.ply`` files name them
(``nx ny nz``, ``red green blue``). Colours are scaled to [0, 1] (integers and values above 1 are divided by 255).

Every cloud comes out with exactly ``num_points`` points: larger clouds keep a seeded subset, smaller ones repeat
points in a seeded order (``kdpc.data.base.resample_indices``); both depend only on the file's path and the seed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import KdpcError, exception_line
from .base import resample_indices

POINT_SUFFIXES = (".npy", ".npz", ".txt", ".xyz", ".pts", ".csv", ".ply")
MESH_SUFFIXES = (".off", ".obj", ".stl")
SUFFIXES = POINT_SUFFIXES + MESH_SUFFIXES

_NPZ_POINTS = ("points", "xyz", "pos", "data", "vertices", "coord")
_NPZ_GROUPS = {"normals": ("normals", "normal", "norm"), "rgb": ("rgb", "colors", "colours", "color", "colour")}
_PLY_GROUPS = {"xyz": ("x", "y", "z"), "normals": ("nx", "ny", "nz"), "rgb": ("red", "green", "blue")}


def read_cloud(path: Path, channels: Sequence[str], num_points: int, seed: int) -> np.ndarray:
    """``[num_points, 3 * len(channels)]`` float32 from ``path`` (see the module docstring); ``seed`` (64-bit) fixes
    the mesh sampling and the resampling of this file."""
    suffix = path.suffix.lower()
    try:
        if suffix in MESH_SUFFIXES:
            groups = _sample_mesh(path, channels, num_points, seed)
        elif suffix == ".ply":
            groups = _read_ply(path, channels, num_points, seed)
        elif suffix == ".npy":
            groups = _split_columns(path, _numeric_2d(path, np.load(path, allow_pickle=False)), channels)
        elif suffix == ".npz":
            groups = _read_npz(path, channels)
        elif suffix in POINT_SUFFIXES:
            groups = _split_columns(path, _read_text(path), channels)
        else:
            raise KdpcError(f"{path}: unsupported file type {suffix!r}; supported: {', '.join(SUFFIXES)}")
    except KdpcError:
        raise
    except Exception as exc:  # the parsers raise many types on damaged files (ValueError, EOFError, PlyParseError...)
        raise KdpcError(f"cannot read {path} ({exception_line(exc)})") from None
    cloud = np.concatenate([_as_rgb(groups[g]) if g == "rgb" else groups[g] for g in channels], axis=1)
    cloud = cloud.astype(np.float32)
    if cloud.shape[0] < 1:
        raise KdpcError(f"{path} holds no points")
    if not np.all(np.isfinite(cloud)):
        raise KdpcError(f"{path} holds NaN or infinite values")
    if cloud.shape[0] != num_points:
        cloud = cloud[resample_indices(seed, cloud.shape[0], num_points)]
    return np.ascontiguousarray(cloud)


# ------------------------------------------------------------------------------------------------- point files
def _numeric_2d(path: Path, arr: Any) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu" or arr.ndim != 2 or arr.shape[1] < 3:
        raise KdpcError(f"{path}: expected a numeric array [points, >= 3 columns], got {arr.dtype} {list(arr.shape)}")
    return arr


def _read_text(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip() and not line.lstrip().startswith("#")), "")
    delimiter = "," if "," in first else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
        try:
            arr = np.loadtxt(path, delimiter=delimiter, comments="#", dtype=np.float64, ndmin=2)
        except ValueError as exc:
            sep = "comma" if delimiter else "whitespace"
            raise KdpcError(f"{path}: not {sep}-separated numbers ({' '.join(str(exc).split())[:120]})") from None
    return _numeric_2d(path, arr)


def _split_columns(path: Path, arr: np.ndarray, channels: Sequence[str]) -> dict[str, np.ndarray]:
    need = 3 * len(channels)
    if arr.shape[1] < need:
        raise KdpcError(f"{path} has {arr.shape[1]} columns but channels {'+'.join(channels)} need {need} "
                        "(in that order)")
    return {g: arr[:, 3 * i : 3 * i + 3] for i, g in enumerate(channels)}


def _read_npz(path: Path, channels: Sequence[str]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = next((k for k in _NPZ_POINTS if k in arrays), None)
    if key is None:
        if len(arrays) != 1:
            raise KdpcError(f"{path}: no points array (one of {', '.join(_NPZ_POINTS)}); it holds {', '.join(arrays)}")
        key = next(iter(arrays))
    points = _numeric_2d(path, arrays[key])
    separate = {g: next((k for k in names if k in arrays), None) for g, names in _NPZ_GROUPS.items()}
    if not any(separate[g] for g in channels if g != "xyz"):
        return _split_columns(path, points, channels)
    groups = {"xyz": points[:, :3]}
    for g in channels[1:]:
        k = separate.get(g)
        if k is None:
            raise KdpcError(f"{path}: channels {'+'.join(channels)} need a {g!r} array ({', '.join(_NPZ_GROUPS[g])})")
        arr = np.asarray(arrays[k])
        if arr.shape != (points.shape[0], 3):
            raise KdpcError(f"{path}: {k!r} has shape {list(arr.shape)}, expected [{points.shape[0]}, 3]")
        groups[g] = arr
    return groups


def _read_ply(path: Path, channels: Sequence[str], num_points: int, seed: int) -> dict[str, np.ndarray]:
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    names = [e.name for e in ply.elements]
    if "face" in names and ply["face"].count > 0:
        return _sample_mesh(path, channels, num_points, seed)
    if "vertex" not in names:
        raise KdpcError(f"{path}: a PLY file without a 'vertex' element (it has {', '.join(names) or 'none'})")
    vertex = ply["vertex"].data
    groups = {}
    for g in channels:
        props = _PLY_GROUPS[g]
        if g == "rgb" and not all(p in vertex.dtype.names for p in props):
            props = ("r", "g", "b")
        missing = [p for p in props if p not in vertex.dtype.names]
        if missing:
            raise KdpcError(f"{path}: channels {'+'.join(channels)} need vertex properties {', '.join(props)}; "
                            f"it has {', '.join(vertex.dtype.names)}")
        columns = [np.asarray(vertex[p]) for p in props]
        groups[g] = np.stack(columns, axis=1) if g != "rgb" else _rgb_stack(columns)
    return groups


# ------------------------------------------------------------------------------------------------------ meshes
def _sample_mesh(path: Path, channels: Sequence[str], num_points: int, seed: int) -> dict[str, np.ndarray]:
    import trimesh

    mesh = trimesh.load(str(path), force="mesh", process=False)
    vertices = np.asarray(getattr(mesh, "vertices", np.empty((0, 3))))
    faces = np.asarray(getattr(mesh, "faces", np.empty((0, 3))))
    if vertices.shape[0] == 0:
        raise KdpcError(f"{path}: the mesh has no vertices")
    if faces.shape[0] == 0 or not mesh.area > 0:
        raise KdpcError(f"{path}: the mesh has no surface to sample (no faces or zero area)")
    if "rgb" in channels:
        raise KdpcError(f"{path}: meshes give xyz and normals; colour (channels {'+'.join(channels)}) comes from point "
                        "files (.ply with red/green/blue, .npz with rgb, or text columns)")
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    points, face_index = trimesh.sample.sample_surface(mesh, num_points, seed=rng)[:2]
    groups = {"xyz": np.asarray(points, dtype=np.float64)}
    if "normals" in channels:
        groups["normals"] = np.asarray(mesh.face_normals, dtype=np.float64)[np.asarray(face_index)]
    return groups


# ----------------------------------------------------------------------------------------------------- colour
def _rgb_stack(columns: list[np.ndarray]) -> np.ndarray:
    integer = all(np.asarray(c).dtype.kind in "iu" for c in columns)
    arr = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    return arr / 255.0 if integer else arr


def _as_rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind in "iu":
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    return arr / 255.0 if arr.size and arr.max() > 1.0 else arr

"""``folder``: your own files, laid out like torchvision's ImageFolder.

::

    <root>/classes.txt              optional: class names, one per line, in label order
    <root>/train/<class>/<file>     any depth below the class folder
    <root>/test/<class>/<file>
    <root>/val/<class>/<file>       optional (load it with split=val; or make one with holdout=0.1)

Without ``classes.txt`` the classes are the class folders of all splits, sorted by name. Files are read by
``kdpc.data.pointfiles`` (``.npy .npz .txt .xyz .pts .csv .ply``, meshes ``.off .obj .stl``); files with other
suffixes are ignored. Every cloud is brought to ``num_raw_points`` points (meshes sampled, clouds of other sizes
resampled, seeded by the file's path and ``seed``), so clouds of different sizes mix freely; a sample is then
centred and scaled to the unit sphere like every kdpc dataset. The fingerprint covers the resulting points and
labels, so it changes with any file, label or sampling option. Parsed splits are cached (``kdpc.data.parse_cache``).

Options: ``num_raw_points`` (default 2048), ``channels`` (``xyz`` (default), ``xyz+normals``, ``xyz+rgb``,
``xyz+normals+rgb``), ``seed`` (default 0), ``cache`` (default true; not part of the data's identity).
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from ..errors import KdpcError
from ..progress import progress
from .base import PointCloudDataset, read_lines, string_seed
from .channels import channels_text, parse_channels
from .parse_cache import cache_key, cached_arrays
from .pointfiles import SUFFIXES, read_cloud
from .registry import register_dataset

NAME = "folder"
SPLIT_FOLDERS = ("train", "test", "val")
CLASSES_FILE = "classes.txt"
DEFAULT_RAW_POINTS = 2048
DEFAULT_NUM_POINTS = 1024
PARSER_VERSION = 1


@register_dataset(
    NAME,
    "your own files: <root>/{train,test}/<class>/<file> (.npy .npz .txt .xyz .ply; meshes .off .obj .stl sampled); "
    "options num_raw_points, channels (xyz, xyz+normals, xyz+rgb), seed",
)
def folder(root: str | Path | None = None, split: str = "train", num_points: int | None = None,
           num_raw_points: int | None = None, channels: str | list[str] | None = None, seed: int | None = None,
           cache: bool | None = None) -> PointCloudDataset:
    if root is None:
        raise KdpcError(f"{NAME}: pass --data-root DIR, a folder holding train/<class>/<file> and test/<class>/<file>")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise KdpcError(f"{NAME}: data folder {str(base)!r} does not exist")
    raw = DEFAULT_RAW_POINTS if num_raw_points is None else num_raw_points
    if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)) or raw < 1:
        raise KdpcError(f"{NAME}: option num_raw_points must be a positive integer, got {raw!r}")
    layout = parse_channels("xyz" if channels is None else channels, f"{NAME}: option channels")
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise KdpcError(f"{NAME}: option seed must be an integer >= 0, got {seed!r}")
    if cache is not None and not isinstance(cache, bool):
        raise KdpcError(f"{NAME}: option cache must be true or false, got {cache!r}")
    present = [s for s in SPLIT_FOLDERS if (base / s).is_dir()]
    if split not in SPLIT_FOLDERS:
        raise KdpcError(f"{NAME}: unknown split {split!r}; use one of {', '.join(SPLIT_FOLDERS)}")
    if split not in present:
        raise KdpcError(f"{NAME}: {str(base)!r} has no {split}/ folder (it has: {', '.join(present) or 'none'}); "
                        f"expected <root>/{split}/<class>/<file>")
    class_names = _class_names(base, present)
    files, labels = _list_files(base, split, class_names)
    config = {"num_raw_points": int(raw), "channels": channels_text(layout), "seed": int(seed)}
    stats = [(f.relative_to(base).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = cache_key(["folder", PARSER_VERSION, str(base.resolve()), split, class_names, config, stats])

    def parse() -> dict[str, np.ndarray]:
        points = np.empty((len(files), int(raw), 3 * len(layout)), dtype=np.float32)
        for i, (path, (rel, _, _)) in enumerate(zip(progress(files, desc=f"{NAME} {split}", unit="file"), stats)):
            points[i] = read_cloud(path, layout, int(raw), string_seed(rel, int(seed)))
        return {"points": points, "labels": np.asarray(labels, dtype=np.int64)}

    arrays = cached_arrays(NAME, key, parse, enabled=cache is not False)
    return PointCloudDataset(
        name=NAME, split=split, task="cls", class_names=class_names, points=arrays["points"], labels=arrays["labels"],
        num_points=min(DEFAULT_NUM_POINTS, int(raw)) if num_points is None else num_points, config=config,
        root=str(base), channels=layout)


def _class_names(base: Path, splits: list[str]) -> list[str]:
    listed = base / CLASSES_FILE
    if listed.is_file():
        names = read_lines(listed)
        if len(set(names)) != len(names) or not names:
            raise KdpcError(f"{NAME}: {listed} must list each class once (one name per line)")
        return names
    found = sorted({d.name for s in splits for d in (base / s).iterdir() if d.is_dir() and not d.name.startswith(".")})
    if not found:
        raise KdpcError(f"{NAME}: no class folders under {str(base)!r}; expected <root>/train/<class>/<file>")
    return found


def _list_files(base: Path, split: str, class_names: list[str]) -> tuple[list[Path], list[int]]:
    index = {c: i for i, c in enumerate(class_names)}
    files: list[Path] = []
    labels: list[int] = []
    for folder in sorted(d for d in (base / split).iterdir() if d.is_dir() and not d.name.startswith(".")):
        if folder.name not in index:
            raise KdpcError(f"{NAME}: class folder {split}/{folder.name} is not in {CLASSES_FILE} "
                            f"({', '.join(class_names[:5])}{', ...' if len(class_names) > 5 else ''})")
        found = sorted((p for p in folder.rglob("*") if _is_cloud_file(p, folder)),
                       key=lambda p: p.relative_to(folder).as_posix())
        files.extend(found)
        labels.extend([index[folder.name]] * len(found))
    return files, labels


def _is_cloud_file(path: Path, folder: Path) -> bool:
    rel = path.relative_to(folder).parts
    return path.is_file() and path.suffix.lower() in SUFFIXES and not any(p.startswith(".") for p in rel)


"""``s3dis``: Stanford indoor scenes, 13 classes, six areas; Area 5 is the usual test area.

Two layouts under ``--data-root`` (detected; the config's ``layout`` records which):

- ``pointcept``: Pointcept's preprocessed folders ``Area_N/<room>/coord.npy, color.npy, normal.npy, segment.npy``;
- ``txt``: the original release ``Area_N/<room>/Annotations/<class>_<k>.txt`` (see ``s3dis_txt`` for the policy on
  its blemishes; parsed rooms are cached per area within a process).

Splits: ``test`` is Area ``test_area`` (default 5), ``train`` the other areas; ``--dataset-opt holdout=0.1`` holds
a deterministic tenth of the training rooms out as ``val`` (otherwise training keeps its last epoch).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ...errors import KdpcError
from ..base import check_split
from ..registry import register_dataset
from ..channels import channels_text
from .base import Scene, SceneDataset, scene_channels
from .npy import read_npy_scene, refuse_pth, scene_folders
from .s3dis_txt import BAD_LINES, read_annotated_room

NAME = "s3dis"
CLASS_NAMES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
               "board", "clutter")
AREAS = tuple(range(1, 7))
DEFAULT_NUM_POINTS = 80_000
DEFAULT_GRID = 0.02
RELEASE_FOLDERS = ("Stanford3dDataset_v1.2_Aligned_Version", "Stanford3dDataset_v1.2", "s3dis")
EXPECTED = ("Area_1 .. Area_6 folders holding one folder per room, either with coord.npy, color.npy, segment.npy "
            "(Pointcept's preprocessed layout) or with Annotations/<class>_<k>.txt (the original release)")


def _root(root: str | Path | None) -> Path:
    base = Path(root).expanduser() if root is not None else Path("data") / NAME
    if not base.is_dir():
        raise KdpcError(f"{NAME}: data folder {str(base)!r} does not exist; pass --data-root pointing at {EXPECTED}")
    for cand in (base, *(base / sub for sub in RELEASE_FOLDERS)):
        if any((cand / f"Area_{a}").is_dir() for a in AREAS):
            return cand
    raise KdpcError(f"{NAME}: expected {EXPECTED} in {str(base)!r}")


def _layout(area: Path) -> str:
    rooms = scene_folders(NAME, area)
    if any((r / "coord.npy").is_file() for r in rooms):
        return "pointcept"
    if any((r / "Annotations").is_dir() for r in rooms):
        return "txt"
    for room in rooms:
        refuse_pth(NAME, room)
    raise KdpcError(f"{NAME}: {str(area)!r} holds no room folder with coord.npy or Annotations/; expected {EXPECTED}")


def _text_area(area: Path, bad_lines: str) -> tuple[tuple[Scene, ...], tuple[tuple[str, int], ...]]:
    """The rooms of one area of the text release, parsed once per process while its files stay unchanged."""
    files = sorted(area.glob("*/Annotations/*.txt"))
    signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _parse_area(str(area), bad_lines, signature)


@functools.lru_cache(maxsize=8)
def _parse_area(area: str, bad_lines: str, signature: tuple) -> tuple[tuple[Scene, ...], tuple[tuple[str, int], ...]]:
    scenes, totals = [], {"skipped_lines": 0, "unknown_class_files": 0}
    for folder in scene_folders(NAME, Path(area)):
        if not (folder / "Annotations").is_dir():
            raise KdpcError(f"{NAME}: room folder {str(folder)!r} has no Annotations/ folder (original layout)")
        scene, notes = read_annotated_room(NAME, folder, f"{Path(area).name}/{folder.name}", CLASS_NAMES, bad_lines)
        scenes.append(scene)
        for key, value in notes.items():
            totals[key] += value
    return tuple(scenes), tuple(totals.items())


@register_dataset(
    NAME,
    "S3DIS indoor scenes (13 classes), Pointcept's npy folders or the original Annotations/*.txt release; "
    "test = Area 5",
)
def s3dis(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    test_area: int | None = None,
    channels: str | list[str] | None = None,
    grid_size: float | None = None,
    bad_lines: str | None = None,
) -> SceneDataset:
    check_split(NAME, split, ("train", "test"))
    test_area = 5 if test_area is None else test_area
    if isinstance(test_area, bool) or test_area not in AREAS:
        raise KdpcError(f"{NAME}: option test_area must be one of 1..6, got {test_area!r}")
    bad_lines = bad_lines or "skip"
    if bad_lines not in BAD_LINES:
        raise KdpcError(f"{NAME}: option bad_lines must be one of {', '.join(BAD_LINES)}, got {bad_lines!r}")
    chosen = scene_channels(NAME, channels, "xyz+rgb")
    base = _root(root)
    present = [a for a in AREAS if (base / f"Area_{a}").is_dir()]
    areas = [test_area] if split == "test" else [a for a in present if a != test_area]
    if split == "test" and test_area not in present:
        raise KdpcError(f"{NAME}: test area folder {str(base / f'Area_{test_area}')!r} does not exist")
    if not areas:
        raise KdpcError(f"{NAME}: no training area in {str(base)!r} besides the test area {test_area}")
    layout = _layout(base / f"Area_{areas[0]}")
    scenes: list[Scene] = []
    notes: dict[str, int] = {}
    for area in areas:
        folder = base / f"Area_{area}"
        if layout == "pointcept":
            scenes += [read_npy_scene(NAME, room, f"Area_{area}/{room.name}", "segment.npy", chosen)
                       for room in scene_folders(NAME, folder)]
        else:
            if "normals" in chosen:
                raise KdpcError(f"{NAME}: the original text release has no normals; use channels=xyz+rgb")
            area_scenes, area_notes = _text_area(folder.resolve(), bad_lines)
            scenes += area_scenes
            for key, value in area_notes:
                notes[key] = notes.get(key, 0) + value
    cfg: dict[str, Any] = {"layout": layout, "test_area": test_area, "channels": channels_text(chosen),
                           "grid_size": DEFAULT_GRID if grid_size is None else grid_size}
    if layout == "txt":
        cfg["bad_lines"] = bad_lines
    return SceneDataset(name=NAME, split=split, class_names=CLASS_NAMES, scenes=scenes,
                        num_points=DEFAULT_NUM_POINTS if num_points is None else num_points,
                        grid_size=cfg["grid_size"], channels=chosen, config=cfg, root=str(base),
                        notes={k: v for k, v in notes.items() if v})

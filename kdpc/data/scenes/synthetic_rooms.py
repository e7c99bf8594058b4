"""``synthetic-rooms``: the embedded scene dataset, generated in-process from a seed (``kdpc.data.scenes.rooms``).

Room ``i`` of a split draws from its own stream ``SeedSequence([seed, 1000 + split code, i])``, so a split with more
rooms keeps the rooms of a smaller one. Generated rooms are cached per configuration within a process.
Options (all in ``config``): ``rooms`` (default 24 train / 6 val / 8 test), ``seed`` (0), ``density`` (surface
points per square metre, 200), ``noise`` (coordinate noise sigma in metres, 0.005), ``color_noise`` (0.03, 0-1
units), ``channels`` (``xyz+rgb``, or ``xyz``; the rooms have no normals), ``grid_size`` (voxel edge of every view,
0.05 m).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import KdpcError
from ..base import check_split
from ..registry import register_dataset
from ..shapes import SPLIT_CODES
from ..channels import channels_text
from .base import Scene, SceneDataset, scene_channels
from .rooms import ROOM_CLASSES, generate_room

NAME = "synthetic-rooms"
GENERATOR_VERSION = 1
SPLITS = ("train", "test", "val")
DEFAULT_ROOMS = {"train": 24, "val": 6, "test": 8}
DEFAULT_NUM_POINTS = 6000
DEFAULTS: dict[str, Any] = {"seed": 0, "density": 200.0, "noise": 0.005, "color_noise": 0.03, "grid_size": 0.05}


def _number(key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise KdpcError(f"{NAME}: option {key} must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise KdpcError(f"{NAME}: option {key} must lie in [{lo}, {hi}], got {value}")
    return float(value)


def _integer(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise KdpcError(f"{NAME}: option {key} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=6)
def _rooms(seed: int, split: str, count: int, density: float, noise: float, color_noise: float) -> tuple[Scene, ...]:
    scenes = []
    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1000 + SPLIT_CODES[split], i]))
        coord, color, segment, kind = generate_room(rng, density, noise, color_noise)
        for arr in (coord, color, segment):
            arr.setflags(write=False)
        scenes.append(Scene(name=f"{split}_{i:04d}_{kind}", coord=coord, segment=segment, color=color))
    return tuple(scenes)


@register_dataset(
    NAME,
    f"embedded procedural indoor rooms ({len(ROOM_CLASSES)} classes: walls with doors and windows, furniture, "
    "clutter; colour per point, 10^4-10^5 points per room) for scene semantic segmentation; no files needed",
    splits=SPLITS,
)
def synthetic_rooms(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    rooms: int | None = None,
    seed: int | None = None,
    density: float | None = None,
    noise: float | None = None,
    color_noise: float | None = None,
    channels: str | list[str] | None = None,
    grid_size: float | None = None,
) -> SceneDataset:
    check_split(NAME, split, SPLITS)
    opts = {k: (DEFAULTS[k] if v is None else v) for k, v in
            {"seed": seed, "density": density, "noise": noise, "color_noise": color_noise,
             "grid_size": grid_size}.items()}
    cfg: dict[str, Any] = {"generator_version": GENERATOR_VERSION,
                           "rooms": None if rooms is None else _integer("rooms", rooms, 1, 100_000),
                           "seed": _integer("seed", opts["seed"], 0, 2**63 - 1),
                           "density": _number("density", opts["density"], 1.0, 100_000.0),
                           "noise": _number("noise", opts["noise"], 0.0, 1.0),
                           "color_noise": _number("color_noise", opts["color_noise"], 0.0, 1.0),
                           "grid_size": _number("grid_size", opts["grid_size"], 1e-3, 10.0)}
    chosen = scene_channels(NAME, channels, "xyz+rgb")
    if "normals" in chosen:
        raise KdpcError(f"{NAME}: the generated rooms have no normals; use channels=xyz+rgb or channels=xyz")
    cfg["channels"] = channels_text(chosen)
    scenes = _rooms(cfg["seed"], split, cfg["rooms"] or DEFAULT_ROOMS[split], cfg["density"], cfg["noise"],
                    cfg["color_noise"])
    return SceneDataset(name=NAME, split=split, class_names=ROOM_CLASSES, scenes=scenes,
                        num_points=DEFAULT_NUM_POINTS if num_points is None else num_points,
                        grid_size=cfg["grid_size"], channels=chosen, config=cfg)

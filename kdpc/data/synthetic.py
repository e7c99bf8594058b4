"""The embedded procedural datasets: ``synthetic`` (classification, the default) and ``synthetic-parts``.

Both are generated in-process from a seed by ``kdpc.data.shapes`` (no files) and cached per config within a process.
Difficulty knobs (all in ``config`` and so in the fingerprint's provenance):

- ``noise``: Gaussian jitter sigma on the unit-radius cloud (default 0.01). Blurs the local geometry that separates
  the confusable pairs (sharp cylinder rims vs capsule caps, flat pyramid faces vs a cone's curved side).
- ``occlusion``: probability that a sample loses the part of it beyond a random plane (default 0.5);
  ``occlusion_max``: the largest fraction of its points it then loses (default 0.3; drawn in [0.3, 1] x max).
- ``jitter``: width of the proportion ranges relative to the built-in ones (default 1.0; 0 = every instance of a
  class has the central proportions, > 1 widens the ranges and so the overlap between classes).
- ``stretch``: per-axis random scale in [1 - stretch, 1 + stretch] (default 0.15), which further blurs proportions.
- ``max_yaw`` (degrees, default 180: any heading) and ``max_tilt`` (degrees off vertical, default 10): pose
  variation, drawn identically for every class so that pose does not reveal the class.
- ``samples_per_class`` (default 100 for train and test, 50 for val), ``num_raw_points`` (default 512), ``seed``
  (default 0; each split uses its own derived streams), ``classes`` (a subset of the class names, default all).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import KdpcError
from .base import PointCloudDataset, check_split, resolve_num_points
from .registry import register_dataset
from .shapes import CLASS_NAMES, PART_CLASS_NAMES, SHAPE_CLASSES, generate

GENERATOR_VERSION = 1
SPLITS = ("train", "test", "val")
DEFAULT_SAMPLES_PER_CLASS = {"train": 100, "test": 100, "val": 50}
DEFAULT_NUM_POINTS = 256
DEFAULTS: dict[str, Any] = {
    "num_raw_points": 512,
    "seed": 0,
    "noise": 0.01,
    "occlusion": 0.5,
    "occlusion_max": 0.3,
    "jitter": 1.0,
    "stretch": 0.15,
    "max_tilt": 10.0,
    "max_yaw": 180.0,
}

# global part ids of synthetic-parts: the parts of every composite class, in class order
PART_NAMES: tuple[str, ...] = tuple(f"{c.name}/{p}" for c in SHAPE_CLASSES if c.composite for p in c.parts)
_PART_OFFSET: dict[str, int] = {}
_off = 0
for _c in SHAPE_CLASSES:
    if _c.composite:
        _PART_OFFSET[_c.name] = _off
        _off += len(_c.parts)
_NUM_LOCAL_PARTS = {c.name: len(c.parts) for c in SHAPE_CLASSES}


def _number(name: str, key: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise KdpcError(f"{name}: option {key} must be a number, got {value!r}")
    value = float(value)
    if not (lo < value if lo_open else lo <= value) or value > hi:
        raise KdpcError(f"{name}: option {key} must lie in {'(' if lo_open else '['}{lo}, {hi}], got {value}")
    return value


def _integer(name: str, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise KdpcError(f"{name}: option {key} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise KdpcError(f"{name}: option {key} must lie in [{lo}, {hi}], got {value}")
    return int(value)


def _resolve(name: str, split: str, allowed_classes: Sequence[str], opts: dict[str, Any]) -> dict[str, Any]:
    """Validated options with defaults filled in: the dataset's JSON-able config."""
    check_split(name, split, SPLITS)
    o = {k: (DEFAULTS[k] if opts.get(k) is None else opts[k]) for k in DEFAULTS}
    spc = opts.get("samples_per_class")
    cfg: dict[str, Any] = {"generator_version": GENERATOR_VERSION}
    # None (the per-split default) stays None so the recorded config rebuilds every split at its own size.
    cfg["samples_per_class"] = None if spc is None else _integer(name, "samples_per_class", spc, 1, 1_000_000)
    cfg["num_raw_points"] = _integer(name, "num_raw_points", o["num_raw_points"], 1, 1_000_000)
    cfg["seed"] = _integer(name, "seed", o["seed"], 0, 2**63 - 1)
    cfg["noise"] = _number(name, "noise", o["noise"], 0.0, 1.0)
    cfg["occlusion"] = _number(name, "occlusion", o["occlusion"], 0.0, 1.0)
    cfg["occlusion_max"] = _number(name, "occlusion_max", o["occlusion_max"], 0.0, 0.9)
    cfg["jitter"] = _number(name, "jitter", o["jitter"], 0.0, 3.0)
    cfg["stretch"] = _number(name, "stretch", o["stretch"], 0.0, 0.9)
    cfg["max_tilt"] = _number(name, "max_tilt", o["max_tilt"], 0.0, 180.0)
    cfg["max_yaw"] = _number(name, "max_yaw", o["max_yaw"], 0.0, 180.0)
    classes = opts.get("classes")
    if classes is None:
        classes = list(allowed_classes)
    else:
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        classes = [str(c) for c in classes]
        bad = [c for c in classes if c not in allowed_classes]
        if bad or not classes or len(set(classes)) != len(classes):
            raise KdpcError(
                f"{name}: option classes must be distinct names from: {', '.join(allowed_classes)}; "
                f"got {', '.join(classes) or 'nothing'}"
            )
    cfg["classes"] = classes
    return cfg


@functools.lru_cache(maxsize=8)
def _generate_cached(classes: tuple[str, ...], items: tuple[tuple[str, Any], ...], split: str):
    kw = dict(items)
    pts, labels, parts = generate(
        classes,
        kw["samples_per_class"] or DEFAULT_SAMPLES_PER_CLASS[split],
        kw["num_raw_points"],
        seed=kw["seed"],
        split=split,
        noise=kw["noise"],
        occlusion=kw["occlusion"],
        occlusion_max=kw["occlusion_max"],
        jitter=kw["jitter"],
        stretch=kw["stretch"],
        max_tilt=kw["max_tilt"],
        max_yaw=kw["max_yaw"],
    )
    for a in (pts, labels, parts):
        a.setflags(write=False)
    return pts, labels, parts


def _generate(cfg: dict[str, Any], split: str):
    items = tuple(sorted((k, v) for k, v in cfg.items() if k not in ("classes", "generator_version")))
    pts, labels, parts = _generate_cached(tuple(cfg["classes"]), items, split)
    return pts.copy(), labels.copy(), parts


@register_dataset(
    "synthetic",
    f"embedded procedural ModelNet-like set, {len(CLASS_NAMES)} classes of primitives and furniture-like "
    "composites with noise/occlusion knobs; no files needed (the default)",
    splits=SPLITS,
)
def synthetic(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    samples_per_class: int | None = None,
    num_raw_points: int | None = None,
    seed: int | None = None,
    noise: float | None = None,
    occlusion: float | None = None,
    occlusion_max: float | None = None,
    jitter: float | None = None,
    stretch: float | None = None,
    max_tilt: float | None = None,
    max_yaw: float | None = None,
    classes: Sequence[str] | str | None = None,
) -> PointCloudDataset:
    opts = dict(locals())
    cfg = _resolve("synthetic", split, CLASS_NAMES, opts)
    pts, labels, _ = _generate(cfg, split)
    return PointCloudDataset(
        name="synthetic",
        split=split,
        task="cls",
        class_names=cfg["classes"],
        points=pts,
        labels=labels,
        num_points=resolve_num_points(num_points, DEFAULT_NUM_POINTS),
        config=cfg,
        normalize=False,  # generated centred and scaled to max norm 1
    )


@register_dataset(
    "synthetic-parts",
    f"embedded procedural part segmentation: the {len(PART_CLASS_NAMES)} composite classes of 'synthetic' "
    f"with {len(PART_NAMES)} global part ids; no files needed",
    splits=SPLITS,
)
def synthetic_parts(
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    samples_per_class: int | None = None,
    num_raw_points: int | None = None,
    seed: int | None = None,
    noise: float | None = None,
    occlusion: float | None = None,
    occlusion_max: float | None = None,
    jitter: float | None = None,
    stretch: float | None = None,
    max_tilt: float | None = None,
    max_yaw: float | None = None,
    classes: Sequence[str] | str | None = None,
) -> PointCloudDataset:
    opts = dict(locals())
    cfg = _resolve("synthetic-parts", split, PART_CLASS_NAMES, opts)
    pts, labels, local_parts = _generate(cfg, split)
    classes = cfg["classes"]
    # local part id -> global part id, per sample's class
    lut = np.zeros((len(classes), max(_NUM_LOCAL_PARTS[c] for c in classes)), dtype=np.int64)
    category_parts: dict[int, list[int]] = {}
    for i, c in enumerate(classes):
        ids = list(range(_PART_OFFSET[c], _PART_OFFSET[c] + _NUM_LOCAL_PARTS[c]))
        lut[i, : len(ids)] = ids
        category_parts[i] = ids
    part_labels = lut[labels[:, None], local_parts]
    return PointCloudDataset(
        name="synthetic-parts",
        split=split,
        task="partseg",
        class_names=classes,
        points=pts,
        labels=labels,
        num_points=resolve_num_points(num_points, DEFAULT_NUM_POINTS),
        config=cfg,
        part_labels=part_labels,
        part_names=PART_NAMES,
        category_parts=category_parts,
        normalize=False,
    )

"""Dataset registry: ``create_dataset(name, ...)`` and ``list_datasets()``.

A dataset factory is ``factory(root, split, num_points, **options) -> PointCloudDataset`` with every option a
keyword argument (``None`` meaning "the default"), so unknown options are caught here from the signature.

Model selection needs a validation split. Datasets that have one declare it (``splits=``); for the others
``create_dataset(..., holdout=f)`` carves a deterministic, class-stratified fraction ``f`` out of ``train`` as ``val``
and leaves the rest as ``train``. ``holdout`` is part of the dataset's config (and so of every checkpoint's and
store's provenance): a teacher trained with a hold-out is recorded on the reduced ``train`` only, and its students
select on the same held-out samples.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import KdpcError
from ..plugins import note_registration
from ..registry import Registry
from ..hashing import stable_permutation
from .base import PointCloudDataset, string_seed

DATASETS: Registry[PointCloudDataset] = Registry("dataset")
_DESCRIPTIONS: dict[str, str] = {}
_SPLITS: dict[str, tuple[str, ...]] = {}
_FIXED = ("root", "split", "num_points")
VALIDATION = "val"


def register_dataset(name: str, description: str, splits: tuple[str, ...] = ("train", "test")
                     ) -> Callable[[Callable[..., PointCloudDataset]], Callable]:
    """Register ``factory(root, split, num_points, **options)`` under ``name`` with a one-line description and the
    splits it offers."""

    def decorator(factory: Callable[..., PointCloudDataset]) -> Callable[..., PointCloudDataset]:
        params = inspect.signature(factory).parameters
        missing = [p for p in _FIXED if p not in params]
        if missing:
            raise TypeError(f"dataset factory {name!r} must accept {', '.join(missing)}")
        DATASETS.register(name)(factory)
        note_registration("dataset", name, getattr(factory, "__module__", None))
        _DESCRIPTIONS[name] = " ".join(description.split())
        _SPLITS[name] = tuple(splits)
        return factory

    return decorator


def dataset_options(name: str) -> list[str]:
    """The option names (beyond root/split/num_points) that dataset ``name`` accepts."""
    params = inspect.signature(DATASETS.get(name)).parameters
    return [p for p, v in params.items() if p not in _FIXED and v.kind is not inspect.Parameter.VAR_KEYWORD]


# Keys of a dataset's recorded ``config`` that describe the data rather than select it.
RECORDED_FACTS = ("generator_version", "layout")


def dataset_splits(name: str, holdout: float | None = None) -> tuple[str, ...]:
    """The splits ``create_dataset(name, holdout=holdout)`` can load."""
    DATASETS.get(name)  # unknown names: the registry's error
    splits = _SPLITS.get(name, ("train", "test"))
    return splits + (VALIDATION,) if holdout and VALIDATION not in splits else splits


def has_validation(name: str, cfg: dict[str, Any] | None = None) -> bool:
    return VALIDATION in dataset_splits(name, (cfg or {}).get("holdout"))


def create_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    holdout: float | None = None,
    **cfg: Any,
) -> PointCloudDataset:
    """Load split ``split`` of dataset ``name``. ``root`` (file datasets) defaults to ``data/<name>``.

    ``cfg`` may be a dataset's own ``config`` as recorded in a checkpoint or store: keys there that are facts rather
    than options (``generator_version``, ``layout``) are checked against the loaded data instead of passed on.
    ``holdout`` (a fraction in (0, 0.5]) makes a ``val`` split out of ``train``; see the module docstring.
    """
    if holdout is not None:
        return _with_holdout(name, root, split, num_points, _holdout_fraction(name, holdout), cfg)
    if name not in DATASETS:
        raise KdpcError(f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())} (a dataset of your own "
                        "code: pass --plugin your_module, see `kdpc datasets`)")
    factory = DATASETS.get(name)
    known = dataset_options(name)
    facts = {k: cfg.pop(k) for k in RECORDED_FACTS if k in cfg and k not in known}
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise KdpcError(
            f"unknown option(s) for dataset {name!r}: {', '.join(unknown)}; "
            f"known: {', '.join(known) if known else 'none'}"
        )
    dataset = factory(root=root, split=split, num_points=num_points, **cfg)
    for key, expected in facts.items():
        actual = dataset.config.get(key)
        if actual != expected:
            raise KdpcError(f"dataset {name!r} here has {key}={actual!r} but the checkpoint/store was made with "
                            f"{key}={expected!r}; it is not the same data")
    return dataset


def list_datasets() -> list[tuple[str, str]]:
    """``(name, one-line description)`` for every registered dataset, sorted by name."""
    return [(n, _DESCRIPTIONS.get(n, "")) for n in DATASETS.names()]


def _holdout_fraction(name: str, holdout: Any) -> float:
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 < float(holdout) <= 0.5:
        raise KdpcError(f"dataset {name!r}: option holdout must be a fraction in (0, 0.5], got {holdout!r}")
    if VALIDATION in _SPLITS.get(name, ()):
        raise KdpcError(f"dataset {name!r} has its own {VALIDATION} split; option holdout is for datasets without one")
    return float(holdout)


def _with_holdout(name: str, root: Any, split: str, num_points: int | None, fraction: float,
                  cfg: dict[str, Any]) -> PointCloudDataset:
    source = "train" if split in ("train", VALIDATION) else split
    data = create_dataset(name, root=root, split=source, num_points=num_points, **cfg)
    config = {**data.config, "holdout": fraction}
    if source != "train":
        return data.subset(np.arange(len(data)), split, config)
    held = holdout_mask(data.labels, fraction, string_seed(f"holdout:{name}"))
    if not held.any():
        raise KdpcError(f"dataset {name!r}: holdout={fraction} leaves no validation sample (a class needs >= 2 "
                        "training samples to give one); use a larger holdout or --select last")
    return data.subset(np.flatnonzero(held if split == VALIDATION else ~held), split, config)


def holdout_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Class-stratified: ``round(fraction * n_c)`` samples of each class ``c`` (at least one where ``n_c >= 2``),
    picked by a seeded stable permutation, so the same data always gives the same hold-out."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = int(round(fraction * len(members)))
        take = max(take, 1) if len(members) >= 2 else 0
        mask[members[stable_permutation(seed + int(c), len(members))[:take]]] = True
    return mask

"""Dataset registry: ``create_dataset(name, ...)`` and ``list_datasets()``.

A dataset factory is ``factory(root, split, num_points, **options) -> PointCloudDataset`` with every option a
keyword argument (``None`` meaning "the default"), so unknown options are caught here from the signature.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from ..errors import KdpcError
from ..registry import Registry
from .base import PointCloudDataset

DATASETS: Registry[PointCloudDataset] = Registry("dataset")
_DESCRIPTIONS: dict[str, str] = {}
_FIXED = ("root", "split", "num_points")


def register_dataset(name: str, description: str) -> Callable[[Callable[..., PointCloudDataset]], Callable]:
    """Register ``factory(root, split, num_points, **options)`` under ``name`` with a one-line description."""

    def decorator(factory: Callable[..., PointCloudDataset]) -> Callable[..., PointCloudDataset]:
        params = inspect.signature(factory).parameters
        missing = [p for p in _FIXED if p not in params]
        if missing:
            raise TypeError(f"dataset factory {name!r} must accept {', '.join(missing)}")
        DATASETS.register(name)(factory)
        _DESCRIPTIONS[name] = " ".join(description.split())
        return factory

    return decorator


def dataset_options(name: str) -> list[str]:
    """The option names (beyond root/split/num_points) that dataset ``name`` accepts."""
    params = inspect.signature(DATASETS.get(name)).parameters
    return [p for p, v in params.items() if p not in _FIXED and v.kind is not inspect.Parameter.VAR_KEYWORD]


# Keys of a dataset's recorded ``config`` that describe the data rather than select it.
RECORDED_FACTS = ("generator_version", "layout")


def create_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    num_points: int | None = None,
    **cfg: Any,
) -> PointCloudDataset:
    """Load split ``split`` of dataset ``name``. ``root`` (file datasets) defaults to ``data/<name>``.

    ``cfg`` may be a dataset's own ``config`` as recorded in a checkpoint or store: keys there that are facts rather
    than options (``generator_version``, ``layout``) are checked against the loaded data instead of passed on.
    """
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

"""``kdpc eval``: a checkpoint on a dataset split, checked against the checkpoint's own provenance."""

from __future__ import annotations

from typing import Any

from .checkpoint import load_checkpoint
from .data import create_dataset
from .engine import evaluate, resolve_device
from .errors import KdpcError


def dataset_for_checkpoint(ckpt, dataset: str | None, data_root: str | None, split: str):
    """The split a checkpoint was made for (same name, options and num_points) unless told otherwise."""
    info = ckpt.dataset
    name = dataset or info["name"]
    cfg = dict(info.get("config", {})) if name == info["name"] else {}
    data = create_dataset(name, root=data_root, split=split, num_points=info.get("num_points"), **cfg)
    expected = data.num_parts if ckpt.task == "partseg" else data.num_classes
    if expected != ckpt.num_classes:
        raise KdpcError(f"checkpoint {ckpt.path} predicts {ckpt.num_classes} classes but dataset {name} has {expected}")
    if data.task != ckpt.task:
        raise KdpcError(f"checkpoint {ckpt.path} is a {ckpt.task} model but dataset {name} is {data.task}")
    names = list(data.part_names if data.task == "partseg" else data.class_names)
    if names != list(ckpt.class_names):
        raise KdpcError(f"checkpoint {ckpt.path} was trained on other classes than dataset {name} has "
                        f"(first difference: {_first_difference(list(ckpt.class_names), names)})")
    return data


def evaluate_checkpoint(path: str, dataset: str | None = None, data_root: str | None = None, split: str = "test",
                        batch_size: int = 64, device: str = "auto") -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    data = dataset_for_checkpoint(ckpt, dataset, data_root, split)
    dev = resolve_device(device)
    model = ckpt.build_model(dev)
    metrics = evaluate(model, data, dev, batch_size=batch_size)
    return {**metrics, "model": ckpt.arch, "params": ckpt.num_params, "dataset": data.name, "split": split,
            "num_samples": len(data), "checkpoint": str(path)}


def _first_difference(a: list[str], b: list[str]) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"{x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} names"

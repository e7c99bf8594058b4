"""Checkpoints: one file that ``torch.load(path, weights_only=True)`` opens, carrying its provenance.

Shared checkpoints are untrusted pickles, so nothing here ever loads with ``weights_only=False``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import KdpcError, exception_line

FORMAT = "kdpc-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    arch: str
    model_config: dict[str, Any]
    num_classes: int
    class_names: list[str]
    task: str
    dataset: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    path: str | None = None

    def build_model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        from .models import create_model, model_info
        from .plugins import missing_hint

        try:
            model_info(self.arch)
        except KdpcError:
            hint = missing_hint("model", self.arch, self.provenance.get("plugin"))
            raise KdpcError(f"checkpoint {self.path}: {hint}") from None
        model = create_model(self.arch, num_classes=self.num_classes, **self.model_config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise KdpcError(f"checkpoint {self.path} does not fit model {self.arch}: {str(exc).splitlines()[0]}") from None
        return model.to(device).eval()

    @property
    def num_params(self) -> int:
        return int(sum(t.numel() for k, t in self.state_dict.items() if not _is_buffer_name(k)))


def _is_buffer_name(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kdpc_version": __version__,
        "arch": ckpt.arch,
        "model_config": dict(ckpt.model_config),
        "num_classes": int(ckpt.num_classes),
        "class_names": list(ckpt.class_names),
        "task": ckpt.task,
        "dataset": dict(ckpt.dataset),
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "metrics": dict(ckpt.metrics),
        "provenance": dict(ckpt.provenance),
    }
    if ckpt.training_state is not None:
        payload["training_state"] = ckpt.training_state
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # a full disk, a folder in the way, permissions
        raise KdpcError(f"cannot write the checkpoint {path} ({exception_line(exc)})") from None
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise KdpcError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0][:200]
        raise KdpcError(f"{path} holds objects a weights-only load refuses ({reason}); it is not a kdpc checkpoint") from None
    except Exception as exc:  # torch.load raises many types on foreign bytes (RuntimeError, IndexError, EOFError, ...)
        raise KdpcError(f"{path} is not a kdpc checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise KdpcError(f"{path} is not a kdpc checkpoint (no '{FORMAT}' marker)")
    return checkpoint_from_payload(path, payload)


def checkpoint_from_payload(path: str | Path, payload: dict[str, Any]) -> Checkpoint:
    """The ``Checkpoint`` in an already (weights-only) loaded kdpc checkpoint file."""
    if payload.get("format_version") != FORMAT_VERSION:
        raise KdpcError(f"{path} has checkpoint format version {payload.get('format_version')}; this kdpc reads {FORMAT_VERSION}")
    return Checkpoint(
        arch=payload["arch"],
        model_config=payload["model_config"],
        num_classes=payload["num_classes"],
        class_names=payload["class_names"],
        task=payload.get("task", "cls"),
        dataset=payload["dataset"],
        state_dict=payload["state_dict"],
        metrics=payload.get("metrics", {}),
        provenance=payload.get("provenance", {}),
        training_state=payload.get("training_state"),
        path=str(path),
    )


def update_checkpoint_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Replace the metrics of the checkpoint at ``path`` (atomically, like ``save_checkpoint``)."""
    ckpt = load_checkpoint(path)
    ckpt.metrics = dict(metrics)
    save_checkpoint(path, ckpt)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dataset_for_checkpoint(ckpt, dataset: str | None, data_root: str | None, split: str,
                           num_points: int | None = None, options: dict[str, Any] | None = None):
    """The split a checkpoint was made for (same name, options and num_points) unless told otherwise: ``dataset``,
    ``num_points`` and ``options`` (over the checkpoint's own options when the name is the same) override."""
    info = ckpt.dataset
    name = dataset or info["name"]
    cfg = dict(info.get("config", {})) if name == info["name"] else {}
    cfg.update(options or {})
    from .data import DATASETS, create_dataset
    from .plugins import missing_hint

    if name not in DATASETS and name == info["name"]:
        raise KdpcError(f"checkpoint {ckpt.path}: {missing_hint('dataset', name, info.get('plugin'))}")
    data = create_dataset(name, root=data_root, split=split, num_points=num_points or info.get("num_points"), **cfg)
    check_checkpoint_data(ckpt, data)
    return data


def check_checkpoint_data(ckpt, data) -> None:
    """Refuse a dataset whose task, class count or class names differ from the checkpoint's."""
    name = data.name
    expected = data.num_parts if ckpt.task == "partseg" else data.num_classes
    if expected != ckpt.num_classes:
        raise KdpcError(f"checkpoint {ckpt.path} predicts {ckpt.num_classes} classes but dataset {name} has {expected}")
    if data.task != ckpt.task:
        raise KdpcError(f"checkpoint {ckpt.path} is a {ckpt.task} model but dataset {name} is {data.task}")
    names = data.output_names
    if names != list(ckpt.class_names):
        raise KdpcError(f"checkpoint {ckpt.path} was trained on other classes than dataset {name} has "
                        f"(first difference: {_first_difference(list(ckpt.class_names), names)})")


def _first_difference(a: list[str], b: list[str]) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"{x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} names"

"""Teachers from anywhere: a kdpc checkpoint, TorchScript, ``torch.export``, ONNX, your own ``package.module:fn``
with a weights file, or (in Python) an ``nn.Module``, each turned into one ``Teacher`` callable by
``load_teacher``. See ``formats`` for what is accepted and ``adapter`` for how a foreign teacher is fed and read."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .adapter import TeacherAdapter
from .formats import LoadedTeacher, from_module, load_file_or_factory
from .teacher import Teacher

__all__ = ["LoadedTeacher", "Teacher", "TeacherAdapter", "load_teacher"]


def load_teacher(teacher: str | torch.nn.Module, *, weights: str | None = None,
                 options: Mapping[str, Any] | None = None, adapter: TeacherAdapter | Mapping[str, Any] | None = None,
                 device: torch.device | str = "cpu") -> Teacher:
    """A ``Teacher`` from a path, ``package.module:fn`` (with ``weights`` and factory keyword ``options``) or an
    ``nn.Module``. Bind it to the data (``teacher.bind(dataset)``) before calling it."""
    device = torch.device(device)
    if isinstance(teacher, torch.nn.Module):
        if weights or options:
            raise ValueError("weights/options are for a package.module:fn teacher, not for an nn.Module")
        loaded = from_module(teacher, device)
    else:
        loaded = load_file_or_factory(str(teacher), weights, dict(options or {}), device)
    return Teacher(loaded, adapter)

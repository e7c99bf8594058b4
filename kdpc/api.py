"""The Python API (``docs/python-api.md``): record any teacher over any dataset, and read the records back in your own
training loop.

>>> import kdpc
>>> result = kdpc.record(my_module, "folder", data_root="data/shapes", out="records/shapes.zarr", views=10)
>>> data = kdpc.RecordsDataset("records/shapes.zarr", data_root="data/shapes")
>>> points, label, teacher_logprobs = data[0]
>>> loss = kdpc.kd_loss(student(points[None]), teacher_logprobs[None], temperature=2.0)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from .distill.records_dataset import RecordsDataset
from .recorder.run import RecordConfig, RecordResult
from .recorder.run import record as _record
from .teachers import Teacher, TeacherAdapter, load_teacher
from .training.runtime import resolve_device

__all__ = ["RecordsDataset", "Teacher", "TeacherAdapter", "load_teacher", "record"]


def record(teacher: str | torch.nn.Module | Teacher, dataset: Any, out: str | None = None, *, views: int = 40,
           adapter: TeacherAdapter | Mapping[str, Any] | None = None, teacher_weights: str | None = None,
           teacher_cfg: Mapping[str, Any] | None = None, data_root: str | None = None, split: str = "train",
           num_points: int | None = None, dataset_cfg: Mapping[str, Any] | None = None, codec: str | None = None,
           augment: Mapping[str, Any] | None = None, batch_size: int = 64, device: str = "auto", seed: int = 0,
           precision: str = "fp32",
           resume: bool = False, overwrite: bool = False, log: Callable[..., None] | None = None,
           show_progress: bool = False) -> RecordResult:
    """Run ``teacher`` once over ``views`` augmented views of every sample of ``dataset`` and write a record store.

    Args:
        teacher: an ``nn.Module`` (called as ``teacher(x)`` on views laid out as the ``adapter`` says; default
            ``[B, N, 3]`` in, logits out), a path (kdpc checkpoint, TorchScript, ``torch.export``, ONNX) or
            ``"package.module:build_fn"`` with ``teacher_weights``.
        dataset: a registered dataset name (``"folder"`` with ``data_root`` for your files) or a dataset object
            (``kdpc.create_dataset(...)``). A dataset that kdpc cannot create by name again (a custom object) records
            fine, but ``kdpc distill`` will need it registered (a plugin) to find it.
        out: the store (``*.zarr`` folder or ``*.h5``; default ``records/<dataset>.zarr``).
        adapter: ``TeacherAdapter`` or its options (layout, channels, output, output_type, class_names, normalize,
            scale) for a teacher that is not a kdpc checkpoint.
        precision: ``fp32`` (default, TF32 off), ``bf16`` or ``fp16`` (autocast; ``kdpc record --amp``).
        The other arguments are ``kdpc record``'s options.

    Returns:
        ``RecordResult`` with the store's ``path``, ``header`` and counts.
    """
    cfg = RecordConfig(
        teacher=teacher if isinstance(teacher, str) else "", teacher_weights=teacher_weights,
        teacher_cfg=dict(teacher_cfg or {}),
        adapter=dict(adapter.to_dict() if isinstance(adapter, TeacherAdapter) else adapter or {}),
        dataset=dataset if isinstance(dataset, str) else None, dataset_cfg=dict(dataset_cfg or {}),
        num_points=num_points, data_root=data_root, split=split, views=views, out=out, codec=codec,
        batch_size=batch_size, workers=0, device=device, seed=seed, precision=precision, augment=dict(augment or {}),
        resume=resume,
        overwrite=overwrite)
    given = None
    if isinstance(teacher, Teacher):
        given = teacher
    elif isinstance(teacher, torch.nn.Module):
        given = load_teacher(teacher, adapter=cfg.adapter, device=resolve_device(device))
    elif not isinstance(teacher, str):
        raise TypeError(f"teacher must be an nn.Module, a Teacher or a path, got {type(teacher).__name__}")
    return _record(cfg, log=log or (lambda *a, **k: None), show_progress=show_progress, teacher=given,
                   dataset=None if isinstance(dataset, str) else dataset)

"""kdpc: offline knowledge distillation for point-cloud models.

The Python API (``docs/python-api.md``) is importable from here; names load on first use, so ``import kdpc`` (and
the command line) stays fast::

    kdpc.record(teacher, dataset, ...)        record any teacher (nn.Module or file) over a dataset
    kdpc.RecordsDataset(store)                (points, label, teacher_logprobs) per record, replayed exactly
    kdpc.kd_loss / dist_loss / nwsd_loss / SrkdLoss   the distillation losses
    kdpc.create_model / create_dataset / load_teacher / TeacherAdapter
"""

__version__ = "0.1.0"

_LAZY = {
    "record": "kdpc.api",
    "RecordsDataset": "kdpc.api",
    "load_teacher": "kdpc.teachers",
    "Teacher": "kdpc.teachers",
    "TeacherAdapter": "kdpc.teachers",
    "create_model": "kdpc.models",
    "create_dataset": "kdpc.data",
    "register_model": "kdpc.models",
    "register_dataset": "kdpc.data",
    "kd_loss": "kdpc.distill.losses",
    "dist_loss": "kdpc.distill.losses",
    "nwsd_loss": "kdpc.distill.losses",
    "label_smoothing_ce": "kdpc.distill.losses",
    "pointwise_kd_loss": "kdpc.distill.losses",
    "SrkdLoss": "kdpc.distill.seg",
    "SrkdConfig": "kdpc.distill.seg",
    "RecordReader": "kdpc.store",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdpc' has no attribute {name!r}")

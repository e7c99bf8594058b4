"""The model registry: timm-style presets, ``create_model`` and friends.

Each preset is a function ``preset(num_classes, **cfg) -> nn.Module`` decorated with ``@register_model``
(``@register_model(task="partseg")`` for part segmentation), defined in its family's file next to the model
classes: ``pointnet.py``, ``pointnet2.py``, ``dgcnn.py``, ``pointmlp.py``; scene segmentation
(``@register_model(task="semseg")``, presets listed in those files): ``ptv3.py``, ``scene_unet.py``. ``cfg`` overrides
the preset's defaults (any constructor option of the model class) and an unknown option is a ``KdpcError``. The
resolved options are kept on the model as ``model.config``.

Presets and their trainable parameters: classification at 40 classes; part segmentation at 50 part classes
with ShapeNet-Part's 16-category one-hot conditioning (``num_categories=16``) and, in brackets, without it
(``num_categories=0``, the default). "Published" is the paper's number where there is one, else the count of
the reference implementation's layout (computed from its code)::

    name                 task      params                   published / reference
    pointnet             cls        3,480,049               3.5M    Qi et al. 2017, vanilla + input & feature T-nets
    pointnet2-ssg        cls        1,475,688               1.47M   PointNet++ SSG (yanx27 layout)
    dgcnn                cls        1,809,576               1.8M    Wang et al. 2019, k=20, emb 1024
    pointmlp             cls       13,238,504               12.6M   Ma et al. 2022; the paper counts in 2**20 units
    pointmlp-elite       cls          716,232               0.68M   (same units: 716,232 / 2**20 = 0.683)
    pointnet-tiny        cls           21,992               -       no T-nets, 32-64-128, head 64
    pointnet2-tiny       cls          109,896               -       64/16 centroids at 256 points
    dgcnn-tiny           cls           77,928               -       k=10, EdgeConvs 32-32-64-64, emb 128
    pointmlp-tiny        cls          214,088               -       3 stages (N/4, N/8, N/16 groups), k=16
    pointnet2-seg        partseg    1,411,250 (1,409,202)   1,411,250 yanx27 part_seg_ssg
    dgcnn-seg            partseg    1,460,361 (1,442,825)   1,460,361 authors' DGCNN_partseg, k=40
    pointmlp-seg         partseg   16,755,402 (16,741,706)  16,755,594 official (it also embeds 3 normal channels)
    pointnet2-seg-tiny   partseg      188,850 (187,826)     -
    dgcnn-seg-tiny       partseg       60,896 (58,560)      -       k=10, no transform net
    pointmlp-seg-tiny    partseg      293,636 (289,860)     -

Every preset runs on any N (sampled point counts are derived from N; k is clamped to the points available);
eval-mode outputs are deterministic (FPS starts at index 0) and a cloud's outputs do not depend on its
batch-mates beyond float rounding.

``model_table()`` recomputes these numbers from the code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from torch import nn

from ..errors import KdpcError
from ..plugins import note_registration
from ..registry import Registry

TASKS = ("cls", "partseg", "semseg")
OBJECT_TASKS = ("cls", "partseg")  # models of single point clouds [B, N, 3]; semseg models take whole scenes

M = TypeVar("M", bound=nn.Module)
Factory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    published_params: int | None
    description: str


_MODELS: Registry[nn.Module] = Registry("model")
_INFO: dict[str, ModelInfo] = {}


def register_model(
    fn: Factory | None = None,
    *,
    name: str | None = None,
    task: str = "cls",
    published_params: int | None = None,
) -> Any:
    """Register a preset; usable bare (``@register_model``) or with options (``@register_model(task=...)``).

    The name defaults to the function name with ``_`` -> ``-`` (``pointnet2_ssg`` -> ``pointnet2-ssg``).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(factory: Factory) -> Factory:
        key = name or factory.__name__.replace("_", "-")
        _MODELS.register(key)(factory)
        note_registration("model", key, getattr(factory, "__module__", None))
        doc = inspect.getdoc(factory) or ""
        _INFO[key] = ModelInfo(key, task, published_params, doc.splitlines()[0] if doc else "")
        return factory

    return decorator(fn) if fn is not None else decorator


def build(cls: type[M], num_classes: int, cfg: Mapping[str, Any], **defaults: Any) -> M:
    """Instantiate ``cls(num_classes, **{**defaults, **cfg})`` after rejecting unknown options."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise KdpcError(f"num_classes must be a positive integer, got {num_classes!r}")
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "num_classes")]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise KdpcError(
            f"unknown model option(s) {', '.join(map(repr, unknown))}; valid options: {', '.join(sorted(allowed))}"
        )
    resolved = {**defaults, **cfg}
    model = cls(num_classes, **resolved)
    model.config = {k: _plain(v) for k, v in resolved.items()}
    return model


def _plain(value: Any) -> Any:
    """Tuples (nested too) -> lists, so ``model.config`` round-trips through JSON/YAML unchanged."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def create_model(name: str, num_classes: int, **cfg: Any) -> nn.Module:
    """Build the preset ``name`` with ``num_classes`` outputs (part classes for segmentation); cfg overrides."""
    if name not in _MODELS:
        raise KdpcError(f"unknown model {name!r}; known: {', '.join(_MODELS.names())} (a model of your own code: "
                        "pass --plugin your_module)")
    factory = _MODELS.get(name)
    try:
        return factory(num_classes, **cfg)
    except KdpcError as e:
        raise KdpcError(f"model {name!r}: {e}") from None
    except (TypeError, ValueError) as e:
        if not cfg:
            raise  # the preset's own defaults failed: a bug, not a user error
        raise KdpcError(f"model {name!r}: invalid option value ({e}); options given: {cfg}") from e


def list_models(task: str | None = None) -> list[str]:
    """Registered preset names, sorted: those of ``task`` ("cls", "partseg" or "semseg"); ``"all"`` for every
    preset; by default (None) the object-level presets (cls and partseg), which take point clouds ``[B, N, 3]``.
    Scene models (semseg) take concatenated scenes and are listed with ``task="semseg"`` (or ``"all"``)."""
    if task is not None and task not in TASKS + ("all",):
        raise KdpcError(f"unknown model task {task!r}; known: {', '.join(TASKS)}, all")
    wanted = OBJECT_TASKS if task is None else TASKS if task == "all" else (task,)
    return [n for n in _MODELS.names() if _INFO[n].task in wanted]


def model_info(name: str) -> ModelInfo:
    _MODELS.get(name)  # raises KdpcError listing known names
    return _INFO[name]


def model_task(name: str) -> str:
    """``"cls"``, ``"partseg"`` or ``"semseg"``."""
    return model_info(name).task


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_table(num_classes: int = 40, num_parts: int = 50, num_categories: int = 16) -> list[dict[str, Any]]:
    """One row per preset: name, task, params (built now), published params (None where none is published).

    Segmentation presets are counted at ``num_parts`` part classes, with (``params``) and without
    (``params_unconditioned``) the ``num_categories`` one-hot conditioning. Builds every model: takes ~1 s.
    """
    rows = []
    for name in list_models():
        info = _INFO[name]
        if info.task == "cls":
            row = {"params": count_parameters(create_model(name, num_classes))}
        else:
            row = {
                "params": count_parameters(create_model(name, num_parts, num_categories=num_categories)),
                "params_unconditioned": count_parameters(create_model(name, num_parts)),
            }
        rows.append({"name": name, "task": info.task, **row, "published": info.published_params,
                     "description": info.description})
    return rows

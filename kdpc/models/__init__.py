"""Point-cloud models: a timm-style registry of classification and part-segmentation presets.

>>> model = create_model("pointnet2-ssg", num_classes=40, npoints=[256, 64])
>>> logits = model(points)  # points [B, N, 3] -> [B, 40]

See ``kdpc.models.registry`` for the preset table.
"""

from . import dgcnn, pointmlp, pointnet, pointnet2, seg  # noqa: F401  (registers the presets)
from .base import PointClsModel, PointSegModel
from .registry import (
    count_parameters,
    create_model,
    list_models,
    model_info,
    model_table,
    model_task,
    register_model,
)

__all__ = [
    "PointClsModel",
    "PointSegModel",
    "count_parameters",
    "create_model",
    "list_models",
    "model_info",
    "model_table",
    "model_task",
    "register_model",
]

"""Point-cloud models: a timm-style registry of classification and part-segmentation presets.

>>> model = create_model("pointnet2-ssg", num_classes=40, npoints=[256, 64])
>>> logits = model(points)  # points [B, N, 3] -> [B, 40]
>>> seg = create_model("pointnet2-seg", num_classes=50, num_categories=16)
>>> part_logits = seg(points, category)  # [B, N, 3], [B] -> [B, N, 50]

>>> scene = create_model("ptv3-tiny", num_classes=13, in_channels=6, grid_size=0.05)
>>> logits = scene(coord, feat, offset)  # concatenated scenes [N, 3], [N, 6], offsets [B] -> [N, 13]

``create_model`` is the way in. One file per family (``pointnet``, ``pointnet2``, ``dgcnn``, ``pointmlp``) holds
all of that family's models and registers its presets; ``base`` and ``ops`` hold what the families share. See
``kdpc.models.registry`` for the preset table.
"""

from . import dgcnn, pointmlp, pointnet, pointnet2  # noqa: F401  (registers the presets)
from . import ptv3, scene_unet  # noqa: F401  (scene segmentation presets)
from .base import PointClsModel, PointSegModel, model_features_and_logits, model_forward, model_inputs, unwrap_model
from .scene_base import SceneSegModel
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
    "SceneSegModel",
    "count_parameters",
    "create_model",
    "list_models",
    "model_features_and_logits",
    "model_info",
    "model_table",
    "model_task",
    "register_model",
]

"""Classification: the student's embedding matched to the teacher's recorded embedding of the same view.

A classification store recorded from a kdpc checkpoint keeps, per view, the teacher's embedding right before its
classifier head (``features`` ``[R, D]``; ``kdpc record --feature-dim D``, default 256). ``kdpc distill`` then adds
the term below (``--feature-weight``; on by default for a student whose embedding is at least D wide): a linear
``EmbeddingProjector`` maps the student's embedding into the teacher's space, and a contrastive loss asks each
projected view to be closer to the teacher's embedding of the same view than to the teacher's embeddings of the
other views in the batch (InfoNCE with in-batch negatives: the objective of contrastive representation
distillation, Tian, Krishnan & Isola, ICLR 2020, without its memory bank). The projector is trained with the
student and dropped afterwards. It helps a student with local features and costs the 21k-parameter PointNet, whose
128-dim embedding is narrower than the recorded one, about a point (docs/method.md): hence the default by width.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KdpcError

DEFAULT_FEATURE_TEMPERATURE = 0.1


class EmbeddingProjector(nn.Module):
    """``[B, Ds] -> [B, Dt]``: one linear map from the student's embedding into the teacher's space."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def embedding_contrast_loss(
    projected: Tensor,
    teacher_features: Tensor,
    temperature: float = DEFAULT_FEATURE_TEMPERATURE,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """InfoNCE between the projected student embeddings ``[B, Dt]`` and the teacher's ``[B, Dt]``: row ``i`` of
    ``cos(s_i, t_j) / temperature`` is a ``B``-way classification whose answer is ``j = i``. ``gather`` (under data
    parallelism) makes every record of the global batch a negative."""
    if projected.ndim != 2 or projected.shape != teacher_features.shape:
        raise KdpcError(f"embedding matching needs [B, D] student and teacher embeddings of one width, got "
                        f"{tuple(projected.shape)} and {tuple(teacher_features.shape)}")
    s = F.normalize(projected.float(), dim=-1)
    t = F.normalize(teacher_features.detach().float(), dim=-1)
    if gather is not None:
        s, t = gather(s), gather(t)
    logits = s @ t.T / temperature
    return F.cross_entropy(logits, torch.arange(len(s), device=s.device))

"""Base classes shared by every model family, and the small layer helpers they are built from.

Every model takes ``in_channels`` input columns per point (default 3: xyz; 6: xyz + normals or xyz + colour; 9:
xyz + normals + colour), xyz first; ``model_forward`` hands a model the first ``in_channels`` columns of a dataset's
points, so a dataset may carry more columns than a model uses.

Classification (``task = "cls"``)::

    forward(x [B, N, in_channels]) -> logits [B, C]  ==  forward_head(forward_features(x))
    forward_features(x) -> [B, num_features]          # embedding right before the classifier head

Part segmentation (``task = "partseg"``)::

    forward(x [B, N, 3], category=None) -> per-point logits [B, N, P]
    forward_features(x, category=None) -> [B, N, num_features]   # input of the per-point classifier head
    forward_head(features [B, N, D]) -> [B, N, P]

``category`` is a LongTensor ``[B]`` of object categories, one-hot embedded when the model was built with
``num_categories > 0``; it is ignored by models built with ``num_categories = 0`` so that one training loop can
drive conditioned and unconditioned models alike.

Every model keeps its classifier head at ``model.head`` (``forward_head`` is ``self.head(features)``), which lets
a trainer catch the features of a wrapped (DDP) model on their way into the head.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KdpcError


def check_points(x: Tensor, in_channels: int = 3) -> None:
    if x.dim() != 3 or x.shape[-1] != in_channels:
        what = "xyz only" if in_channels == 3 else f"xyz and {in_channels - 3} more channels"
        raise KdpcError(f"this model takes point clouds shaped [B, N, {in_channels}] ({what}), got {list(x.shape)}; "
                        "model option in_channels sets how many columns it takes")
    if not x.is_floating_point():
        raise KdpcError(f"models take floating point clouds, got dtype {x.dtype}")


def check_in_channels(in_channels: Any) -> int:
    """``in_channels``: xyz (3) plus any extra per-point channels (normals, colour)."""
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 3:
        raise KdpcError(f"model option in_channels must be an integer >= 3 (xyz first), got {in_channels!r}")
    return in_channels


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise KdpcError(f"model option {name} must be a positive integer, got {value!r}")


def check_widths(name: str, widths: Sequence[Any], allow_empty: bool = False) -> tuple[int, ...]:
    """Validate a sequence of layer widths (lists from YAML/JSON configs are fine) and return it as a tuple."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise KdpcError(f"model option {name} must be a list of positive integers, got {widths!r}")
    if not widths and not allow_empty:
        raise KdpcError(f"model option {name} must not be empty")
    for w in widths:
        check_positive(name, w)
    return tuple(int(w) for w in widths)


def check_same_length(**seqs: Sequence[Any]) -> int:
    lengths = {name: len(seq) for name, seq in seqs.items()}
    if len(set(lengths.values())) != 1:
        raise KdpcError(f"model options must have one entry per stage, got lengths {lengths}")
    return next(iter(lengths.values()))


def relu() -> nn.Module:
    # In place: activations here always follow a BN, whose backward does not need its output. Saves a large
    # allocation per layer, a real share of CPU time at these widths.
    return nn.ReLU(inplace=True)


def leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class LinearBN(nn.Module):
    """A shared per-point MLP layer on channels-last tensors ``[..., C_in] -> [..., C_out]``: Linear -> BN ->
    activation (``act=None``: none).

    Equivalent to the references' 1x1 Conv1d/Conv2d + BatchNorm on channels-first tensors (same parameter
    count, same statistics: BN runs over every leading position), but without layout shuffles: one GEMM and a
    BN over ``[M, C]`` rows, which is markedly faster on CPU.
    """

    def __init__(
        self, in_channels: int, out_channels: int, act: Callable[[], nn.Module] | None = relu, bias: bool = True
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=bias)
        self.norm = nn.BatchNorm1d(out_channels)
        self.act = act() if act is not None else nn.Identity()

    def finish(self, y: Tensor) -> Tensor:
        """BN + activation of an already computed linear output (for callers that split the linear)."""
        shape = y.shape
        return self.act(self.norm(y.reshape(-1, shape[-1]))).view(shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.finish(self.linear(x))


def shared_mlp(in_channels: int, widths: Sequence[int], **kwargs: Any) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers.append(LinearBN(in_channels, width, **kwargs))
        in_channels = width
    return nn.Sequential(*layers)


def mlp_head(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    dropout: float,
    act: Callable[[], nn.Module] = relu,
    bias: bool | Sequence[bool] = True,
    final_bias: bool = True,
    dropout_last: bool = True,
) -> nn.Sequential:
    """Classifier head on channels-last features ``[..., D] -> [..., num_classes]``: (Linear -> BN -> act ->
    Dropout) per hidden width, then a Linear to the logits. Serves per-cloud heads ``[B, D]`` and per-point
    heads ``[B, N, D]`` alike.

    ``bias`` is one flag for all hidden linears or one per hidden linear; ``dropout_last=False`` skips the
    dropout after the last hidden layer (DGCNN's segmentation head).
    """
    biases = [bias] * len(hidden) if isinstance(bias, bool) else list(bias)
    layers: list[nn.Module] = []
    for i, width in enumerate(hidden):
        layers.append(LinearBN(in_features, width, act=act, bias=biases[i]))
        if dropout > 0 and (dropout_last or i < len(hidden) - 1):
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, num_classes, bias=final_bias))
    return nn.Sequential(*layers)


class PointClsModel(nn.Module):
    """A classifier of point clouds ``[B, N, in_channels]``; subclasses implement ``forward_features`` and set
    ``head``."""

    task = "cls"
    head: nn.Module

    def __init__(self, num_classes: int, num_features: int, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = num_features
        self.in_channels = check_in_channels(in_channels)
        self.config: dict[str, Any] = {}  # filled by the registry: the resolved preset options

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class PointSegModel(nn.Module):
    """A per-point (part) segmenter of point clouds ``[B, N, in_channels]`` with optional object-category
    conditioning; subclasses implement ``forward_features`` and set ``head``."""

    task = "partseg"
    head: nn.Module

    def __init__(self, num_classes: int, num_features: int, num_categories: int, in_channels: int = 3) -> None:
        super().__init__()
        if not isinstance(num_categories, int) or num_categories < 0:
            raise KdpcError(f"model option num_categories must be an integer >= 0, got {num_categories!r}")
        self.num_classes = num_classes
        self.num_features = num_features
        self.num_categories = num_categories
        self.in_channels = check_in_channels(in_channels)
        self.config: dict[str, Any] = {}

    def category_onehot(self, category: Tensor | None, x: Tensor) -> Tensor | None:
        """``[B, num_categories]`` one-hot of ``category`` in x's dtype, or None for an unconditioned model."""
        if self.num_categories == 0:
            return None
        if category is None:
            raise KdpcError(
                f"this model was built with num_categories={self.num_categories} and needs the object category "
                "of every cloud (a LongTensor [B])"
            )
        if category.dim() != 1 or category.shape[0] != x.shape[0] or category.is_floating_point():
            raise KdpcError(f"category must be an integer tensor [B={x.shape[0]}], got {category.dtype} "
                            f"{list(category.shape)}")
        return F.one_hot(category.to(torch.long), self.num_categories).to(x.dtype)

    def forward_features(self, x: Tensor, category: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, x: Tensor, category: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x, category))


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel (``.module``) or torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def model_inputs(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    """The first ``model.in_channels`` columns of ``points`` (all of them for a model without ``in_channels``):
    datasets carry every channel they have, each model takes the ones it was built for."""
    wanted = getattr(unwrap_model(model), "in_channels", None)
    if isinstance(wanted, int) and points.dim() == 3 and points.shape[-1] > wanted:
        return points[..., :wanted]
    return points


def category_input(model: torch.nn.Module, category: torch.Tensor | None) -> torch.Tensor | None:
    """What a part model takes as its object category: ``category`` if it was built with ``num_categories``, else
    ``None`` (a part model without a category token ignores it)."""
    return category if getattr(unwrap_model(model), "num_categories", 0) else None


def model_forward(model: torch.nn.Module, points: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
    """Classification models take points; part-segmentation models also take the object category.

    ``points`` may carry more columns than the model takes (``model_inputs``). ``model`` may be a DDP wrapper: the
    call goes through it (gradient sync) and the attributes come from the module inside."""
    inner = unwrap_model(model)
    points = model_inputs(inner, points)
    if getattr(inner, "task", "cls") == "partseg":
        return model(points, category_input(inner, label))
    return model(points)


def model_features_and_logits(model: nn.Module, *inputs: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(features [..., Ds], logits [..., P] float32)`` from ONE forward of a model: classifiers take ``(points,)``
    and give ``[B, Ds]`` / ``[B, C]``, part models ``(points [B, N, C], category)`` (the category only if built with
    ``num_categories``), scene models ``(coord, feat, offset)`` and give ``[N, Ds]`` / ``[N, P]``.

    A plain model: ``forward_features`` then ``forward_head``. A DDP/DataParallel wrapper: the call goes through the
    wrapper (so gradients are synchronised) and the features are caught on their way into ``model.head``.
    """
    wrapped = isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
    inner = model.module if wrapped else model
    if len(inputs) == 2:  # part segmentation: (points, category)
        points, category = inputs
        inputs = (points, category_input(inner, category))
    if not wrapped:
        feats = inner.forward_features(*inputs)
        return feats, inner.forward_head(feats).float()
    head = getattr(inner, "head", None)
    if not isinstance(head, nn.Module):
        raise KdpcError("features of a wrapped (DDP) model need its classifier head at `model.head`")
    caught: list[Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: caught.append(args[0]))
    try:
        logits = model(*inputs)
    finally:
        handle.remove()
    if len(caught) != 1:
        raise KdpcError(f"expected one call of the model's head per forward, saw {len(caught)}")
    return caught[0], logits.float()

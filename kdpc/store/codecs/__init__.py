"""Teacher-output codecs, on one registry: ``get_codec(spec, num_classes)`` for classification records and
``get_point_codec(spec, num_classes, num_points)`` for per-point (part segmentation) records, which take
``ptopk:K`` or any classification codec applied per point. ``default_codec(task)`` is the one place that picks
the default."""

from __future__ import annotations

from typing import Callable

from ...errors import KdpcError
from ...registry import Registry
from .base import ArraysSpec, OutputCodec
from .classes import Codec, F16Codec, F32Codec, TopKCodec, U8Codec, U8LogCodec, decoded_error_bound
from .numerics import kl_divergence, log_softmax, logsumexp
from .points import PointCodec, PointTopKCodec, RowwisePointCodec, point_decoded_error_bound

DEFAULT_CODEC = "u8log"  # classification: 45 B per 40-class record at KL(T=4) < 1e-4 (docs/record-format.md)
DEFAULT_SEG_CODEC = "ptopk:4"  # per point: 12x smaller than float16 dense logits
DEFAULT_SCENE_CODEC = "u8log:8"  # scenes: every class of every point, coarse: ~3.7 B/point at KL(T=2) 3e-3

CODECS: Registry[Codec] = Registry("output codec")  # factory(arg) -> Codec, arg = the text after "name:"


def default_codec(task: str) -> str:
    return {"partseg": DEFAULT_SEG_CODEC, "semseg": DEFAULT_SCENE_CODEC}.get(task, DEFAULT_CODEC)


def _no_arg(cls: type[Codec]) -> Callable[[str | None], Codec]:
    def make(arg: str | None) -> Codec:
        if arg is not None:
            raise KdpcError(f"codec {cls.name!r} takes no argument, got {cls.name}:{arg}")
        return cls()

    return make


def _topk(arg: str | None) -> Codec:
    if arg is None or not arg.isdigit():
        raise KdpcError(f"codec topk needs the number of classes to keep, e.g. topk:10 (got {arg!r})")
    return TopKCodec(int(arg))


def _u8log(arg: str | None) -> Codec:
    if arg is None:
        return U8LogCodec()
    if not arg.isdigit() or not 1 <= int(arg) <= 255:
        raise KdpcError(f"codec u8log takes an optional integer resolution 1..255, e.g. u8log:8 (got u8log:{arg})")
    return U8LogCodec(int(arg))


for _cls in (F32Codec, F16Codec, U8Codec):
    CODECS.register(_cls.name)(_no_arg(_cls))
CODECS.register("u8log")(_u8log)
CODECS.register("topk")(_topk)


def codec_names() -> list[str]:
    """Registered codec names (``topk`` is used as ``topk:K``)."""
    return CODECS.names()


def get_codec(spec: str, num_classes: int | None = None) -> Codec:
    """Parse ``"f16"``, ``"u8log"``, ``"topk:10"``...; with ``num_classes`` also check it fits the task."""
    if not isinstance(spec, str) or not spec:
        raise KdpcError(f"codec must be a non-empty string, got {spec!r}")
    name, _, arg = spec.partition(":")
    if name.strip().lower() not in CODECS:
        raise KdpcError(f"unknown output codec {spec!r}; known: {', '.join(codec_names())} (topk as topk:K)")
    codec = CODECS.get(name.strip().lower())(arg.strip() if arg else None)
    if num_classes is not None:
        codec.validate(int(num_classes))
        codec.num_classes = int(num_classes)
    return codec


def point_codec_names() -> list[str]:
    """Codecs a partseg store takes: ``ptopk:K`` and every classification codec applied per point."""
    return sorted(["ptopk", *codec_names()])


def get_point_codec(spec: str, num_classes: int, num_points: int) -> PointCodec:
    """``"ptopk:4"`` or any classification codec spec (``"u8log"``, ``"topk:3"``...) applied per point."""
    if not isinstance(spec, str) or not spec:
        raise KdpcError(f"codec must be a non-empty string, got {spec!r}")
    if num_points < 1:
        raise KdpcError(f"a partseg store needs num_points >= 1, got {num_points}")
    name, _, arg = spec.partition(":")
    if name.strip().lower() == "ptopk":
        if not arg.strip().isdigit():
            raise KdpcError(f"codec ptopk needs the number of parts to keep per point, e.g. ptopk:4 (got {spec!r})")
        if num_classes < 2:
            raise KdpcError(f"a record store needs at least 2 classes, got {num_classes}")
        return PointTopKCodec(int(arg), num_points, num_classes)
    try:
        inner = get_codec(spec, num_classes)
    except KdpcError as exc:
        raise KdpcError(f"{exc}; partseg stores also take ptopk:K") from None
    return RowwisePointCodec(inner, num_points, num_classes)


__all__ = [
    "ArraysSpec", "Codec", "DEFAULT_CODEC", "DEFAULT_SCENE_CODEC", "DEFAULT_SEG_CODEC", "OutputCodec", "PointCodec", "PointTopKCodec",
    "RowwisePointCodec", "codec_names", "decoded_error_bound", "default_codec", "get_codec", "get_point_codec",
    "kl_divergence", "log_softmax", "logsumexp", "point_codec_names", "point_decoded_error_bound",
]

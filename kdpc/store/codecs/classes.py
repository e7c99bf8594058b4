"""Classification codecs: a batch of log-probabilities ``[n, C]`` <-> the arrays under ``output/``.

Every codec stores *log-softmax* values (or something that decodes to them) rather than raw logits: a per-row
constant does not change ``softmax(z / T)`` for any temperature ``T``, so the distillation temperature stays free
at training time. ``decode`` always returns float32 log-probabilities normalised to ``logsumexp == 0``.

``f32``      log-softmax float32. Lossless reference.
``f16``      log-softmax float16. Relative error 2**-11 per value.
``u8``       d = max(l) - l (clipped at 88), uint8 ``q = round(255 * d / s)`` with a per-record float16 scale ``s``.
``u8log``    (default) log-companded uint8: ``q = round(K * ln(1 + d / d0))`` with d0 = 2, K = 60; error grows with
             d, i.e. it is smallest for the classes that carry the probability mass at any temperature. Stored as
             ``(q - base) mod 256`` with a per-record uint8 ``base`` (the row median of q): lossless, and it lowers
             the entropy zstd sees by ~1.8 B/record for 40 classes because records differ in overall sharpness.
``topk:K``   float16 top-K log-probs, their integer class indices (uint8 for C <= 256 else uint16) and the
             float16 log of the remaining mass, which decode spreads uniformly over the other C - K classes.

``docs/record-format.md`` has the exact formulas and the measured table.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import KdpcError
from .base import ArraysSpec, OutputCodec, index_problems
from .numerics import log_softmax, logsumexp

_F16_EPS = 2.0**-11  # unit roundoff of float16 (round to nearest)
_F16_TINY = 2.0**-25  # half the smallest float16 subnormal


def _check_logprobs(logprobs: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    x = np.asarray(logprobs)
    if x.ndim != 2:
        raise ValueError(f"teacher output must be [n, classes], got shape {x.shape}")
    if num_classes is not None and x.shape[1] != num_classes:
        raise ValueError(f"teacher output has {x.shape[1]} classes, the store has {num_classes}")
    return x



class Codec(OutputCodec):
    """A classification codec. Subclasses implement ``_decode_raw`` (unnormalised float64 log-probs ``[n, C]``);
    ``decode`` renormalises."""

    num_classes: int | None = None  # bound by the registry's ``get_codec(spec, num_classes)``; topk needs it

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Unnormalised float64 log-probs ``[n, C]`` (any per-row constant)."""
        raise NotImplementedError

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """float32 log-probs ``[n, C]`` with ``logsumexp == 0`` per row."""
        return log_softmax(self._decode_raw(arrays)).astype(np.float32)

    def validate(self, num_classes: int) -> None:
        """Raise ``KdpcError`` if this codec cannot store ``num_classes`` classes."""
        if num_classes < 2:
            raise KdpcError(f"a record store needs at least 2 classes, got {num_classes}")


def decoded_error_bound(codec: Codec, logprobs: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Rigorous per-entry bound on ``|decoded - logprobs|`` for normalised inputs (used by the tests and docs)."""
    lp = log_softmax(logprobs)
    e = codec.error_bound(lp)
    p = np.exp(lp)
    p2 = np.exp(np.asarray(decoded, dtype=np.float64))
    finite_e = np.where(np.isfinite(e), e, 0.0)
    # entries without a bound (inf) contribute their actual weight times their actual error to the shift
    actual = np.abs(np.where(np.isfinite(e), 0.0, np.nan_to_num(decoded - lp, posinf=0.0, neginf=0.0)))
    shift = (np.maximum(p, p2) * (finite_e + actual)).sum(axis=1, keepdims=True)
    return e + shift + 1e-6 * (1.0 + np.abs(np.where(np.isfinite(lp), lp, 0.0)))  # + float32 output rounding



class F32Codec(Codec):
    name = "f32"
    lossless = True
    resolution = "float32 log-softmax (lossless reference)"

    def arrays(self, num_classes: int) -> ArraysSpec:
        return {"logprobs": ((num_classes,), "float32")}

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        return {"logprobs": log_softmax(_check_logprobs(logprobs)).astype(np.float32)}

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(arrays["logprobs"], dtype=np.float64)

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        return np.where(np.isfinite(lp), np.abs(lp) * 2.0**-24 + 1e-30, 0.0)


class F16Codec(Codec):
    name = "f16"
    resolution = "float16 log-softmax: |error| <= 2^-11 |log p| (+ renormalisation)"

    def arrays(self, num_classes: int) -> ArraysSpec:
        return {"logprobs": ((num_classes,), "float16")}

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        lp = log_softmax(_check_logprobs(logprobs))
        return {"logprobs": np.maximum(lp, -65504.0).astype(np.float16)}  # -inf stays -inf

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(arrays["logprobs"], dtype=np.float64)

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        return np.where(np.isfinite(lp) & (lp > -65504.0), np.abs(lp) * _F16_EPS + _F16_TINY, np.inf)


class U8Codec(Codec):
    """Linear uint8 with a per-record scale: ``d = min(max(l) - l, 88)``, ``s = max(d)`` rounded *up* to float16,
    ``q = round(255 * d / s)``; decode ``-q * s / 255``. Error <= s / 510 per entry."""

    name = "u8"
    resolution = "uint8 of (max - log p) with a per-record float16 scale s: |error| <= s/510"
    D_CLIP = 88.0

    def arrays(self, num_classes: int) -> ArraysSpec:
        return {"q": ((num_classes,), "uint8"), "scale": ((), "float16")}

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        lp = log_softmax(_check_logprobs(logprobs))
        d = np.minimum(lp.max(axis=1, keepdims=True) - lp, self.D_CLIP)
        s = d.max(axis=1)
        s16 = s.astype(np.float16)
        low = s16.astype(np.float64) < s
        s16[low] = np.nextafter(s16[low], np.float16(np.inf))
        s64 = s16.astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(s64 > 0, np.rint(d * 255.0 / s64), 0.0)
        return {"q": np.clip(q, 0, 255).astype(np.uint8), "scale": s16}

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        s = np.asarray(arrays["scale"], dtype=np.float64)[:, None]
        return -np.asarray(arrays["q"], dtype=np.float64) * (s / 255.0)

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        d = lp.max(axis=1, keepdims=True) - lp
        s = np.minimum(d, self.D_CLIP).max(axis=1, keepdims=True)
        s = np.nextafter(s.astype(np.float16).astype(np.float64), np.inf)  # >= the stored scale
        return np.where(d <= self.D_CLIP, np.broadcast_to(0.5 * s / 255.0 * (1 + 1e-6), d.shape), np.inf)


class U8LogCodec(Codec):
    """Log-companded uint8, the default.

    ``d = max(l) - l >= 0``; ``q = min(255, round(K * ln(1 + d / d0)))``; stored ``q_stored = (q - base) mod 256``
    with ``base = round(median_c q)`` per record (uint8). Decode: ``q = (q_stored + base) mod 256``,
    ``l = -d0 * (exp(q / K) - 1)``, renormalise. Entries with d > d0 * (exp(255 / K) - 1) (~138 nats) decode to
    that floor. Per-entry error ``|d' - d| <= (d + d0) * (exp(0.5 / K) - 1)`` (~0.83 % of d + d0); the top class is
    exact. Any base decodes correctly; the median only makes the stored bytes compress better (``u8log:K`` stores 0).
    """

    name = "u8log"
    D0 = 2.0
    DEFAULT_K = 60.0

    def __init__(self, k: float | None = None) -> None:
        """``k``: the companding resolution (``u8log:K``); 60 by default. A smaller K is a coarser code whose bytes
        compress better (``u8log:8`` for scene stores: error ``<= 0.064 (d + 2)``, docs/record-format.md 10)."""
        self.K = float(self.DEFAULT_K if k is None else k)
        self.resolution = (f"uint8 of K ln(1 + d/d0), d = max - log p, d0=2, K={self.K:g}: |error| <= "
                           f"{math.expm1(0.5 / self.K):.2g} (d + 2)")

    def spec(self) -> str:
        return self.name if self.K == self.DEFAULT_K else f"{self.name}:{self.K:g}"

    def config(self) -> dict:
        return {"codec": self.spec(), "d0": self.D0, "k": self.K}

    @property
    def d_floor(self) -> float:
        return self.D0 * math.expm1(255.0 / self.K)

    def arrays(self, num_classes: int) -> ArraysSpec:
        return {"q": ((num_classes,), "uint8"), "base": ((), "uint8")}

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        lp = log_softmax(_check_logprobs(logprobs))
        d = lp.max(axis=1, keepdims=True) - lp  # +inf for -inf entries
        with np.errstate(invalid="ignore", over="ignore"):
            y = np.log1p(d / self.D0) * self.K
        q = np.minimum(np.rint(np.nan_to_num(y, posinf=255.0)), 255.0).astype(np.int64)
        if q.size and self.K == self.DEFAULT_K:
            base = np.rint(np.median(q, axis=1)).astype(np.int64)
        else:  # coarse codes (u8log:K) compress best unshifted: 3.66 vs 3.95 B/point at K = 8 on scene outputs
            base = np.zeros(q.shape[0], np.int64)
        stored = ((q - base[:, None]) & 255).astype(np.uint8)
        return {"q": stored, "base": base.astype(np.uint8)}

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        q = (np.asarray(arrays["q"], dtype=np.uint8) + np.asarray(arrays["base"], dtype=np.uint8)[:, None])  # mod 256
        return self._levels()[q]  # -d0 * expm1(q / K) for the 256 codes: a lookup, not an expm1 per entry

    def _levels(self) -> np.ndarray:
        if getattr(self, "_level_table", None) is None:
            self._level_table = -self.D0 * np.expm1(np.arange(256) / self.K)
        return self._level_table

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        d = lp.max(axis=1, keepdims=True) - lp
        bound = (d + self.D0) * math.expm1(0.5 / self.K) * (1 + 1e-9)
        return np.where(d <= self.d_floor * math.exp(-0.5 / self.K) - self.D0 * 1e-9, bound, np.inf)


class TopKCodec(Codec):
    """float16 top-K log-probs (sorted, descending; ties by class index), their class indices and the float16 log of
    the remaining mass. Decode gives each of the other C - K classes ``tail - ln(C - K)``."""

    name = "topk"

    def __init__(self, k: int) -> None:
        if k < 1:
            raise KdpcError(f"codec topk:{k} needs K >= 1")
        self.k = int(k)
        self.resolution = f"top-{self.k} float16 log-probs + uniform tail (tail classes are not preserved)"

    def spec(self) -> str:
        return f"topk:{self.k}"

    def config(self) -> dict:
        return {"codec": self.spec(), "k": self.k}

    def validate(self, num_classes: int) -> None:
        super().validate(num_classes)
        if self.k > num_classes:
            raise KdpcError(f"codec topk:{self.k} keeps more classes than the {num_classes} the task has; pick K < {num_classes}")

    @staticmethod
    def index_dtype(num_classes: int) -> str:
        return "uint8" if num_classes <= 256 else "uint16" if num_classes <= 65536 else "uint32"

    def arrays(self, num_classes: int) -> ArraysSpec:
        return {
            "topk_logprobs": ((self.k,), "float16"),
            "topk_index": ((self.k,), self.index_dtype(num_classes)),
            "tail_logmass": ((), "float16"),
        }

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        lp = log_softmax(_check_logprobs(logprobs))
        n, c = lp.shape
        self.validate(c)
        order = np.argsort(-lp, axis=1, kind="stable")
        top, rest = order[:, : self.k], order[:, self.k :]
        top_lp = np.take_along_axis(lp, top, axis=1)
        if rest.shape[1]:
            tail = logsumexp(np.take_along_axis(lp, rest, axis=1))[:, 0]
        else:
            tail = np.full(n, -np.inf)
        return {
            "topk_logprobs": np.maximum(top_lp, -65504.0).astype(np.float16),
            "topk_index": top.astype(self.index_dtype(c)),
            "tail_logmass": np.maximum(tail, -65504.0).astype(np.float16),
        }

    def decode_classes(self, arrays: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
        top_lp = np.asarray(arrays["topk_logprobs"], dtype=np.float64)
        idx = np.asarray(arrays["topk_index"]).astype(np.int64)
        tail = np.asarray(arrays["tail_logmass"], dtype=np.float64)
        n = top_lp.shape[0]
        others = num_classes - self.k
        fill = tail - math.log(others) if others > 0 else np.full(n, -np.inf)
        out = np.repeat(fill[:, None], num_classes, axis=1)
        np.put_along_axis(out, idx, top_lp, axis=1)
        return out

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if self.num_classes is None:
            raise ValueError("topk decode needs the class count: build the codec with get_codec(spec, num_classes)")
        return self.decode_classes(arrays, self.num_classes)

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        order = np.argsort(-lp, axis=1, kind="stable")
        bound = np.full(lp.shape, np.inf)
        top = order[:, : self.k]
        top_lp = np.take_along_axis(lp, top, axis=1)
        np.put_along_axis(bound, top, np.abs(top_lp) * _F16_EPS + _F16_TINY, axis=1)
        return bound

    def problems(self, arrays: dict[str, np.ndarray], num_classes: int) -> list[str]:
        return index_problems(arrays["topk_index"], num_classes)

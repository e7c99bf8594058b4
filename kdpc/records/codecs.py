"""Teacher-output codecs: how a batch of log-probabilities ``[n, C]`` becomes the arrays under ``output/``.

Every codec stores *log-softmax* values (or something that decodes to them) rather than raw logits: a per-row
constant does not change ``softmax(z / T)`` for any temperature ``T``, so the distillation temperature stays free
at training time. ``decode`` always returns float32 log-probabilities normalised to ``logsumexp == 0``.

Codecs (``get_codec(spec)``; ``docs/record-format.md`` has the exact formulas and the measured table):

``f32``      log-softmax float32. Lossless reference.
``f16``      log-softmax float16. Relative error 2**-11 per value.
``u8``       d = max(l) - l (clipped at 88), uint8 ``q = round(255 * d / s)`` with a per-record float16 scale ``s``.
``u8log``    (default) log-companded uint8: ``q = round(K * ln(1 + d / d0))`` with d0 = 2, K = 60; error grows with
             d, i.e. it is smallest for the classes that carry the probability mass at any temperature. Stored as
             ``(q - base) mod 256`` with a per-record uint8 ``base`` (the row median of q): lossless, and it lowers
             the entropy zstd sees by ~1.8 B/record for 40 classes because records differ in overall sharpness.
``topk:K``   float16 top-K log-probs, their integer class indices (uint8 for C <= 256 else uint16) and the
             float16 log of the remaining mass, which decode spreads uniformly over the other C - K classes.

``realistic_logprobs`` is the documented synthetic teacher the default was chosen on (see bench/record_size.py).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import KdpcError

ArraysSpec = dict[str, tuple[tuple[int, ...], str]]
_F16_EPS = 2.0**-11  # unit roundoff of float16 (round to nearest)
_F16_TINY = 2.0**-25  # half the smallest float16 subnormal


# ------------------------------------------------------------------------------------------------- numerics
def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Row-wise log-sum-exp in float64, ``-inf`` for all ``-inf`` rows, keeping the reduced axis."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return m_safe + np.log(np.sum(np.exp(x - m_safe), axis=axis, keepdims=True))


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """float64 log-softmax."""
    x = np.asarray(x, dtype=np.float64)
    return x - logsumexp(x, axis=axis)


def kl_divergence(p_logprobs: np.ndarray, q_logprobs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Per-row ``KL(softmax(p / T) || softmax(q / T))`` in float64 (the distillation loss' direction)."""
    lp = log_softmax(np.asarray(p_logprobs, dtype=np.float64) / temperature)
    lq = log_softmax(np.asarray(q_logprobs, dtype=np.float64) / temperature)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (lp - lq), 0.0)
    return terms.sum(axis=-1)


def _check_logprobs(logprobs: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    x = np.asarray(logprobs)
    if x.ndim != 2:
        raise ValueError(f"teacher output must be [n, classes], got shape {x.shape}")
    if num_classes is not None and x.shape[1] != num_classes:
        raise ValueError(f"teacher output has {x.shape[1]} classes, the store has {num_classes}")
    return x


# --------------------------------------------------------------------------------------------------- codecs
class Codec:
    """Base class. Subclasses set ``name`` and implement ``arrays``, ``encode``, ``_decode_raw``, ``error_bound``."""

    name: str = ""
    lossless: bool = False
    resolution: str = ""  # one line for docs / info
    num_classes: int | None = None  # bound by ``get_codec(spec, num_classes)``; topk needs it to decode

    def spec(self) -> str:
        """The string that selects this codec (``get_codec(codec.spec())`` rebuilds it)."""
        return self.name

    def config(self) -> dict:
        """Constants a plain zarr/h5py reader needs to decode; stored as attributes of the ``output`` group."""
        return {"codec": self.spec()}

    def arrays(self, num_classes: int) -> ArraysSpec:
        raise NotImplementedError

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Unnormalised float64 log-probs ``[n, C]`` (any per-row constant)."""
        raise NotImplementedError

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """float32 log-probs ``[n, C]`` with ``logsumexp == 0`` per row."""
        raw = self._decode_raw(arrays)
        return log_softmax(raw).astype(np.float32)

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        """Per-entry bound on ``|raw_decoded - logprobs|`` up to the row constant, before renormalisation.

        ``inf`` where the codec gives no per-entry guarantee (topk tail, values clipped at the floor). Renormalising
        adds at most ``sum_j max(p_j, p'_j) * bound_j`` per row (convexity of logsumexp), see ``decoded_error_bound``.
        """
        raise NotImplementedError

    def validate(self, num_classes: int) -> None:
        """Raise ``KdpcError`` if this codec cannot store ``num_classes`` classes."""
        if num_classes < 2:
            raise KdpcError(f"a record store needs at least 2 classes, got {num_classes}")

    def __repr__(self) -> str:
        return f"<codec {self.spec()}>"


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
    exact. Any base decodes correctly; the median only makes the stored bytes compress better.
    """

    name = "u8log"
    D0 = 2.0
    K = 60.0
    resolution = "uint8 of K ln(1 + d/d0), d = max - log p, d0=2, K=60: |error| <= 0.0084 (d + 2)"

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
        base = np.rint(np.median(q, axis=1)).astype(np.int64) if q.size else np.zeros(q.shape[0], np.int64)
        stored = ((q - base[:, None]) & 255).astype(np.uint8)
        return {"q": stored, "base": base.astype(np.uint8)}

    def _decode_raw(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        q = (np.asarray(arrays["q"], dtype=np.int64) + np.asarray(arrays["base"], dtype=np.int64)[:, None]) & 255
        return -self.D0 * np.expm1(q / self.K)

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


# ------------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[[str | None], Codec]] = {}


def _register(name: str, factory: Callable[[str | None], Codec]) -> None:
    _REGISTRY[name] = factory


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


_register("f32", _no_arg(F32Codec))
_register("f16", _no_arg(F16Codec))
_register("u8", _no_arg(U8Codec))
_register("u8log", _no_arg(U8LogCodec))
_register("topk", _topk)

DEFAULT_CODEC = "u8log"


def codec_names() -> list[str]:
    """Registered codec names (``topk`` is used as ``topk:K``)."""
    return sorted(_REGISTRY)


def get_codec(spec: str, num_classes: int | None = None) -> Codec:
    """Parse ``"f16"``, ``"u8log"``, ``"topk:10"``...; with ``num_classes`` also check it fits the task."""
    if not isinstance(spec, str) or not spec:
        raise KdpcError(f"codec must be a non-empty string, got {spec!r}")
    name, _, arg = spec.partition(":")
    factory = _REGISTRY.get(name.strip().lower())
    if factory is None:
        raise KdpcError(f"unknown output codec {spec!r}; known: {', '.join(codec_names())} (topk as topk:K)")
    codec = factory(arg.strip() if arg else None)
    if num_classes is not None:
        codec.validate(int(num_classes))
        codec.num_classes = int(num_classes)
    return codec


# ------------------------------------------------------------------------------------------ synthetic teacher
def realistic_logprobs(
    num_samples: int, num_views: int, num_classes: int = 40, seed: int = 0, *, dim: int = 32, accuracy: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic teacher log-probs that look like a trained classifier's, VIEW-MAJOR ``[num_views * num_samples, C]``.

    Model: unit class embeddings ``E`` (dim 32, with cluster structure so some classes are look-alikes); each sample
    has a label ``y`` and a feature ``f = E[t] + sigma * noise`` where ``t = y`` with probability ``accuracy`` and
    otherwise ``y``'s nearest look-alike (sigma ~ U(0.1, 0.5) scaled); each view perturbs ``f`` a little (the
    augmentation); logits are ``beta * cos(E_c, f_view)`` with a per-sample sharpness ``beta`` log-uniform in
    [9, 27]. For 40 classes this gives p_top quartiles ~0.81 / 0.95 / 0.994 (5 % below ~0.45), tail log-probs around
    -10 +- 3 and row minima around -16 (1 % below -30): a confident, well-trained network on augmented training data.
    Returns ``(logprobs float32, labels int64 [num_samples])``.
    """
    rng = np.random.default_rng(seed)
    groups = rng.standard_normal((max(num_classes // 5, 1), dim))
    emb = groups[rng.integers(0, len(groups), num_classes)] * 0.6 + rng.standard_normal((num_classes, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.integers(0, num_classes, num_samples)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    lookalike = sim.argmax(axis=1)
    target = np.where(rng.random(num_samples) < accuracy, labels, lookalike[labels])
    sigma = rng.uniform(0.1, 0.5, num_samples)
    feat = emb[target] + sigma[:, None] * rng.standard_normal((num_samples, dim)) * (3.0 / math.sqrt(dim))
    beta = np.exp(rng.uniform(math.log(9.0), math.log(27.0), num_samples))
    out = np.empty((num_views * num_samples, num_classes), dtype=np.float32)
    for v in range(num_views):
        fv = feat + 0.25 * rng.standard_normal(feat.shape) * (3.0 / math.sqrt(dim))
        fv /= np.linalg.norm(fv, axis=1, keepdims=True)
        out[v * num_samples : (v + 1) * num_samples] = log_softmax(beta[:, None] * (fv @ emb.T))
    return out, labels


# ------------------------------------------------------------------------------- per-point (part segmentation)
# A "partseg" store holds per-point log-probabilities [n, N, P] per record (N points of the view, P parts). A
# point codec maps them to arrays whose first axis is the record axis and whose tails are per record (``arrays``),
# and back. ``RowwisePointCodec`` reuses any classification codec on the flattened rows [n * N, P];
# ``PointTopKCodec`` (``ptopk:K``) is the compact one made for this: see docs/record-format.md section 8.
def _check_point_logprobs(logprobs: np.ndarray, num_points: int | None = None, num_classes: int | None = None) -> np.ndarray:
    x = np.asarray(logprobs)
    if x.ndim != 3:
        raise ValueError(f"per-point teacher output must be [n, points, parts], got shape {x.shape}")
    if num_points is not None and x.shape[1] != num_points:
        raise ValueError(f"per-point teacher output has {x.shape[1]} points, the store has {num_points}")
    if num_classes is not None and x.shape[2] != num_classes:
        raise ValueError(f"per-point teacher output has {x.shape[2]} parts, the store has {num_classes}")
    return x


class PointCodec:
    """Per-point codec: ``encode([n, N, P]) -> arrays``, ``decode(arrays) -> float32 [n, N, P]`` (``logsumexp == 0``
    per point). ``arrays(P)`` gives each array's per-record tail shape and dtype (after the record axis)."""

    name: str = ""
    lossless: bool = False
    resolution: str = ""
    num_classes: int
    num_points: int

    def spec(self) -> str:
        return self.name

    def config(self) -> dict:
        return {"codec": self.spec()}

    def arrays(self, num_classes: int) -> ArraysSpec:
        raise NotImplementedError

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        """Per-entry bound ``[n, N, P]`` on ``|raw_decoded - logprobs|`` up to a per-point constant, before
        renormalisation; ``inf`` where the codec gives no per-entry guarantee."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<point codec {self.spec()}>"


class RowwisePointCodec(PointCodec):
    """A classification codec applied to every point's row: arrays ``[R, N, *tail]``."""

    def __init__(self, inner: Codec, num_points: int, num_classes: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.lossless = inner.lossless
        self.resolution = f"{inner.resolution} (per point)"
        self.num_points = int(num_points)
        self.num_classes = int(num_classes)

    def spec(self) -> str:
        return self.inner.spec()

    def config(self) -> dict:
        return self.inner.config()

    def arrays(self, num_classes: int) -> ArraysSpec:
        return {k: ((self.num_points, *tail), dt) for k, (tail, dt) in self.inner.arrays(num_classes).items()}

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        x = _check_point_logprobs(logprobs, self.num_points, self.num_classes)
        n = x.shape[0]
        enc = self.inner.encode(x.reshape(n * self.num_points, self.num_classes))
        return {k: v.reshape(n, self.num_points, *v.shape[1:]) for k, v in enc.items()}

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        first = next(iter(arrays.values()))
        n = first.shape[0]
        flat = {k: np.asarray(v).reshape(n * self.num_points, *np.shape(v)[2:]) for k, v in arrays.items()}
        return self.inner.decode(flat).reshape(n, self.num_points, self.num_classes)

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        x = _check_point_logprobs(logprobs)
        return self.inner.error_bound(x.reshape(-1, x.shape[2])).reshape(x.shape)


class PointTopKCodec(PointCodec):
    """``ptopk:K``: per point the K most likely parts, log-companded to one byte each, and the remaining ("tail")
    mass in one byte, spread over the other parts by a per-record profile.

    Per point (``l`` = log-softmax, ``t_1 .. t_K`` the top-K parts by descending ``l``, ties by part index):

    * ``topk_index`` ``[N, K]`` uint8 (P <= 256, else uint16): ``t_1 .. t_K``.
    * ``topk_q`` ``[N, K - 1]`` uint8 (absent for K = 1): ``min(255, round(60 ln(1 + d_j / 2)))`` of
      ``d_j = l[t_1] - l[t_j]``, j = 2..K (the top part has d = 0 and is not stored).
    * ``tail_q`` ``[N]`` uint8: ``s = l[t_1] - logsumexp(l[others])`` (signed: the tail may outweigh the top
      part), stored as ``128 + sign(s) min(127, round(30 ln(1 + |s| / 2)))``.

    Per record: ``profile`` ``[P]`` float16, ``profile_c = ln(mean over the record's points with c in a non-empty
    tail of p_c / tail mass)`` (floored at -60; -60 where c is never in such a tail): the tail's average shape.

    Decode: ``x[t_1] = 0``, ``x[t_j] = -2 (exp(q_j / 60) - 1)``, every other part
    ``x_c = -s' + profile_c - logsumexp_{c' in tail} profile_c'`` with ``s'`` decoded from ``tail_q``; where a tail
    part would then exceed ``x[t_K]`` (the profile is a per-record average), the tail is water-filled under that cap
    (same total mass, no tail part above the kept ones); renormalise.
    The top-K entries have the ``u8log`` bound ``(d + 2)(exp(1/120) - 1)``; the tail keeps its total mass to
    ``(|s| + 2)(exp(1/60) - 1)`` nats, its split across parts is only the record's average shape.
    """

    name = "ptopk"
    D0 = 2.0
    KQ = 60.0  # top-K codes, as u8log
    KT = 30.0  # signed tail code: 127 steps reach |s| = 2 (exp(127/30) - 1) ~ 136 nats
    PROFILE_FLOOR = -60.0

    def __init__(self, k: int, num_points: int, num_classes: int) -> None:
        if k < 1:
            raise KdpcError(f"codec ptopk:{k} needs K >= 1")
        if k >= num_classes:
            raise KdpcError(f"codec ptopk:{k} keeps all of the {num_classes} parts; pick K < {num_classes} "
                            "(or a dense codec such as u8log)")
        self.k = int(k)
        self.num_points = int(num_points)
        self.num_classes = int(num_classes)
        self.resolution = (f"top-{self.k} parts per point as u8log (|error| <= 0.0084 (d + 2)), tail mass in one "
                           "byte, tail split by a per-record profile")

    def spec(self) -> str:
        return f"ptopk:{self.k}"

    def config(self) -> dict:
        return {"codec": self.spec(), "k": self.k, "d0": self.D0, "kq": self.KQ, "kt": self.KT}

    def arrays(self, num_classes: int) -> ArraysSpec:
        n, k = self.num_points, self.k
        out: ArraysSpec = {"topk_index": ((n, k), TopKCodec.index_dtype(num_classes))}
        if k > 1:
            out["topk_q"] = ((n, k - 1), "uint8")
        out["tail_q"] = ((n,), "uint8")
        out["profile"] = ((num_classes,), "float16")
        return out

    def encode(self, logprobs: np.ndarray) -> dict[str, np.ndarray]:
        x = _check_point_logprobs(logprobs, self.num_points, self.num_classes)
        lp = log_softmax(x)  # float64 [n, N, P]
        top, top_lp = _top_k(lp, self.k)  # ties by part index, as a stable descending sort
        out = {"topk_index": top.astype(TopKCodec.index_dtype(self.num_classes))}
        prob = np.exp(lp)
        np.put_along_axis(prob, top, 0.0, axis=-1)  # the tail's probabilities, top-K zeroed
        mass = prob.sum(axis=-1)  # [n, N]
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if self.k > 1:
                d = top_lp[..., :1] - top_lp[..., 1:]
                q = np.minimum(np.rint(np.nan_to_num(self.KQ * np.log1p(d / self.D0), posinf=255.0)), 255.0)
                out["topk_q"] = q.astype(np.uint8)
            s = top_lp[..., 0] - np.log(mass)  # +inf for an empty (or underflowing) tail
            mag = np.minimum(np.rint(np.nan_to_num(self.KT * np.log1p(np.abs(s) / self.D0), posinf=127.0)), 127.0)
            out["tail_q"] = (128.0 + np.sign(s) * mag).astype(np.uint8)
            in_tail = np.ones(lp.shape, dtype=bool)
            np.put_along_axis(in_tail, top, False, axis=-1)
            w = prob / np.where(mass > 0, mass, np.inf)[..., None]  # tail-normalised; 0 where the tail is empty
            counted = in_tail & (mass > 0)[..., None]  # points with an empty tail do not shape the profile
            profile = np.log(w.sum(axis=1) / np.maximum(counted.sum(axis=1), 1))  # [n, P]
        profile = np.where(np.isfinite(profile), np.maximum(profile, self.PROFILE_FLOOR), self.PROFILE_FLOOR)
        out["profile"] = profile.astype(np.float16)
        return out

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        idx = np.asarray(arrays["topk_index"]).astype(np.int64)  # [n, N, K]
        n, npts = idx.shape[:2]
        x_top = np.zeros(idx.shape, dtype=np.float64)
        if self.k > 1:
            x_top[..., 1:] = -self.D0 * np.expm1(np.asarray(arrays["topk_q"], dtype=np.float64) / self.KQ)
        code = np.asarray(arrays["tail_q"], dtype=np.float64) - 128.0
        s = np.sign(code) * self.D0 * np.expm1(np.abs(code) / self.KT)  # [n, N]
        profile = np.asarray(arrays["profile"], dtype=np.float64).reshape(n, self.num_classes)
        peak = profile.max(axis=1, keepdims=True)
        e = np.exp(profile - peak)  # [n, P], max 1
        keep = np.ones((n, npts, self.num_classes), dtype=np.float64)
        np.put_along_axis(keep, idx, 0.0, axis=-1)
        tail_sum = np.einsum("np,nkp->nk", e, keep)  # sum of e over each point's tail parts (> 0: K < P)
        # tail parts: x_c = -s + profile_c - logsumexp_tail(profile); their exp-sum is exp(-s) by construction, so
        # the normaliser is logsumexp(x_top, -s) and no per-entry exp is needed
        offset = (-s - np.log(tail_sum))[..., None] - peak[:, None, :]  # [n, N, 1]
        log_z = logsumexp(np.concatenate([x_top, -s[..., None]], axis=-1))  # [n, N, 1]
        x = profile[:, None, :] + offset  # [n, N, P]; the top-K entries are overwritten below
        # No tail part may rank above the K-th kept one (true for the encoded output): where the profile's split
        # breaks that, cap the tail at it and give the excess to the other tail parts (water-filling), which keeps
        # the tail's mass exp(-s) and the argmax among the kept parts.
        cap = x_top[..., -1] - 1e-6  # [n, N]
        x_tail = np.where(keep > 0, x, -np.inf)
        over = (x_tail.max(axis=-1) > cap).nonzero()
        if over[0].size:
            x[over], log_z[over] = self._water_fill(x_tail[over], cap[over], -s[over], x_top[over])
        out = (x - log_z).astype(np.float32)
        np.put_along_axis(out, idx, (x_top - log_z).astype(np.float32), axis=-1)
        return out

    @staticmethod
    def _water_fill(x_tail: np.ndarray, cap: np.ndarray, log_mass: np.ndarray, x_top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[v, P]`` of tail log-values (-inf off the tail): ``min(cap, lambda * exp(x))`` with ``lambda`` such that
        the tail's exp-sum stays ``exp(log_mass)`` (or every tail part at the cap if that cannot reach it). Returns the
        new rows and their normalisers ``logsumexp(top-K, tail)`` ``[v, 1]``."""
        w = np.exp(x_tail - x_tail.max(axis=-1, keepdims=True))  # 0 off the tail
        u = np.exp(cap - log_mass)[:, None]  # the cap in units of the tail mass
        capped = np.zeros(w.shape, dtype=bool)
        for _ in range(w.shape[1]):  # the capped set only grows: at most P rounds, usually 1-2
            free = np.where(capped, 0.0, w).sum(axis=-1, keepdims=True)
            left = 1.0 - u * capped.sum(axis=-1, keepdims=True)
            lam = np.where(free > 0, np.maximum(left, 0.0) / np.where(free > 0, free, 1.0), 0.0)
            new = (lam * w >= u) & (w > 0)
            if (new == capped).all():
                break
            capped |= new
        with np.errstate(divide="ignore"):
            share = np.where(capped, u, lam * w)  # fraction of the tail mass per part
            x = np.log(share) + log_mass[:, None]
        log_z = logsumexp(np.concatenate([x_top, x], axis=-1))
        return x, log_z

    def error_bound(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(_check_point_logprobs(logprobs), dtype=np.float64)
        order = np.argsort(-lp, axis=-1, kind="stable")
        top = order[..., : self.k]
        d = np.take_along_axis(lp, top[..., :1], axis=-1) - np.take_along_axis(lp, top, axis=-1)
        d_max = self.D0 * math.expm1(254.5 / self.KQ)  # codes below 255 are never clipped
        b = np.where(d <= d_max, (d + self.D0) * math.expm1(0.5 / self.KQ) * (1 + 1e-9) + 1e-12, np.inf)
        bound = np.full(lp.shape, np.inf)
        np.put_along_axis(bound, top, b, axis=-1)
        return bound

    def tail_bound(self, s: np.ndarray) -> np.ndarray:
        """Bound on the decoded tail depth's error ``|s' - s|`` (``s = l_top - logsumexp(tail)``), inf past range."""
        s = np.asarray(s, dtype=np.float64)
        s_max = self.D0 * math.expm1(126.5 / self.KT)
        return np.where(np.abs(s) <= s_max, (np.abs(s) + self.D0) * math.expm1(0.5 / self.KT) * (1 + 1e-9) + 1e-12, np.inf)


def _top_k(lp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries along the last axis, descending, ties by the lower index (the
    order of ``argsort(-lp, kind="stable")[..., :k]``), by k argmax passes."""
    work = np.where(np.isneginf(lp), np.finfo(np.float64).min, lp)  # original -inf ranks above taken entries
    idx = np.empty((*lp.shape[:-1], k), dtype=np.int64)
    for j in range(k):
        a = np.argmax(work, axis=-1)[..., None]  # the first maximum: the lowest index among ties
        idx[..., j : j + 1] = a
        np.put_along_axis(work, a, -np.inf, axis=-1)
    return idx, np.take_along_axis(lp, idx, axis=-1)


DEFAULT_SEG_CODEC = "ptopk:4"


def point_codec_names() -> list[str]:
    """Codecs a partseg store takes: ``ptopk:K`` and every classification codec applied per point."""
    return sorted(["ptopk", *_REGISTRY])


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


def point_decoded_error_bound(codec: PointCodec, logprobs: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """``decoded_error_bound`` for ``[n, N, P]`` (every point is a row)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    shape = lp.shape

    class _Rows:
        @staticmethod
        def error_bound(rows: np.ndarray) -> np.ndarray:
            return codec.error_bound(rows.reshape(shape)).reshape(rows.shape)

    return decoded_error_bound(_Rows(), lp.reshape(-1, shape[-1]), np.asarray(decoded).reshape(-1, shape[-1])).reshape(shape)  # type: ignore[arg-type]


def point_replay_check(codec: PointCodec, reference: np.ndarray, decoded: np.ndarray, slack: float = 1e-3) -> dict:
    """Compare decoded per-point outputs with a fresh teacher run on the replayed views (``[n, N, P]`` each).

    Dense codecs: every entry within ``point_decoded_error_bound + slack`` (entries without a bound are skipped).
    ``ptopk:K``: on the points whose top-K part set is the same in both (near-ties may swap; reported as
    ``topk_agreement``), the gaps ``l[t_1] - l[t_j]`` of the top-K parts and the tail depth
    ``l[t_1] - logsumexp(tail)`` within their codes' bounds + ``slack``. ``slack`` covers float rounding between the
    recording and the replay (other batch composition, another device).

    Returns ``{"ok", "worst_excess", "max_abs_error", "argmax_agreement", "topk_agreement"}``; ``worst_excess`` is
    the largest error minus its bound (<= 0 when ``ok``), ``max_abs_error`` the largest bounded difference.
    """
    ref = np.asarray(reference, dtype=np.float64)
    dec = np.asarray(decoded, dtype=np.float64)
    if ref.shape != dec.shape or ref.ndim != 3:
        raise ValueError(f"reference {ref.shape} and decoded {dec.shape} must both be [n, points, parts]")
    argmax_agreement = float((ref.argmax(-1) == dec.argmax(-1)).mean()) if ref.size else 1.0
    if not isinstance(codec, PointTopKCodec):
        bound = point_decoded_error_bound(codec, ref, dec) + slack
        fin = np.isfinite(bound)
        err = np.abs(dec - ref)
        worst = float((err - bound)[fin].max()) if fin.any() else 0.0
        return {"ok": worst <= 0.0, "worst_excess": worst, "max_abs_error": float(err[fin].max()) if fin.any() else 0.0,
                "argmax_agreement": argmax_agreement, "topk_agreement": 1.0}
    k = codec.k
    top_ref = _top_k(ref, k)[0]
    top_dec = _top_k(dec, k)[0]
    same = (np.sort(top_ref, axis=-1) == np.sort(top_dec, axis=-1)).all(axis=-1)  # [n, N]
    b0 = codec.D0 * math.expm1(0.5 / codec.KQ) * (1 + 1e-9)  # the bound at d = 0 (the top part's own error)
    ref_top = np.take_along_axis(ref, top_ref, axis=-1)
    dec_top = np.take_along_axis(dec, top_ref, axis=-1)
    d_ref = ref_top[..., :1] - ref_top
    d_dec = dec_top[..., :1] - dec_top
    gap_err = np.abs(d_dec - d_ref)
    gap_bound = (d_ref + codec.D0) * math.expm1(0.5 / codec.KQ) * (1 + 1e-9) + b0 + slack
    in_tail = np.ones(ref.shape, dtype=bool)
    np.put_along_axis(in_tail, top_ref, False, axis=-1)
    with np.errstate(invalid="ignore"):
        s_ref = ref_top[..., 0] - logsumexp(np.where(in_tail, ref, -np.inf))[..., 0]
        s_dec = dec_top[..., 0] - logsumexp(np.where(in_tail, dec, -np.inf))[..., 0]
    tail_err = np.abs(s_dec - s_ref)
    tail_bound = codec.tail_bound(s_ref) + b0 + slack
    checks_err = np.concatenate([gap_err[same].ravel(), tail_err[same].ravel()])
    checks_bound = np.concatenate([gap_bound[same].ravel(), tail_bound[same].ravel()])
    fin = np.isfinite(checks_bound) & np.isfinite(checks_err)
    worst = float((checks_err - checks_bound)[fin].max()) if fin.any() else 0.0
    return {"ok": worst <= 0.0, "worst_excess": worst,
            "max_abs_error": float(gap_err[same].max()) if same.any() else 0.0,
            "argmax_agreement": argmax_agreement, "topk_agreement": float(same.mean()) if same.size else 1.0}


# ---------------------------------------------------------------------------------------- teacher features
PROJECTION_STREAM = 0x70726F6A65637421  # "project!"


def projection_matrix(seed: int, in_dim: int, out_dim: int) -> np.ndarray:
    """The fixed random projection ``[in_dim, out_dim]`` float32 a partseg store applies to teacher features.

    Regenerated from ``(seed, in_dim, out_dim)`` (never stored): ``base = splitmix64(uint64(seed) ^ PROJECTION_STREAM)``,
    ``u_k = (splitmix64(base + k) >> 11) 2^-53`` for ``k = 0 .. 2 in_dim out_dim - 1``; Box-Muller
    ``z_j = sqrt(-2 ln(1 - u_{2j})) cos(2 pi u_{2j+1})`` in float64, row-major ``[in_dim, out_dim]``;
    ``W = float32(z / sqrt(out_dim))`` (Johnson-Lindenstrauss scaling: inner products are kept in expectation).
    """
    from ..augment import _splitmix64

    if in_dim < 1 or out_dim < 1:
        raise KdpcError(f"projection dimensions must be positive, got {in_dim} -> {out_dim}")
    base = _splitmix64(np.asarray([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) ^ np.uint64(PROJECTION_STREAM))
    with np.errstate(over="ignore"):
        h = _splitmix64(base + np.arange(2 * in_dim * out_dim, dtype=np.uint64))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    z = np.sqrt(-2.0 * np.log1p(-u[0::2])) * np.cos(2.0 * math.pi * u[1::2])
    return (z.reshape(in_dim, out_dim) / math.sqrt(out_dim)).astype(np.float32)


# ---------------------------------------------------------------------------------- synthetic seg teacher
SHAPENETPART_PARTS = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)  # parts per category, 50 in all


def realistic_seg_logprobs(
    num_samples: int, num_views: int, num_points: int = 2048, seed: int = 0, *,
    category_parts: tuple[int, ...] = SHAPENETPART_PARTS, feature_dim: int = 32, num_anchors: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Synthetic per-point teacher outputs that look like a trained, category-conditioned part segmenter's,
    VIEW-MAJOR ``[num_views * num_samples, num_points, P]`` float32 (P = sum(category_parts), 50 by default).

    Model: each sample has a category and one centre per part of it in the unit cube; a view is ``num_points``
    uniform points; in-category logits are ``-beta (|x - c_j|^2 - min_j |x - c_j|^2) + 0.3 noise`` with a per-sample
    sharpness ``beta`` log-uniform in [4, 30] (confident inside parts, unsure at their borders); each other part sits
    ``U(6, 20)`` nats below, varying smoothly over space (a random linear ramp of ~2 nats) with 0.5 nats noise per
    point. Per-point p_top quartiles ~0.84 / 0.94 / 0.98. With ``num_anchors`` also returns features
    ``[R, num_anchors, feature_dim]`` (a smooth random function of position and part, as after a projection).
    Returns ``(logprobs, categories [num_samples], features or None)``.
    """
    rng = np.random.default_rng(seed)
    num_parts = int(sum(category_parts))
    offsets = np.concatenate([[0], np.cumsum(category_parts)[:-1]]).astype(int)
    cats = rng.integers(0, len(category_parts), num_samples)
    out = np.empty((num_views * num_samples, num_points, num_parts), dtype=np.float32)
    feats = np.empty((num_views * num_samples, num_anchors, feature_dim), dtype=np.float32) if num_anchors else None
    part_emb = rng.standard_normal((num_parts, feature_dim))
    pos_emb = rng.standard_normal((3, feature_dim)) * 0.5
    per_sample = []
    for s in range(num_samples):
        k = category_parts[cats[s]]
        per_sample.append((k, rng.uniform(-1, 1, (k, 3)), math.exp(rng.uniform(math.log(4.0), math.log(30.0))),
                           rng.uniform(6.0, 20.0, num_parts), rng.standard_normal((num_parts, 3)) * 2.0))
    for v in range(num_views):
        for s in range(num_samples):
            k, centres, beta, low, ramp = per_sample[s]
            x = rng.uniform(-1, 1, (num_points, 3))
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
            z = -(low[None] + x @ ramp.T + 0.5 * rng.standard_normal((num_points, num_parts)))
            o = offsets[cats[s]]
            z[:, o : o + k] = -beta * (d2 - d2.min(1, keepdims=True)) + 0.3 * rng.standard_normal((num_points, k))
            r = v * num_samples + s
            out[r] = log_softmax(z)
            if feats is not None:
                a = np.sort(rng.choice(num_points, num_anchors, replace=False))
                p = np.exp(z[a] - z[a].max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                f = p @ part_emb + np.tanh(x[a] @ pos_emb) + 0.1 * rng.standard_normal((num_anchors, feature_dim))
                feats[r] = f
    return out, cats, feats

"""Per-point codecs for part-segmentation records: log-probabilities ``[n, N, P]`` (N points of the view, P parts)
<-> arrays whose first axis is the record axis. ``RowwisePointCodec`` reuses any classification codec on the
flattened rows ``[n * N, P]``; ``PointTopKCodec`` (``ptopk:K``) is the compact one made for this: see
docs/record-format.md section 8."""

from __future__ import annotations

import copy
import math

import numpy as np

from ...errors import KdpcError
from .base import ArraysSpec, OutputCodec, index_problems
from .classes import Codec, TopKCodec, decoded_error_bound
from .numerics import log_softmax, logsumexp


def _check_point_logprobs(logprobs: np.ndarray, num_points: int | None = None, num_classes: int | None = None) -> np.ndarray:
    x = np.asarray(logprobs)
    if x.ndim != 3:
        raise ValueError(f"per-point teacher output must be [n, points, parts], got shape {x.shape}")
    if num_points is not None and x.shape[1] != num_points:
        raise ValueError(f"per-point teacher output has {x.shape[1]} points, the store has {num_points}")
    if num_classes is not None and x.shape[2] != num_classes:
        raise ValueError(f"per-point teacher output has {x.shape[2]} parts, the store has {num_classes}")
    return x



class PointCodec(OutputCodec):
    """Per-point codec: ``encode([n, N, P]) -> arrays``, ``decode(arrays) -> float32 [n, N, P]`` (``logsumexp == 0``
    per point). ``arrays(P)`` gives each array's per-record tail shape and dtype (after the record axis);
    ``point_arrays()`` names those with a point axis first (the others hold one row per record).

    Ragged views (semseg stores): ``encode_ragged(rows, counts)`` encodes views of ``counts[i]`` points whose rows
    ``[sum counts, P]`` are concatenated, each view on its own (per-record arrays see only its points);
    ``decode_view`` decodes one of them."""

    num_classes: int
    num_points: int

    def point_arrays(self) -> frozenset[str]:
        return frozenset(self.arrays(self.num_classes))

    def resized(self, num_points: int) -> "PointCodec":
        """The same codec for views of ``num_points`` points."""
        other = copy.copy(self)
        other.num_points = int(num_points)
        return other

    def encode_ragged(self, rows: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
        """``rows`` ``[sum(counts), P]`` -> per-point arrays ``[sum(counts), *tail]`` and per-record ``[n, *tail]``."""
        rows = np.asarray(rows)
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        if rows.ndim != 2 or rows.shape[0] != int(counts.sum()) or (counts < 1).any():
            raise ValueError(f"ragged per-point output must be [sum(counts), parts] with every count >= 1, got "
                             f"{rows.shape} for counts summing to {int(counts.sum())}")
        per_point = self.point_arrays()
        parts: dict[str, list[np.ndarray]] = {}
        for lo, m in zip(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts):
            for name, values in self.resized(int(m)).encode(rows[None, lo : lo + m]).items():
                parts.setdefault(name, []).append(values[0] if name in per_point else values)
        return {name: np.concatenate(values) for name, values in parts.items()}

    def decode_view(self, point_rows: dict[str, np.ndarray], record_rows: dict[str, np.ndarray]) -> np.ndarray:
        """float32 ``[m, P]`` of one view: its per-point arrays' rows ``[m, *tail]`` and per-record rows ``[*tail]``."""
        m = int(next(iter(point_rows.values())).shape[0])
        arrays = {**{k: np.asarray(v)[None] for k, v in point_rows.items()},
                  **{k: np.asarray(v)[None] for k, v in record_rows.items()}}
        return self.resized(m).decode(arrays)[0]


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

    def point_arrays(self) -> frozenset[str]:
        return frozenset({"topk_index", "topk_q", "tail_q"})

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
        top, top_lp = top_k(lp, self.k)  # ties by part index, as a stable descending sort
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

    def problems(self, arrays: dict[str, np.ndarray], num_classes: int) -> list[str]:
        return index_problems(arrays["topk_index"], num_classes)

    def tail_bound(self, s: np.ndarray) -> np.ndarray:
        """Bound on the decoded tail depth's error ``|s' - s|`` (``s = l_top - logsumexp(tail)``), inf past range."""
        s = np.asarray(s, dtype=np.float64)
        s_max = self.D0 * math.expm1(126.5 / self.KT)
        return np.where(np.abs(s) <= s_max, (np.abs(s) + self.D0) * math.expm1(0.5 / self.KT) * (1 + 1e-9) + 1e-12, np.inf)


def top_k(lp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries along the last axis, descending, ties by the lower index (the
    order of ``argsort(-lp, kind="stable")[..., :k]``), by k argmax passes."""
    work = np.where(np.isneginf(lp), np.finfo(np.float64).min, lp)  # original -inf ranks above taken entries
    idx = np.empty((*lp.shape[:-1], k), dtype=np.int64)
    for j in range(k):
        a = np.argmax(work, axis=-1)[..., None]  # the first maximum: the lowest index among ties
        idx[..., j : j + 1] = a
        np.put_along_axis(work, a, -np.inf, axis=-1)
    return idx, np.take_along_axis(lp, idx, axis=-1)




def point_decoded_error_bound(codec: PointCodec, logprobs: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """``decoded_error_bound`` for ``[n, N, P]`` (every point is a row)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    shape = lp.shape

    class _Rows:
        @staticmethod
        def error_bound(rows: np.ndarray) -> np.ndarray:
            return codec.error_bound(rows.reshape(shape)).reshape(rows.shape)

    return decoded_error_bound(_Rows(), lp.reshape(-1, shape[-1]), np.asarray(decoded).reshape(-1, shape[-1])).reshape(shape)  # type: ignore[arg-type]


"""Loss functions for offline distillation of point-cloud students.

Every function here is pure (no state, no module buffers) apart from :class:`FeatureProjector`, which is the
student-side learned projector that feature losses are applied after. Conventions shared by all of them:

* The class (or feature) dimension is the **last** one. ``[B, C]`` classification logits and ``[B, N, P]``
  per-point logits are both accepted where noted; a "record" is one row of the flattened ``[-1, C]`` view.
* Arithmetic is float32 with autocast disabled, whatever the input dtype and the caller's autocast state, so the
  losses are the same under ``torch.autocast`` on CPU or CUDA (half-precision inputs are upcast first).
* Teacher quantities (recorded log-probabilities, teacher features) and self-targets are treated as constants:
  they are detached inside, so no gradient ever reaches them.
* Results are scalar means unless stated. When nothing is valid (every target ignored, every point masked) the
  loss is an exact zero that is still attached to the student's graph, so ``backward()`` works and gives zeros.
* ``KL(p || q)`` is the per-row ``sum_c p_c (log p_c - log q_c)``; classes with ``p_c == 0`` contribute 0 even
  when ``log p_c == -inf`` (a store may hold ``-inf`` for impossible classes).

The formulas, defaults and sources are written out in ``docs/method.md``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KdpcError

__all__ = [
    "check_temperature",
    "label_smoothing_ce",
    "kd_loss",
    "standardized_kd_loss",
    "answer_relation_loss",
    "dist_loss",
    "nwsd_loss",
    "combine",
    "pointwise_kd_loss",
    "affinity_alignment_loss",
    "cross_sample_relation_loss",
    "FeatureProjector",
]

AFFINITY_MODES = ("mse", "kl")


# --------------------------------------------------------------------------------------------------- helpers


def _autocast_off(t: Tensor) -> torch.autocast:
    """A context that disables autocast for ``t``'s device type, so the enclosed maths runs in float32."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """``float(temperature)`` if it is a finite number > 0, else a ``KdpcError`` naming ``name``."""
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise KdpcError(f"{name} must be a finite number > 0, got {temperature!r}")
    return t


def _check_same_shape(student: Tensor, other: Tensor, what: str) -> None:
    if student.shape != other.shape:
        raise KdpcError(
            f"{what} has shape {tuple(other.shape)} but the student's output has shape {tuple(student.shape)}; "
            "check that the store was recorded for the same task and number of classes"
        )


def _kl_rows(target_logp: Tensor, student_logp: Tensor) -> Tensor:
    """``KL(target || student)`` for each row (last dim reduced), with ``0 * log 0 = 0``.

    ``target_logp`` must be a constant (detached); ``student_logp`` carries the gradient.
    """
    p = target_logp.exp()
    terms = p * (target_logp - student_logp)
    # Where p == 0 (target log-prob -inf) the product is 0 * inf = nan; the limit is 0. The gradient of the kept
    # branch w.r.t. student_logp is -p, which is 0 there, so no nan reaches the student either.
    terms = torch.where(p > 0, terms, torch.zeros_like(terms))
    return terms.sum(dim=-1)


def _zero_like_graph(t: Tensor) -> Tensor:
    """An exact float32 zero scalar attached to ``t``'s graph (so ``backward`` works when nothing is valid)."""
    return t.float().sum() * 0.0


def _tempered_kl(student_logits: Tensor, target_logprobs: Tensor, t: float) -> Tensor:
    """``KL(softmax(target / T) || softmax(student / T))`` per record (row of the flat ``[-1, C]`` view).

    The target is detached. Call with autocast off.
    """
    num_classes = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, num_classes) / t, dim=-1)
    q = F.log_softmax(target_logprobs.detach().float().reshape(-1, num_classes) / t, dim=-1)
    return _kl_rows(q, s)


def _per_record(values: Tensor, logits: Tensor, what: str) -> Tensor:
    """``values`` (one per record: ``logits.shape[:-1]``) flattened to match the rows of the ``[-1, C]`` view."""
    if values.shape != logits.shape[:-1]:
        raise KdpcError(f"{what} has shape {tuple(values.shape)}, expected {tuple(logits.shape[:-1])}")
    return values.reshape(-1)


# ------------------------------------------------------------------------------------------- classification


def label_smoothing_ce(
    logits: Tensor,
    target: Tensor,
    smoothing: float = 0.1,
    ignore_index: int = -100,
    weight: Tensor | None = None,
) -> Tensor:
    """Cross-entropy against label-smoothed one-hot targets, averaged over the non-ignored targets.

    The smoothed target puts ``1 - smoothing + smoothing / C`` on the true class and ``smoothing / C`` on every
    other class (the convention of ``torch.nn.functional.cross_entropy(label_smoothing=...)``), so per row::

        loss = -(1 - smoothing) * log p[y] - (smoothing / C) * sum_c log p[c]

    Args:
        logits: ``[B, C]`` or ``[B, N, C]`` (class dimension last).
        target: ``[B]`` or ``[B, N]`` integer class ids; entries equal to ``ignore_index`` are left out of the
            mean. Other out-of-range ids raise.
        smoothing: in ``[0, 1)``; 0 is plain cross-entropy.
        ignore_index: target value to skip.
        weight: optional per-target weight with ``target``'s shape: the mean becomes ``sum_i w_i loss_i / n`` over
            the ``n`` valid targets (mix views: ``(1 - lambda)`` for the view's own label, ``lambda`` for its
            partner's, in two calls that add up).

    Returns:
        Scalar mean over valid targets (0, attached to the graph, when none is valid).
    """
    eps = float(smoothing)
    if not 0.0 <= eps < 1.0:
        raise KdpcError(f"label smoothing must be in [0, 1), got {smoothing!r}")
    if logits.shape[:-1] != target.shape:
        raise KdpcError(
            f"logits {tuple(logits.shape)} and targets {tuple(target.shape)} do not match: "
            "logits must be the target shape plus a trailing class dimension"
        )
    num_classes = logits.shape[-1]
    with _autocast_off(logits):
        logp = F.log_softmax(logits.float().reshape(-1, num_classes), dim=-1)
        y = target.reshape(-1).long()
        valid = y != ignore_index
        if not bool(valid.any()):
            return _zero_like_graph(logits)
        logp = logp[valid]
        y = y[valid]
        if bool((y < 0).any()) or bool((y >= num_classes).any()):
            raise KdpcError(f"target class ids must lie in [0, {num_classes}) or equal ignore_index={ignore_index}")
        nll = -logp.gather(1, y[:, None]).squeeze(1)
        uniform = -logp.mean(dim=-1)  # = -(1/C) sum_c log p_c
        per_target = (1.0 - eps) * nll + eps * uniform
        if weight is not None:
            if weight.shape != target.shape:
                raise KdpcError(f"ce weight has shape {tuple(weight.shape)}, expected {tuple(target.shape)}")
            per_target = per_target * weight.detach().float().reshape(-1)[valid]
        return per_target.mean()


def kd_loss(
    student_logits: Tensor,
    teacher_logprobs: Tensor,
    temperature: float,
    weight: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Hinton distillation loss ``T^2 * KL(p_t^T || p_s^T)``, mean over records.

    ``p_t^T = softmax(teacher_logprobs / T)`` and ``p_s^T = softmax(student_logits / T)``. The teacher input is
    log-probabilities at ``T = 1`` as decoded from the store; since a per-row additive constant does not change a
    softmax, this is exactly the teacher's tempered distribution.

    Args:
        student_logits: ``[B, C]`` classification or ``[B, N, P]`` per-point logits (any leading shape is
            flattened to records ``[-1, C]``).
        teacher_logprobs: same shape as ``student_logits``; detached inside. Any float dtype.
        temperature: ``T > 0``.
        weight: optional per-record weight with ``student_logits.shape[:-1]``. Weighted records contribute
            ``w_i * KL_i``; the denominator stays the number of records (a weight of 0 drops a record's
            contribution without renormalising the others).
        mask: optional per-record bool with ``student_logits.shape[:-1]``, ``True`` for records that count (e.g.
            not padding). Masked records leave the mean: the denominator is the number of valid records.

    Returns:
        Scalar ``T^2 * sum_i w_i KL_i / R`` where ``R`` is the number of valid records (``w_i = 1`` without
        weights); 0, attached to the graph, when no record is valid.
    """
    t = check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logprobs, "teacher_logprobs")
    with _autocast_off(student_logits):
        kl = _tempered_kl(student_logits, teacher_logprobs, t)
        if weight is not None:
            kl = kl * _per_record(weight, student_logits, "kd weight").detach().float()
        if mask is not None:
            kl = kl[_per_record(mask, student_logits, "kd mask").to(device=kl.device, dtype=torch.bool)]
        if kl.numel() == 0:
            return _zero_like_graph(student_logits)
        return (t * t) * kl.mean()


def _standardized(logits: Tensor) -> Tensor:
    """Each row z-scored: shift- and scale-free logits. ``-inf`` (an impossible class) is replaced by the row's
    smallest finite value first, so the statistics stay finite."""
    finite = torch.isfinite(logits)
    floor = torch.where(finite, logits, torch.full_like(logits, float("inf"))).amin(dim=-1, keepdim=True)
    logits = torch.where(finite, logits, floor)
    return (logits - logits.mean(dim=-1, keepdim=True)) / (logits.std(dim=-1, keepdim=True) + 1e-7)


def standardized_kd_loss(
    student_logits: Tensor,
    teacher_logprobs: Tensor,
    temperature: float,
) -> Tensor:
    """Logit-standardised KD (Sun et al., *Logit Standardization in Knowledge Distillation*, CVPR 2024):
    ``T^2 * KL(softmax(z(teacher) / T) || softmax(z(student) / T))`` with ``z`` the per-record z-score.

    The student matches the teacher's logits up to a per-record shift *and scale*: a confident teacher no longer
    asks a small student for its large logit range, only for the shape of its answer. The stored log-probabilities
    differ from the teacher's logits by a per-record constant, which the z-score removes, so the loss is the
    paper's exactly.
    """
    t = check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logprobs, "teacher_logprobs")
    with _autocast_off(student_logits):
        num_classes = student_logits.shape[-1]
        s = _standardized(student_logits.float().reshape(-1, num_classes))
        q = _standardized(teacher_logprobs.detach().float().reshape(-1, num_classes))
        if s.shape[0] == 0:
            return _zero_like_graph(student_logits)
        return (t * t) * _tempered_kl(s, q, t).mean()


def answer_relation_loss(
    student_features: Tensor,
    teacher_logprobs: Tensor,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Batch relations of the teacher's answers, asked of the student's embedding (classification).

    ``mean_ij (rho(f_i, f_j) - rho(z_i, z_j))^2`` over the batch's records ``i, j``: ``rho`` is the Pearson
    correlation, ``f`` the student's global features (``forward_features``, ``[B, Ds]``) and ``z`` the teacher's
    recorded log-probabilities (``[B, C]``, i.e. its logits up to a per-record constant). Two shapes the teacher
    answers alike must be embedded alike by the student, and two it tells apart, apart: the similarity-preserving
    loss of Tung & Mori (ICCV 2019) with the teacher's side taken from the only thing a classification store
    records. Both sides are centred and normalised per record, so neither the student's feature scale nor the
    teacher's confidence matters. ``gather`` (under data parallelism) relates the records of the global batch.
    """
    if student_features.ndim != 2 or teacher_logprobs.ndim != 2 or len(student_features) != len(teacher_logprobs):
        raise KdpcError(f"answer relations need [B, D] student features and [B, C] teacher log-probs, got "
                        f"{tuple(student_features.shape)} and {tuple(teacher_logprobs.shape)}")
    with _autocast_off(student_features):
        f = student_features.float()
        f = F.normalize(f - f.mean(dim=-1, keepdim=True), dim=-1)
        z = F.normalize(_standardized(teacher_logprobs.detach().float()), dim=-1)
        if gather is not None:
            f, z = gather(f), gather(z)
        if f.shape[0] < 2:
            return _zero_like_graph(student_features)
        return (f @ f.T - z @ z.T).pow(2).mean()


def _pearson_distance(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """``1 - Pearson(a, b)`` along ``dim``; a constant vector correlates 0 with anything (no NaN)."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return 1.0 - (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + 1e-8)


def dist_loss(
    student_logits: Tensor,
    teacher_logprobs: Tensor,
    temperature: float,
    inter_weight: float = 1.0,
    intra_weight: float = 1.0,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """DIST (Huang et al., *Knowledge Distillation from A Stronger Teacher*, NeurIPS 2022): match the teacher's
    tempered probabilities up to scale and shift, by Pearson correlation, instead of exactly by KL.

    ``T^2 * (inter_weight * mean_i d(p_s[i, :], p_t[i, :]) + intra_weight * mean_c d(p_s[:, c], p_t[:, c]))`` with
    ``d = 1 - Pearson``: the *inter-class* term asks each record's class ranking to follow the teacher's, the
    *intra-class* term each class's scores across the batch's records. A student far weaker than its teacher
    cannot reproduce the teacher's exact confidences; preserving only their relations is what it can learn.

    Args:
        student_logits: ``[B, C]`` (records are rows of the flattened ``[-1, C]`` view).
        teacher_logprobs: same shape; log-probabilities at ``T = 1``; detached inside.
        temperature: ``T > 0``.
        gather: under data parallelism, concatenates a tensor's rows over the ranks (differentiably), so the
            intra-class term relates the records of the global batch, as one process would.
    """
    t = check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logprobs, "teacher_logprobs")
    with _autocast_off(student_logits):
        num_classes = student_logits.shape[-1]
        p_s = F.softmax(student_logits.float().reshape(-1, num_classes) / t, dim=-1)
        p_t = F.softmax(teacher_logprobs.detach().float().reshape(-1, num_classes) / t, dim=-1)
        if p_s.shape[0] == 0:
            return _zero_like_graph(student_logits)
        inter = _pearson_distance(p_s, p_t, dim=1).mean()
        if gather is not None:
            p_s, p_t = gather(p_s), gather(p_t)
        intra = _pearson_distance(p_s, p_t, dim=0).mean() if p_s.shape[0] > 1 else inter.new_zeros(())
        return (t * t) * (inter_weight * inter + intra_weight * intra)


def nwsd_loss(
    student_logits: Tensor,
    self_target_logprobs: Tensor,
    temperature: float,
    max_kl: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Negative-weight self-distillation term: ``T^2 * mean_i min(KL(q_self^T || p_s^T)_i, max_kl)``.

    kdpc's definition (the seed paper does not publish its formula; see ``docs/method.md``). The trainer multiplies
    this by a signed weight ``beta`` that is negative by default, so the student is pushed *away* from its own
    self-target ``q_self`` (an EMA copy, its previous prediction for the record, or a re-tempered copy of its
    current output). ``q_self`` is detached: only the student's live prediction moves. The clamp guards against
    running away when maximised: a record whose KL has reached ``max_kl`` contributes the constant ``max_kl`` and a
    gradient of exactly zero.

    Args:
        student_logits: ``[B, C]`` (or ``[B, N, C]``; records are rows of the flattened ``[-1, C]`` view).
        self_target_logprobs: same shape; log-probabilities (or logits: a per-row constant is irrelevant) of the
            self-target at ``T = 1``; detached inside.
        temperature: ``T > 0`` applied to both sides, as in :func:`kd_loss`.
        max_kl: cap on each record's (unscaled, at temperature ``T``) KL, in nats; ``> 0``.
        mask: optional bool with ``student_logits.shape[:-1]``; ``False`` records (e.g. records the past-prediction
            bank has not seen yet) are left out of the mean and of the capped fraction.

    Returns:
        ``(loss, frac_capped)``: the scalar loss (0, attached to the graph, when no record is valid), and a
        detached 0-dim float tensor, the fraction of valid records at the cap (0 when none is valid). Call
        ``.item()`` on it only when logging, to avoid a device sync every step.
    """
    t = check_temperature(temperature)
    cap = float(max_kl)
    if not (math.isfinite(cap) and cap > 0):
        raise KdpcError(f"nwsd max_kl must be a finite number > 0, got {max_kl!r}")
    _check_same_shape(student_logits, self_target_logprobs, "self_target_logprobs")
    with _autocast_off(student_logits):
        kl = _tempered_kl(student_logits, self_target_logprobs, t)
        if mask is not None:
            kl = kl[_per_record(mask, student_logits, "nwsd mask").to(device=kl.device, dtype=torch.bool)]
        if kl.numel() == 0:
            return _zero_like_graph(student_logits), torch.zeros((), device=student_logits.device)
        capped = kl >= cap
        # torch.where (not clamp/minimum) so the gradient at and beyond the cap is exactly zero.
        kl = torch.where(capped, torch.full_like(kl, cap), kl)
        return (t * t) * kl.mean(), capped.float().mean().detach()


def combine(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of named scalar loss terms, plus the values to log.

    ``total = sum_k weights[k] * terms[k]``. Every term needs a weight (a missing one raises ``KdpcError``); weights
    with no matching term are ignored, and terms whose weight is exactly 0 are left out of the sum (so a nan or
    inf in a disabled term cannot poison the total). Weights may be negative (NWSD's ``beta``).

    Returns:
        ``(total, logs)`` where ``logs`` maps ``"loss/<name>"`` to the **unweighted** value of each term and
        ``"loss/total"`` to the weighted total, as Python floats (one device sync for all of them).
    """
    if not terms:
        raise KdpcError("combine() needs at least one loss term")
    missing = [k for k in terms if k not in weights]
    if missing:
        raise KdpcError(f"no weight given for loss term(s) {missing}; weights have {sorted(weights)}")
    names = list(terms)
    for k in names:
        if terms[k].numel() != 1:
            raise KdpcError(f"loss term {k!r} is not a scalar (shape {tuple(terms[k].shape)})")
    total: Tensor | None = None
    for k in names:
        w = float(weights[k])
        if w == 0.0:
            continue
        contrib = w * terms[k].float().reshape(())
        total = contrib if total is None else total + contrib
    if total is None:  # every weight is zero: a zero that still backpropagates (to zero grads)
        total = sum(terms[k].float().reshape(()) * 0.0 for k in names)  # type: ignore[assignment]
    assert total is not None
    values = torch.stack([terms[k].detach().float().reshape(()) for k in names] + [total.detach()]).tolist()
    logs = {f"loss/{k}": v for k, v in zip(names, values[:-1])}
    logs["loss/total"] = values[-1]
    return total, logs


# ------------------------------------------------------------------------------------------- segmentation


def pointwise_kd_loss(
    student_logits: Tensor,
    teacher_logprobs: Tensor,
    temperature: float = 2.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Per-point distillation (SRKD's semantic term): :func:`kd_loss` over the points of ``[B, N, P]`` logits.

    ``T^2 * mean over valid points of KL(p_t^T || p_s^T)``; ``mask`` is an optional ``[B, N]`` bool, ``True`` for
    points that count (``None``: all points). Only the default temperature (SRKD's 2.0) differs from ``kd_loss``.
    """
    return kd_loss(student_logits, teacher_logprobs, temperature, mask=mask)


def _check_feats(student_feats: Tensor, teacher_feats: Tensor) -> None:
    if student_feats.dim() != 3 or teacher_feats.dim() != 3:
        raise KdpcError(
            f"features must be [B, M, D]; got student {tuple(student_feats.shape)}, teacher {tuple(teacher_feats.shape)}"
        )
    if student_feats.shape[:2] != teacher_feats.shape[:2]:
        raise KdpcError(
            f"student features {tuple(student_feats.shape)} and teacher features {tuple(teacher_feats.shape)} "
            "must agree on [B, M] (same samples, same points)"
        )


def _anchor_mask(valid: Tensor | None, student_feats: Tensor) -> Tensor | None:
    """``valid`` as a bool ``[B, M]`` on the features' device, or None when every anchor counts."""
    if valid is None:
        return None
    if valid.shape != student_feats.shape[:2]:
        raise KdpcError(f"anchor mask has shape {tuple(valid.shape)}, expected {tuple(student_feats.shape[:2])}")
    return None if bool(valid.all()) else valid.to(device=student_feats.device, dtype=torch.bool)


def _unit_rows(student_feats: Tensor, teacher_feats: Tensor) -> tuple[Tensor, Tensor]:
    """Both feature sets in float32 with L2-normalised rows; the teacher's detached."""
    fs = F.normalize(student_feats.float(), p=2, dim=-1)
    ft = F.normalize(teacher_feats.detach().float(), p=2, dim=-1)
    return fs, ft


def _row_logprobs(similarity: Tensor, t: float, hidden_columns: Tensor | None = None) -> Tensor:
    """``log_softmax(similarity / T)`` over the last dim, leaving out the columns where ``hidden_columns``."""
    scaled = similarity / t
    if hidden_columns is not None:
        scaled = scaled.masked_fill(hidden_columns, float("-inf"))
    return F.log_softmax(scaled, dim=-1)


def affinity_alignment_loss(
    student_feats: Tensor,
    teacher_feats: Tensor,
    mode: str = "mse",
    temperature: float = 1.0,
    valid: Tensor | None = None,
) -> Tensor:
    """Align each sample's point-to-point cosine affinity (SRKD's relation-alignment term).

    Per sample, ``A = F_hat F_hat^T`` (``M x M``) where ``F_hat`` is the ``[M, D]`` feature matrix with L2-normalised
    rows. Because only affinities are compared, ``Ds`` (student, usually after :class:`FeatureProjector`) may
    differ from ``Dt``.

    * ``mode="mse"``: ``mean_{b,m,n} (A_s - A_t)^2``; ``temperature`` is unused.
    * ``mode="kl"``: each affinity row is a distribution ``softmax(A[m, :] / T)``;
      ``T^2 * mean_{b,m} KL(teacher row || student row)``.

    With ``valid`` only the valid anchors of each sample count: ``mse`` averages over the pairs ``(m, n)`` with
    both anchors valid; ``kl`` takes the rows of valid anchors, with the softmax over valid columns. This equals
    the loss on the kept anchors alone, and (exactly) the unmasked loss when every anchor is valid.

    Args:
        student_feats: ``[B, M, Ds]``.
        teacher_feats: ``[B, M, Dt]``; detached inside.
        mode: ``"mse"`` or ``"kl"``.
        temperature: ``T > 0`` for ``mode="kl"``.
        valid: optional ``[B, M]`` bool, ``True`` for anchors that count (e.g. not dropped from the input).

    Returns:
        Scalar (0, attached to the graph, when no anchor is valid).

    Memory is ``O(B M^2)``: subsample ``M`` (e.g. a few hundred anchor points) for large clouds.
    """
    if mode not in AFFINITY_MODES:
        raise KdpcError(f"affinity mode must be one of {AFFINITY_MODES}, got {mode!r}")
    t = check_temperature(temperature)
    _check_feats(student_feats, teacher_feats)
    v = _anchor_mask(valid, student_feats)
    with _autocast_off(student_feats):
        fs, ft = _unit_rows(student_feats, teacher_feats)
        a_s = torch.bmm(fs, fs.transpose(1, 2))
        a_t = torch.bmm(ft, ft.transpose(1, 2))
        if v is None:
            if mode == "mse":
                return (a_s - a_t).pow(2).mean()
            return (t * t) * _kl_rows(_row_logprobs(a_t, t), _row_logprobs(a_s, t)).mean()
        pair = v[:, :, None] & v[:, None, :]
        if not bool(pair.any()):
            return _zero_like_graph(student_feats)
        if mode == "mse":
            return (a_s - a_t).pow(2)[pair].mean()
        hidden = ~v[:, None, :].expand_as(a_s)
        return (t * t) * _kl_rows(_row_logprobs(a_t, t, hidden), _row_logprobs(a_s, t, hidden))[v].mean()


def cross_sample_relation_loss(
    student_feats: Tensor,
    teacher_feats: Tensor,
    temperature: float = 2.0,
    valid: Tensor | None = None,
) -> Tensor:
    """Cross-sample relation distillation over every ordered pair of samples (SRKD, after CIRKD's mini-batch loss).

    With L2-normalised rows, for every ordered pair ``(i, j)`` (``i == j`` included) ``S_ij = F_i F_j^T`` is an
    ``M x M`` similarity map; each row becomes ``softmax(S_ij[m, :] / T)`` and the loss is
    ``T^2 * mean_{i,j,m} KL(teacher row || student row)``. Computed for all pairs at once with ``einsum``.

    With ``valid`` only valid anchors count: for every pair ``(i, j)`` the rows of the valid anchors of ``i``,
    softmax over the valid anchors of ``j`` (pairs where ``j`` has none are skipped), mean over all such rows.
    Every anchor valid gives exactly the unmasked loss.

    Args:
        student_feats: ``[B, M, Ds]``.
        teacher_feats: ``[B, M, Dt]``; detached inside.
        temperature: ``T > 0``.
        valid: optional ``[B, M]`` bool, ``True`` for anchors that count.

    Returns:
        Scalar (0, attached to the graph, when no anchor is valid).

    Memory is ``O(B^2 M^2)`` floats per side (B=16, M=256 is 16.8M floats): subsample ``M``.
    """
    t = check_temperature(temperature)
    _check_feats(student_feats, teacher_feats)
    v = _anchor_mask(valid, student_feats)
    with _autocast_off(student_feats):
        fs, ft = _unit_rows(student_feats, teacher_feats)
        s_map = torch.einsum("imd,jnd->ijmn", fs, fs)  # [B, B, M, M]
        t_map = torch.einsum("imd,jnd->ijmn", ft, ft)
        if v is None:
            return (t * t) * _kl_rows(_row_logprobs(t_map, t), _row_logprobs(s_map, t)).mean()
        hidden = ~v[None, :, None, :].expand_as(s_map)  # column n of pair (i, j) is anchor n of sample j
        rows = v[:, None, :].expand(-1, v.shape[0], -1) & v.any(dim=1)[None, :, None]  # [B, B, M]
        if not bool(rows.any()):
            return _zero_like_graph(student_feats)
        # Rows are picked before the KL: a pair whose j has no valid anchor has all-masked (nan) rows.
        s = _row_logprobs(s_map, t, hidden)[rows]
        q = _row_logprobs(t_map, t, hidden)[rows]
        return (t * t) * _kl_rows(q, s).mean()


class FeatureProjector(nn.Module):
    """Learned student-to-teacher feature projector: ``Linear -> BatchNorm -> ReLU -> Linear``.

    Maps per-point features ``[..., Ds]`` (typically ``[B, M, Ds]``) to ``[..., Dt]``. The point-wise Linear is
    the same map as a 1x1 Conv1d; BatchNorm normalises over all leading positions (all samples and points), as
    ``BatchNorm1d`` after a 1x1 conv would. Part of the student during training, discarded afterwards.

    Args:
        in_dim: student feature width ``Ds``.
        out_dim: teacher feature width ``Dt``.
        hidden_dim: width of the hidden layer; defaults to ``out_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0 or (hidden_dim is not None and hidden_dim <= 0):
            raise KdpcError("projector dimensions must be positive")
        hidden = out_dim if hidden_dim is None else hidden_dim
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.fc1 = nn.Linear(in_dim, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise KdpcError(f"projector expects {self.in_dim}-dim features, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        h = self.fc1(x.reshape(-1, self.in_dim))
        h = self.act(self.bn(h))
        return self.fc2(h).reshape(*lead, self.out_dim)

"""Synthetic teachers: log-probabilities that look like a trained network's, with no network. For tests and
benchmarks only (not public API); ``bench/record_size.py`` chose the default codec on ``realistic_logprobs``."""

from __future__ import annotations

import math

import numpy as np

from ..store.codecs import log_softmax


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

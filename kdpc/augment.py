"""Augmentation: shape-level ops that are recorded and replayed, and point-level ops that never are.

Shape-level parameters of a view are a pure function of ``(stream, run_seed, sample, view)`` (a counter-based hash,
no RNG state), quantised to the dtype they are stored in *before* they are applied. Applying them uses only
elementwise float32 arithmetic (no BLAS), so the recorder and the distill loader rebuild bit-identical inputs on
any machine. ``docs/record-format.md`` restates these rules so a store can be replayed without kdpc.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from .errors import KdpcError
from .hashing import splitmix64, unit_interval

ROTATIONS = ("none", "up", "so3")
# Independent parameter streams. ``kdpc train`` draws its epoch views from "train", ``kdpc record`` (and the online
# KD baseline, which must see the recorded views) from "record": whatever seeds the two runs use, a recorded view is
# never one the teacher was fitted on, so the teacher's answer on it carries dark knowledge, not a memorised label.
VIEW_STREAMS: dict[str, int] = {"train": 0x747261696E5F7631, "record": 0x7265636F72645F31}  # "train_v1", "record_1"


@dataclass(frozen=True)
class AugmentConfig:
    """Shape-level augmentation: anisotropic scale, translation, optional rotation, seeded point subset, and
    optionally *mix views*: with probability ``mix`` a view takes a fraction ``U(0, mix_max]`` of its points from
    another (seeded) sample of the split, as PointCutMix does, so the teacher is asked about inputs between two
    shapes - the most informative ones to record (function matching, Beyer et al. 2022)."""

    scale_low: float = 2.0 / 3.0
    scale_high: float = 3.0 / 2.0
    translate: float = 0.2
    rotation: str = "none"  # none | up (about up_axis) | so3
    up_axis: int = 1  # ModelNet/ShapeNet h5 files are y-up
    mix: float = 0.0  # probability that a view is a mix view (0: none, and the store format of earlier versions)
    mix_max: float = 0.5  # the largest fraction of a mix view's points that come from the partner sample

    def __post_init__(self) -> None:
        if not 0.0 <= self.mix <= 1.0:
            raise KdpcError(f"augment mix must lie in [0, 1], got {self.mix!r}")
        if not 0.0 < self.mix_max <= 0.5:
            raise KdpcError(f"augment mix_max must lie in (0, 0.5] (the view's own sample stays the majority), "
                            f"got {self.mix_max!r}")
        if self.rotation not in ROTATIONS:
            raise KdpcError(f"augment rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        if not 0 < self.scale_low <= self.scale_high:
            raise KdpcError("augment scale needs 0 < scale_low <= scale_high")
        if self.translate < 0:
            raise KdpcError("augment translate must be >= 0")
        if self.up_axis not in (0, 1, 2):
            raise KdpcError("augment up_axis must be 0, 1 or 2")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.mix:  # stores without mix views describe their augmentation exactly as before mixing existed
            out.pop("mix")
            out.pop("mix_max")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "AugmentConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise KdpcError(f"unknown augment option(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class ParamSpec:
    """One stored augmentation parameter: its array name, per-record shape and stored dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def param_specs(cfg: AugmentConfig) -> list[ParamSpec]:
    """The parameters a view of ``cfg`` stores, in a fixed order. ``seed`` drives the point subset."""
    specs = [ParamSpec("seed", (), "uint32"), ParamSpec("scale", (3,), "float16"), ParamSpec("translate", (3,), "float16")]
    if cfg.rotation != "none":
        specs.append(ParamSpec("rotation", (3,), "float16"))  # axis-angle vector, radians
    if cfg.mix:
        specs += [ParamSpec("partner", (), "int32"), ParamSpec("mix", (), "float16")]  # 0: not a mix view
    return specs


# --------------------------------------------------------------------------------------------- counter-based hash
def _view_keys(run_seed: int, samples: np.ndarray, views: np.ndarray, stream: str) -> np.ndarray:
    if stream not in VIEW_STREAMS:
        raise KdpcError(f"unknown view stream {stream!r}; known: {', '.join(VIEW_STREAMS)}")
    base = splitmix64(np.asarray([run_seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    base = splitmix64(base ^ np.uint64(VIEW_STREAMS[stream]))
    key = splitmix64(base ^ np.asarray(samples, dtype=np.int64).astype(np.uint64))
    return splitmix64(key ^ (np.asarray(views, dtype=np.int64).astype(np.uint64) << np.uint64(40)))


def _uniform(keys: np.ndarray, lane: int) -> np.ndarray:
    """U[0, 1) float64 for each key, independent per lane (one lane per drawn quantity)."""
    with np.errstate(over="ignore"):
        return unit_interval(splitmix64(keys + np.uint64(lane) * np.uint64(0xD1B54A32D192ED03)))


def draw_params(cfg: AugmentConfig, run_seed: int, samples: np.ndarray, views: np.ndarray, *,
                stream: str, num_samples: int | None = None) -> dict[str, np.ndarray]:
    """Quantised parameters for the views ``(samples[k], views[k])`` of ``stream`` (a key of ``VIEW_STREAMS``);
    depends on nothing else (and, with mix views, on the split's ``num_samples``, which partners are drawn from)."""
    samples = np.asarray(samples, dtype=np.int64).reshape(-1)
    views = np.broadcast_to(np.asarray(views, dtype=np.int64), samples.shape)
    keys = _view_keys(run_seed, samples, views, stream)
    with np.errstate(over="ignore"):
        seed = (splitmix64(keys + np.uint64(7)) >> np.uint64(32)).astype(np.uint32)
    scale = np.stack([cfg.scale_low + (cfg.scale_high - cfg.scale_low) * _uniform(keys, 1 + a) for a in range(3)], 1)
    translate = np.stack([cfg.translate * (2.0 * _uniform(keys, 4 + a) - 1.0) for a in range(3)], 1)
    params = {"seed": seed, "scale": scale.astype(np.float16), "translate": translate.astype(np.float16)}
    if cfg.rotation == "up":
        rotvec = np.zeros((samples.size, 3))
        rotvec[:, cfg.up_axis] = 2.0 * np.pi * _uniform(keys, 7) - np.pi
        params["rotation"] = rotvec.astype(np.float16)
    elif cfg.rotation == "so3":
        params["rotation"] = _random_rotvec(_uniform(keys, 7), _uniform(keys, 8), _uniform(keys, 9)).astype(np.float16)
    if cfg.mix:
        if not num_samples or num_samples < 2:
            raise KdpcError("mix views need the split's number of samples (and at least 2 samples)")
        offset = 1 + np.floor(_uniform(keys, 11) * (num_samples - 1)).astype(np.int64)  # never the sample itself
        is_mix = _uniform(keys, 10) < cfg.mix
        fraction = cfg.mix_max * (1.0 - _uniform(keys, 12))  # in (0, mix_max]
        params["partner"] = np.where(is_mix, (samples + offset) % num_samples, samples).astype(np.int32)
        params["mix"] = np.where(is_mix, fraction, 0.0).astype(np.float16)
    return params


def _random_rotvec(u1: np.ndarray, u2: np.ndarray, u3: np.ndarray) -> np.ndarray:
    """Uniform SO(3) rotations (Shoemake's quaternion method) as axis-angle vectors."""
    q = np.stack(
        [
            np.sqrt(1 - u1) * np.sin(2 * np.pi * u2),
            np.sqrt(1 - u1) * np.cos(2 * np.pi * u2),
            np.sqrt(u1) * np.sin(2 * np.pi * u3),
            np.sqrt(u1) * np.cos(2 * np.pi * u3),
        ],
        1,
    )
    q[q[:, 3] < 0] *= -1  # w >= 0 keeps the angle in [0, pi]
    angle = 2 * np.arccos(np.clip(q[:, 3], -1.0, 1.0))
    sin_half = np.sqrt(np.maximum(1 - q[:, 3] ** 2, 1e-24))
    return q[:, :3] / sin_half[:, None] * angle[:, None]


# ------------------------------------------------------------------------------------------------------- replay
def subset_indices(seed: int, num_raw: int, num_points: int) -> np.ndarray:
    """Which ``num_points`` of ``num_raw`` points a view uses, in which order (stable across numpy versions)."""
    if num_points > num_raw:
        raise KdpcError(f"a view needs {num_points} points but the sample has only {num_raw}")
    keys = splitmix64((np.uint64(seed) << np.uint64(32)) ^ np.arange(num_raw, dtype=np.uint64))
    return np.argsort(keys, kind="stable")[:num_points]


ANCHOR_STREAM = 0x616E63686F727321  # "anchors!": keeps anchor keys independent of the point-subset keys


def anchor_indices(seed: Any, num_points: int, num_anchors: int) -> np.ndarray:
    """The ``num_anchors`` points of a view (positions in VIEW order, ascending) at which a segmentation store
    keeps teacher features. A pure function of the view's stored ``seed``, so a reader recomputes them.

    ``seed`` may be one seed (-> ``[M]``) or an array of seeds (-> ``[n, M]``). Keys
    ``k_i = splitmix64(splitmix64(uint64(seed) ^ ANCHOR_STREAM) ^ uint64(i))`` for ``i = 0 .. N - 1``;
    ``anchors = sort(argsort(k, kind="stable")[:M])`` (int64).
    """
    if not 0 <= num_anchors <= num_points:
        raise KdpcError(f"cannot pick {num_anchors} anchors out of {num_points} points")
    seeds = np.asarray(seed, dtype=np.uint64)
    base = splitmix64(seeds.reshape(-1, 1) ^ np.uint64(ANCHOR_STREAM))
    keys = splitmix64(base ^ np.arange(num_points, dtype=np.uint64)[None, :])
    out = np.sort(np.argsort(keys, axis=1, kind="stable")[:, :num_anchors], axis=1).astype(np.int64)
    return out[0] if seeds.ndim == 0 else out.reshape(*seeds.shape, num_anchors)


def rotation_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula in float64, returned as float32."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    if angle == 0.0:
        return np.eye(3, dtype=np.float32)
    k = rotvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return (np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * (kx @ kx)).astype(np.float32)


def apply_params(points: np.ndarray, params: Mapping[str, Any], num_points: int) -> np.ndarray:
    """Rebuild one view: subset/order -> rotate -> anisotropic scale -> translate, all float32.

    ``points`` is the sample's raw cloud ``[P, 3+]``; extra columns (normals) follow the subset and rotation but
    are not scaled or translated.
    """
    idx = subset_indices(int(params["seed"]), points.shape[0], num_points)
    view = np.array(points[idx], dtype=np.float32, copy=True)
    xyz = view[:, :3]
    if "rotation" in params:
        r = rotation_matrix(np.asarray(params["rotation"], dtype=np.float32))
        xyz[:] = _rotate(xyz, r)
        if view.shape[1] >= 6:
            view[:, 3:6] = _rotate(view[:, 3:6], r)
    xyz *= np.asarray(params["scale"], dtype=np.float16).astype(np.float32)
    xyz += np.asarray(params["translate"], dtype=np.float16).astype(np.float32)
    return view


def mixed_points(params: Mapping[str, Any], num_points: int) -> int:
    """How many of a view's ``num_points`` points come from its partner sample (0 for a plain view)."""
    mix = float(np.float16(params.get("mix", 0.0)))
    return int(round(mix * num_points)) if mix > 0 else 0


def replay_view(dataset: Any, sample: int, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The exact teacher input of a recorded view (and its part labels for segmentation).

    A mix view is the first ``N - n`` points of the sample's view and the first ``n`` of its partner's, both built
    with the view's own parameters (``n = mixed_points(params, N)``)."""
    points = apply_params(dataset.points[sample], params, dataset.num_points)
    n = mixed_points(params, dataset.num_points)
    if n:
        partner = apply_params(dataset.points[int(params["partner"])], params, dataset.num_points)
        points = np.concatenate([points[: dataset.num_points - n], partner[:n]])
    parts = None
    if getattr(dataset, "part_labels", None) is not None:
        if n:
            raise KdpcError("mix views are for classification stores; part segmentation records plain views")
        idx = subset_indices(int(params["seed"]), dataset.num_raw_points, dataset.num_points)
        parts = dataset.part_labels[sample][idx]
    return points, parts


def _rotate(xyz: np.ndarray, r: np.ndarray) -> np.ndarray:
    # Elementwise, not ``xyz @ r.T``: BLAS kernels may round differently across machines and batch sizes.
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    return np.stack([x * r[i, 0] + y * r[i, 1] + z * r[i, 2] for i in range(3)], 1).astype(np.float32)


def params_at(params: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """The parameters of record ``k`` out of a batch of parameter arrays."""
    return {name: values[k] for name, values in params.items()}


# ------------------------------------------------------------------------------------ point-level (never recorded)
@dataclass(frozen=True)
class PointAugmentConfig:
    """Per-point ops added on the fly in training; they change every step and are never stored."""

    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05
    shuffle: bool = True
    dropout_max: float = 0.0  # PointNet++-style random point dropout ratio upper bound; 0 disables

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PointAugmentConfig":
        return cls(**dict(data or {}))


def apply_point_level(points: np.ndarray, cfg: PointAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Dropout, shuffle and jitter one cloud ``[N, 3+]``."""
    return apply_point_level_with_index(points, cfg, rng)[0]


def apply_point_level_with_index(
    points: np.ndarray, cfg: PointAugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Also return ``index`` with ``out[k]`` made from ``points[index[k]]``, so per-point targets can follow."""
    n = points.shape[0]
    index = np.arange(n)
    if cfg.dropout_max > 0:
        dropped = rng.random(n) <= rng.random() * cfg.dropout_max
        if dropped.any() and not dropped.all():
            index[dropped] = np.flatnonzero(~dropped)[0]  # keep N fixed: dropped points repeat a kept one
    if cfg.shuffle:
        index = index[rng.permutation(n)]
    out = np.array(points[index], dtype=np.float32, copy=True)
    if cfg.jitter_sigma > 0:
        noise = np.clip(cfg.jitter_sigma * rng.standard_normal((n, 3)), -cfg.jitter_clip, cfg.jitter_clip)
        out[:, :3] += noise.astype(np.float32)
    return out, index


# ------------------------------------------------------------------------- the hash streams, for other view kinds
def view_keys(run_seed: int, samples: np.ndarray, views: np.ndarray, stream: str) -> np.ndarray:
    """The uint64 key of each view ``(samples[k], views[k])`` of ``stream``: what ``draw_params`` draws from. Other
    view kinds (scene views, ``kdpc.scenes.transforms``) draw their parameters from the same keys."""
    return _view_keys(run_seed, samples, views, stream)


def key_uniform(keys: np.ndarray, lane: int) -> np.ndarray:
    """U[0, 1) float64 per key, independent per ``lane``."""
    return _uniform(keys, lane)

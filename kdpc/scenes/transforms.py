"""Scene views: parameters drawn per ``(stream, run_seed, scene, view)``, quantised, stored small, applied exactly.

Like the shape-level parameters of ``kdpc.augment`` (and from the same counter-based keys, ``augment.view_keys``),
the parameters of a scene view are a pure function of ``(stream, run_seed, sample, view)``, quantised to the dtype
they are stored in *before* they are applied; applying them uses elementwise float32 arithmetic, integer voxel keys
and stable sorts only, so a recorder and a loader rebuild identical views. The parameters of one view:

=============  ========  =====  =============================================================================
name           dtype     shape  meaning
=============  ========  =====  =============================================================================
``seed``       uint32    ()     which point of each voxel is kept (``kdpc.scenes.grid.voxel_sample``)
``angle``      float16   ()     rotation about z, radians (only with ``rotation="z"``)
``scale``      float16   (3,)   anisotropic scale per axis
``flip``       uint8     ()     bit 0: x -> -x, bit 1: y -> -y
``translate``  float16   (3,)   shift, metres
``crop``       uint32    ()     crop centre: point ``crop % m`` of the voxel-sampled view (only with a crop)
=============  ========  =====  =============================================================================

Replaying view ``params`` of scene ``s`` (``replay_scene_view``):

1. centre: subtract ``((xmin + xmax) / 2, (ymin + ymax) / 2, zmin)`` of the scene (float32);
2. rotate xy by ``angle`` (``c, s = float32(cos/sin(float64(angle)))``; ``x' = x c - y s``, ``y' = x s + y c``), flip,
   multiply by ``scale``, add ``translate`` (normals are rotated and flipped only);
3. keep one point per voxel of ``grid_size`` (the dataset's) chosen by ``seed``, in voxel-key order;
4. if more than ``max_points`` (the dataset's ``num_points``) remain, keep the ``max_points`` nearest the centre
   point ``crop % m`` (``sphere``: euclidean; ``box``: horizontal Chebyshev), in their view order.

Point-level noise (jitter, colour noise) is added on top in training and is never recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from ..augment import ParamSpec, key_uniform, view_keys
from ..errors import KdpcError
from ..hashing import splitmix64
from .grid import CROP_SHAPES, crop_indices, voxel_sample

SCENE_ROTATIONS = ("none", "z")
CROPS = (*CROP_SHAPES, "none")


@dataclass(frozen=True)
class SceneAugmentConfig:
    """Scene-level augmentation (recorded and replayed): rotation about z, anisotropic scale, flips, translation,
    then grid sampling and a crop to the dataset's ``num_points``."""

    rotation: str = "z"  # none | z
    max_angle: float = 180.0  # degrees: the angle is drawn from U[-max_angle, max_angle]
    scale_low: float = 0.9
    scale_high: float = 1.1
    flip: float = 0.5  # probability of flipping x, and independently of flipping y
    translate: float = 0.2  # metres, U[-t, t] per axis
    crop: str = "sphere"  # sphere | box | none (none: whole grid-sampled scenes, whatever their size)

    def __post_init__(self) -> None:
        if self.rotation not in SCENE_ROTATIONS:
            raise KdpcError(f"scene augment rotation must be one of {', '.join(SCENE_ROTATIONS)}, "
                            f"got {self.rotation!r}")
        if not 0.0 <= self.max_angle <= 180.0:
            raise KdpcError(f"scene augment max_angle must lie in [0, 180] degrees, got {self.max_angle!r}")
        if not 0 < self.scale_low <= self.scale_high:
            raise KdpcError("scene augment scale needs 0 < scale_low <= scale_high")
        if not 0.0 <= self.flip <= 1.0:
            raise KdpcError(f"scene augment flip is a probability in [0, 1], got {self.flip!r}")
        if self.translate < 0:
            raise KdpcError("scene augment translate must be >= 0")
        if self.crop not in CROPS:
            raise KdpcError(f"scene augment crop must be one of {', '.join(CROPS)}, got {self.crop!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SceneAugmentConfig":
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise KdpcError(f"unknown scene augment option(s): {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(f.name for f in fields(cls))}")
        return cls(**data)


def scene_param_specs(cfg: SceneAugmentConfig) -> list[ParamSpec]:
    """The parameters a scene view of ``cfg`` stores, in a fixed order."""
    specs = [ParamSpec("seed", (), "uint32")]
    if cfg.rotation == "z":
        specs.append(ParamSpec("angle", (), "float16"))
    specs += [ParamSpec("scale", (3,), "float16"), ParamSpec("flip", (), "uint8"),
              ParamSpec("translate", (3,), "float16")]
    if cfg.crop != "none":
        specs.append(ParamSpec("crop", (), "uint32"))
    return specs


def _key_bits(keys: np.ndarray, lane: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (splitmix64(keys + np.uint64(lane)) >> np.uint64(32)).astype(np.uint32)


def draw_scene_params(cfg: SceneAugmentConfig, run_seed: int, samples: np.ndarray, views: np.ndarray, *,
                      stream: str) -> dict[str, np.ndarray]:
    """Quantised parameters of the views ``(samples[k], views[k])`` of ``stream``; depend on nothing else."""
    samples = np.asarray(samples, dtype=np.int64).reshape(-1)
    views = np.broadcast_to(np.asarray(views, dtype=np.int64), samples.shape)
    keys = view_keys(run_seed, samples, views, stream)
    params: dict[str, np.ndarray] = {"seed": _key_bits(keys, 7)}
    if cfg.rotation == "z":
        params["angle"] = (np.deg2rad(cfg.max_angle) * (2.0 * key_uniform(keys, 1) - 1.0)).astype(np.float16)
    span = cfg.scale_high - cfg.scale_low
    scale = np.stack([cfg.scale_low + span * key_uniform(keys, 2 + a) for a in range(3)], 1)
    params["scale"] = scale.astype(np.float16)
    flip_x = key_uniform(keys, 5) < cfg.flip
    flip_y = key_uniform(keys, 6) < cfg.flip
    params["flip"] = (flip_x.astype(np.uint8) | (flip_y.astype(np.uint8) << np.uint8(1))).astype(np.uint8)
    params["translate"] = np.stack([cfg.translate * (2.0 * key_uniform(keys, 8 + a) - 1.0) for a in range(3)],
                                   1).astype(np.float16)
    if cfg.crop != "none":
        params["crop"] = _key_bits(keys, 11)
    return params


def identity_params() -> dict[str, np.ndarray]:
    """The evaluation view: no rotation, scale 1, no flip or shift, voxel points chosen with seed 0, no crop."""
    return {"seed": np.uint32(0), "scale": np.ones(3, dtype=np.float16), "flip": np.uint8(0),
            "translate": np.zeros(3, dtype=np.float16)}


@dataclass
class SceneView:
    """One view of a scene: the kept points in view order, and how they relate to the scene's points."""

    coord: np.ndarray  # [m, 3] float32
    segment: np.ndarray  # [m] int64
    index: np.ndarray  # [m] int64: the scene point each view point is
    inverse: np.ndarray  # [n] int64: for every scene point, the view point standing for it (-1: cropped away)
    color: np.ndarray | None = None  # [m, 3] float32 in [0, 1]
    normal: np.ndarray | None = None  # [m, 3] float32

    @property
    def num_points(self) -> int:
        return int(self.coord.shape[0])

    def features(self, channels: tuple[str, ...]) -> np.ndarray:
        """Model input ``[m, 3 * len(channels)]``: the channel groups (``xyz``, ``normals``, ``rgb``) in their order."""
        arrays = {"xyz": self.coord, "normals": self.normal, "rgb": self.color}
        return np.concatenate([arrays[group] for group in channels], axis=1).astype(np.float32, copy=False)


def scene_centre(coord: np.ndarray) -> np.ndarray:
    lo, hi = coord.min(axis=0), coord.max(axis=0)
    return np.array([(lo[0] + hi[0]) * np.float32(0.5), (lo[1] + hi[1]) * np.float32(0.5), lo[2]], dtype=np.float32)


def transform_points(coord: np.ndarray, normal: np.ndarray | None, params: Mapping[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Steps 1-2 of the module docstring on one scene's points (float32, elementwise)."""
    xyz = np.array(coord, dtype=np.float32, copy=True)
    xyz -= scene_centre(xyz)
    nrm = None if normal is None else np.array(normal, dtype=np.float32, copy=True)
    if "angle" in params:
        angle = float(np.float16(params["angle"]))
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        for arr in (xyz, nrm):
            if arr is not None:
                x, y = arr[:, 0].copy(), arr[:, 1].copy()
                arr[:, 0] = x * c - y * s
                arr[:, 1] = x * s + y * c
    flip = int(params.get("flip", 0))
    for axis in (0, 1):
        if flip >> axis & 1:
            xyz[:, axis] = -xyz[:, axis]
            if nrm is not None:
                nrm[:, axis] = -nrm[:, axis]
    xyz *= np.asarray(params["scale"], dtype=np.float16).astype(np.float32)
    xyz += np.asarray(params["translate"], dtype=np.float16).astype(np.float32)
    return xyz, nrm


def replay_scene_view(dataset: Any, sample: int, params: Mapping[str, Any], cfg: SceneAugmentConfig | None = None,
                      *, crop: bool = True) -> SceneView:
    """The exact view of scene ``sample`` with ``params`` (see the module docstring). ``cfg`` gives the crop
    shape; without a ``crop`` parameter (or with ``crop=False``) the whole grid-sampled scene is returned."""
    scene = dataset[sample]
    xyz, nrm = transform_points(scene.coord, scene.normal if "normals" in dataset.channels else None, params)
    kept, inverse = voxel_sample(xyz, dataset.grid_size, int(params["seed"]))
    if crop and "crop" in params and kept.size > dataset.num_points:
        shape = (cfg or SceneAugmentConfig()).crop
        within = crop_indices(xyz[kept], dataset.num_points, int(params["crop"]), shape)
        position = np.full(kept.size, -1, dtype=np.int64)
        position[within] = np.arange(within.size)
        kept, inverse = kept[within], position[inverse]
    color = None
    if "rgb" in dataset.channels:
        color = np.asarray(scene.color[kept], dtype=np.float32) / np.float32(255.0)
    return SceneView(coord=xyz[kept], segment=np.asarray(scene.segment[kept], dtype=np.int64), index=kept,
                     inverse=inverse, color=color, normal=None if nrm is None else nrm[kept])


def eval_scene_view(dataset: Any, sample: int) -> SceneView:
    """The deterministic evaluation view: the whole scene, centred and grid-sampled (seed 0), never cropped."""
    return replay_scene_view(dataset, sample, identity_params(), crop=False)


# ------------------------------------------------------------------------------------ point-level (never recorded)
@dataclass(frozen=True)
class ScenePointAugmentConfig:
    """Per-point noise added on the fly in training: coordinate jitter (metres) and colour noise (0-1 units)."""

    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    color_sigma: float = 0.02

    def __post_init__(self) -> None:
        for name in ("jitter_sigma", "jitter_clip", "color_sigma"):
            if not getattr(self, name) >= 0:
                raise KdpcError(f"scene point_augment {name} must be >= 0, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ScenePointAugmentConfig":
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise KdpcError(f"unknown scene point_augment option(s): {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(f.name for f in fields(cls))}")
        return cls(**data)


def apply_scene_point_noise(view: SceneView, cfg: ScenePointAugmentConfig, rng: np.random.Generator) -> SceneView:
    """Jitter the coordinates and perturb the colours of a view (a new view; the input is left alone)."""
    m = view.num_points
    coord = view.coord
    if cfg.jitter_sigma > 0:
        noise = np.clip(cfg.jitter_sigma * rng.standard_normal((m, 3)), -cfg.jitter_clip, cfg.jitter_clip)
        coord = coord + noise.astype(np.float32)
    color = view.color
    if color is not None and cfg.color_sigma > 0:
        color = np.clip(color + (cfg.color_sigma * rng.standard_normal((m, 3))).astype(np.float32), 0.0, 1.0)
    return SceneView(coord=coord, segment=view.segment, index=view.index, inverse=view.inverse, color=color,
                     normal=view.normal)

"""Procedural shapes for the embedded ``synthetic`` and ``synthetic-parts`` datasets.

A class is a *builder* that describes a batch of ``B`` random instances as a list of surface *leaves* (rectangles,
triangles, disks/annuli, cylinder/cone frustum sides, ellipsoid (half-)surfaces, torus arcs), each with a per-sample
area and a part id. ``ShapeBuilder.sample`` draws points uniformly over the union of the leaves' surfaces (a leaf
per point with probability proportional to its area, then a uniform point on it), fully vectorised over the batch.
Parts that an instance lacks get zero area. ``generate`` adds pose, noise and occlusion and is what the datasets call.

Coordinates: y is up (like the ModelNet/ShapeNet h5 files); furniture stands on y = 0 before normalisation.
Confusable groups differ mostly in local geometry, with overlapping proportion ranges: cylinder / capsule / mug /
bottle, cone / pyramid / lamp, ellipsoid / capsule, box / bookshelf, table / stool / desk / chair, sofa / bed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..hashing import stable_permutation as _stable_order

TWO_PI = 2.0 * math.pi


# ------------------------------------------------------------------------------------------------ vector helpers
def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt((v * v).sum(-1))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(_norm(v), 1e-12)[..., None]


def _perp_basis(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``axis`` [B,3] and to each other."""
    a = _unit(axis)
    helper = np.where(np.abs(a[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    e1 = _unit(np.cross(a, helper))
    return e1, np.cross(a, e1)


def _ellipsoid_area(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Knud Thomsen's approximation (error < 1.1%)."""
    p = 1.6075
    ap, bp, cp = a**p, b**p, c**p
    return 4.0 * math.pi * ((ap * bp + ap * cp + bp * cp) / 3.0) ** (1.0 / p)


# ------------------------------------------------------------------------------------- leaf samplers (flat [M])
# Each maps uniforms uv [M,2] and per-point parameters to points [M,3], uniform in area on the leaf.
def _rect(uv, o, e1, e2):
    return o + uv[:, :1] * e1 + uv[:, 1:2] * e2


def _tri(uv, p0, p1, p2):
    s = np.sqrt(uv[:, :1])
    return (1.0 - s) * p0 + s * (1.0 - uv[:, 1:2]) * p1 + s * uv[:, 1:2] * p2


def _disk(uv, c, a1, a2, inner):
    r = np.sqrt(inner**2 + uv[:, 0] * (1.0 - inner**2))[:, None]
    th = TWO_PI * uv[:, 1:2]
    return c + r * np.cos(th) * a1 + r * np.sin(th) * a2


def _tube(uv, c0, h, e1, e2, r0, r1):
    # t along the axis with density proportional to the radius r0 + (r1 - r0) t (frustum side is uniform in area)
    a = 0.5 * (r1 - r0)
    cq = uv[:, 0] * 0.5 * (r0 + r1)
    t = 2.0 * cq / np.maximum(r0 + np.sqrt(np.maximum(r0 * r0 + 4.0 * a * cq, 0.0)), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    r = (r0 + (r1 - r0) * t)[:, None]
    th = TWO_PI * uv[:, 1:2]
    return c0 + t[:, None] * h + r * (np.cos(th) * e1 + np.sin(th) * e2)


def _ellipsoid(uv, c, a1, a2, a3, zmin):
    z = zmin + (1.0 - zmin) * uv[:, 0]
    s = np.sqrt(np.maximum(1.0 - z * z, 0.0))[:, None]
    th = TWO_PI * uv[:, 1:2]
    return c + s * np.cos(th) * a1 + s * np.sin(th) * a2 + z[:, None] * a3


def _torus(uv, c, e1, e2, n, big_r, small_r, phi0, phi1):
    phi = (phi0 + (phi1 - phi0) * uv[:, 0])[:, None]
    # minor angle v with density proportional to (R + r cos v): invert (v + k sin v) / 2pi = u by Newton
    k = np.minimum(small_r / big_r, 0.95)
    target = TWO_PI * uv[:, 1]
    v = target.copy()
    for _ in range(8):
        v = v - (v + k * np.sin(v) - target) / (1.0 + k * np.cos(v))
    v = v[:, None]
    ring = np.cos(phi) * e1 + np.sin(phi) * e2
    return c + (big_r[:, None] + small_r[:, None] * np.cos(v)) * ring + small_r[:, None] * np.sin(v) * n


@dataclass
class _Leaf:
    fn: Callable[..., np.ndarray]
    params: tuple[np.ndarray, ...]
    part: int
    area: np.ndarray  # [B]


class ShapeBuilder:
    """Collects the leaves of a batch of ``n`` instances; random draws come from ``rng`` in a fixed order."""

    def __init__(self, rng: np.random.Generator, n: int, jitter: float = 1.0) -> None:
        self.rng = rng
        self.n = n
        self.jitter = float(jitter)
        self.leaves: list[_Leaf] = []

    # -------------------------------------------------------------------------------------------- random draws
    def u(self, lo: float, hi: float) -> np.ndarray:
        """A proportion drawn from [lo, hi]; ``jitter`` scales the range about its centre (0: always the centre)."""
        x = 0.5 * (lo + hi) + self.jitter * (self.rng.random(self.n) - 0.5) * (hi - lo)
        return np.maximum(x, 0.25 * lo) if lo > 0 else x

    def flag(self, p: float) -> np.ndarray:
        """Per-instance booleans, true with probability ``p`` (structural variation; not scaled by jitter)."""
        return self.rng.random(self.n) < p

    def integers(self, lo: int, hi: int) -> np.ndarray:
        """Per-instance integers in [lo, hi]."""
        return self.rng.integers(lo, hi + 1, size=self.n)

    def vec(self, x, y, z) -> np.ndarray:
        return np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (self.n,)) for c in (x, y, z)], -1)

    # ------------------------------------------------------------------------------------------------- leaves
    def _b(self, x, tail: tuple[int, ...] = ()) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), (self.n, *tail)))

    def _add(self, fn, params, part: int, area: np.ndarray, mask=None) -> None:
        area = np.abs(self._b(area))
        if mask is not None:
            area = area * self._b(mask)
        self.leaves.append(_Leaf(fn, tuple(params), int(part), area))

    def rect(self, o, e1, e2, part: int, mask=None) -> None:
        o, e1, e2 = self._b(o, (3,)), self._b(e1, (3,)), self._b(e2, (3,))
        self._add(_rect, (o, e1, e2), part, _norm(np.cross(e1, e2)), mask)

    def tri(self, p0, p1, p2, part: int, mask=None) -> None:
        p0, p1, p2 = self._b(p0, (3,)), self._b(p1, (3,)), self._b(p2, (3,))
        self._add(_tri, (p0, p1, p2), part, 0.5 * _norm(np.cross(p1 - p0, p2 - p0)), mask)

    def quad(self, p0, p1, p2, p3, part: int, mask=None) -> None:
        """A planar quadrilateral p0-p1-p2-p3 (in order) as two triangles."""
        self.tri(p0, p1, p2, part, mask)
        self.tri(p0, p2, p3, part, mask)

    def disk(self, c, a1, a2, part: int, inner=0.0, mask=None) -> None:
        """Ellipse ``c + r(cos a1 + sin a2)``; ``inner`` > 0 makes an annulus (fraction of the radius)."""
        c, a1, a2, inner = self._b(c, (3,)), self._b(a1, (3,)), self._b(a2, (3,)), self._b(inner)
        area = math.pi * _norm(np.cross(a1, a2)) * (1.0 - inner**2)
        self._add(_disk, (c, a1, a2, inner), part, area, mask)

    def box(self, center, half, part: int, rot=None, mask=None, skip: Sequence[str] = ()) -> None:
        """Box with half extents ``half`` along the columns of ``rot`` [B,3,3] (default axes).

        ``skip`` names faces to leave open: '+x', '-x', '+y', '-y', '+z', '-z' (in the box's own frame).
        """
        center, half = self._b(center, (3,)), self._b(half, (3,))
        rot = np.broadcast_to(np.eye(3), (self.n, 3, 3)) if rot is None else self._b(rot, (3, 3))
        axes = [rot[:, :, i] * half[:, i : i + 1] for i in range(3)]
        for i, name in enumerate("xyz"):
            j, k = (i + 1) % 3, (i + 2) % 3
            for sign in (1.0, -1.0):
                if f"{'+' if sign > 0 else '-'}{name}" in skip:
                    continue
                fc = center + sign * axes[i]
                self.rect(fc - axes[j] - axes[k], 2.0 * axes[j], 2.0 * axes[k], part, mask)

    def cylinder(self, base, axis, r0, r1=None, part: int = 0, bottom=True, top=True, mask=None) -> None:
        """Frustum side from ``base`` along ``axis`` (radius r0 -> r1), with optional end disks."""
        base, axis = self._b(base, (3,)), self._b(axis, (3,))
        r0 = self._b(r0)
        r1 = r0 if r1 is None else self._b(r1)
        e1, e2 = _perp_basis(axis)
        slant = np.sqrt((axis * axis).sum(-1) + (r1 - r0) ** 2)
        self._add(_tube, (base, axis, e1, e2, r0, r1), part, math.pi * (r0 + r1) * slant, mask)
        if bottom:
            self.disk(base, r0[:, None] * e1, r0[:, None] * e2, part, mask=mask)
        if top:
            self.disk(base + axis, r1[:, None] * e1, r1[:, None] * e2, part, mask=mask)

    def ellipsoid(self, center, a1, a2, a3, part: int, half: bool = False, mask=None) -> None:
        """Ellipsoid with semi-axis vectors a1, a2, a3; ``half`` keeps the half on the +a3 side."""
        c, a1, a2, a3 = (self._b(v, (3,)) for v in (center, a1, a2, a3))
        area = _ellipsoid_area(_norm(a1), _norm(a2), _norm(a3)) * (0.5 if half else 1.0)
        self._add(_ellipsoid, (c, a1, a2, a3, self._b(0.0 if half else -1.0)), part, area, mask)

    def torus(self, center, e1, e2, big_r, small_r, part: int, phi0=0.0, phi1=TWO_PI, mask=None) -> None:
        """Torus (or an arc of it, phi0..phi1) in the plane of unit vectors e1, e2."""
        c, e1, e2 = self._b(center, (3,)), _unit(self._b(e1, (3,))), _unit(self._b(e2, (3,)))
        n = np.cross(e1, e2)
        big_r, small_r, phi0, phi1 = (self._b(v) for v in (big_r, small_r, phi0, phi1))
        area = (phi1 - phi0) * big_r * TWO_PI * small_r
        self._add(_torus, (c, e1, e2, n, big_r, small_r, phi0, phi1), part, area, mask)

    # ------------------------------------------------------------------------------------------------ sampling
    def sample(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` surface points per instance: points [B,count,3] float64 and local part ids [B,count]."""
        if not self.leaves:
            raise ValueError("a shape needs at least one surface")
        b = self.n
        areas = np.stack([leaf.area for leaf in self.leaves], 1)  # [B, L]
        total = areas.sum(1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError("a shape instance has zero surface area")
        cdf = np.cumsum(areas, 1) / total
        u = self.rng.random((b, count))
        uv = self.rng.random((b * count, 2))
        leaf_idx = (u[:, :, None] >= cdf[:, None, :-1]).sum(-1).reshape(-1)  # first leaf with cdf > u
        order = np.argsort(leaf_idx, kind="stable")
        counts = np.bincount(leaf_idx, minlength=len(self.leaves))
        pts = np.empty((b * count, 3))
        parts = np.empty(b * count, dtype=np.int64)
        start = 0
        for leaf, cnt in zip(self.leaves, counts):
            if cnt:
                sel = order[start : start + cnt]
                rows = sel // count
                pts[sel] = leaf.fn(uv[sel], *(p[rows] for p in leaf.params))
                parts[sel] = leaf.part
            start += cnt
        return pts.reshape(b, count, 3), parts.reshape(b, count)


def _rot_x(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(angle), np.ones_like(angle)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(angle), np.ones_like(angle)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrices [B,3,3] about unit axes [B,3]."""
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    c, s = np.cos(angle), np.sin(angle)
    t = 1.0 - c
    return np.stack(
        [
            np.stack([t * x * x + c, t * x * y - s * z, t * x * z + s * y], -1),
            np.stack([t * x * y + s * z, t * y * y + c, t * y * z - s * x], -1),
            np.stack([t * x * z - s * y, t * y * z + s * x, t * z * z + c], -1),
        ],
        -2,
    )


# ============================================================================================== the classes
# Builders take a ShapeBuilder and add leaves with *local* part ids (indices into the class's part names).


def _ellipsoid_cls(b: ShapeBuilder) -> None:
    rx, rz, ry = b.u(0.45, 1.0), b.u(0.45, 1.0), b.u(0.45, 1.5)
    b.ellipsoid(b.vec(0, ry, 0), b.vec(rx, 0, 0), b.vec(0, 0, rz), b.vec(0, ry, 0), 0)


def _box_cls(b: ShapeBuilder) -> None:
    half = b.vec(b.u(0.25, 1.0), b.u(0.25, 1.0), b.u(0.25, 1.0))
    b.box(b.vec(0, half[:, 1], 0), half, 0)


def _cylinder_cls(b: ShapeBuilder) -> None:
    r, h = b.u(0.3, 0.8), b.u(0.5, 2.2)
    b.cylinder(b.vec(0, 0, 0), b.vec(0, h, 0), r, part=0)


def _capsule_cls(b: ShapeBuilder) -> None:
    r, length = b.u(0.3, 0.8), b.u(0.2, 1.6)
    b.cylinder(b.vec(0, r, 0), b.vec(0, length, 0), r, part=0, bottom=False, top=False)
    ex, ez = b.vec(r, 0, 0), b.vec(0, 0, r)
    b.ellipsoid(b.vec(0, r, 0), ex, ez, b.vec(0, -r, 0), 0, half=True)
    b.ellipsoid(b.vec(0, r + length, 0), ex, ez, b.vec(0, r, 0), 0, half=True)


def _cone_cls(b: ShapeBuilder) -> None:
    r, h, top = b.u(0.35, 1.0), b.u(0.5, 1.8), b.u(0.0, 0.2)
    b.cylinder(b.vec(0, 0, 0), b.vec(0, h, 0), r, r * top, part=0)


def _pyramid_cls(b: ShapeBuilder) -> None:
    sx = b.u(0.3, 0.9)
    sz, h, top = sx * b.u(0.85, 1.15), b.u(0.5, 1.8), b.u(0.0, 0.2)
    lo = [b.vec(sx, 0, sz), b.vec(-sx, 0, sz), b.vec(-sx, 0, -sz), b.vec(sx, 0, -sz)]
    hi = [b.vec(sx * top, h, sz * top), b.vec(-sx * top, h, sz * top), b.vec(-sx * top, h, -sz * top),
          b.vec(sx * top, h, -sz * top)]
    b.quad(lo[0], lo[1], lo[2], lo[3], 0)
    b.quad(hi[0], hi[1], hi[2], hi[3], 0)
    for i in range(4):
        j = (i + 1) % 4
        b.quad(lo[i], lo[j], hi[j], hi[i], 0)


def _torus_cls(b: ShapeBuilder) -> None:
    big = b.u(0.6, 1.0)
    small = big * b.u(0.15, 0.45)
    standing = b.flag(0.5)
    e1 = b.vec(1, 0, 0)
    e2 = np.where(standing[:, None], b.vec(0, 1, 0), b.vec(0, 0, 1))
    b.torus(b.vec(0, np.where(standing, big + small, small), 0), e1, e2, big, small, 0)


def _legs(b: ShapeBuilder, xs, zs, height, thick, part: int, y0=0.0) -> None:
    """Four vertical legs at (+-xs, +-zs), square (or round, per instance) section of half size ``thick``."""
    round_legs = b.flag(0.4)
    for sx in (1.0, -1.0):
        for sz in (1.0, -1.0):
            b.box(b.vec(sx * xs, y0 + height / 2, sz * zs), b.vec(thick, height / 2, thick), part, mask=~round_legs,
                  skip=("-y", "+y"))
            b.cylinder(b.vec(sx * xs, y0, sz * zs), b.vec(0, height, 0), thick, part=part, bottom=False,
                       top=False, mask=round_legs)


def _table_cls(b: ShapeBuilder) -> None:  # parts: top, legs
    w, d, h, t = b.u(0.5, 1.2), b.u(0.35, 1.0), b.u(0.45, 1.0), b.u(0.025, 0.08)
    leg, inset = b.u(0.02, 0.06), b.u(0.0, 0.15)
    b.box(b.vec(0, h - t / 2, 0), b.vec(w / 2, t / 2, d / 2), 0)
    xs = np.maximum(w / 2 - inset - leg, leg)
    zs = np.maximum(d / 2 - inset - leg, leg)
    _legs(b, xs, zs, h - t, leg, 1)


def _stool_cls(b: ShapeBuilder) -> None:  # parts: seat, legs
    r, h, t = b.u(0.18, 0.45), b.u(0.4, 0.95), b.u(0.04, 0.1)
    round_seat = b.flag(0.7)
    b.cylinder(b.vec(0, h - t, 0), b.vec(0, t, 0), r, part=0, mask=round_seat)
    b.box(b.vec(0, h - t / 2, 0), b.vec(0.9 * r, t / 2, 0.9 * r), 0, mask=~round_seat)
    lr, r_top, splay = b.u(0.015, 0.04), r * b.u(0.5, 0.8), b.u(0.0, 0.35)
    r_bot = r_top * (1.0 + splay)
    four = b.flag(0.5)
    ring = b.flag(0.4)
    for n_legs, mask in ((3, ~four), (4, four)):
        for k in range(n_legs):
            a = TWO_PI * (k + 0.5) / n_legs
            bottom = b.vec(r_bot * math.cos(a), 0, r_bot * math.sin(a))
            top = b.vec(r_top * math.cos(a), h - t, r_top * math.sin(a))
            b.cylinder(bottom, top - bottom, lr, part=1, bottom=False, top=False, mask=mask)
    ring_h = (h - t) * b.u(0.25, 0.45)
    ring_r = r_bot + (r_top - r_bot) * ring_h / (h - t)
    b.torus(b.vec(0, ring_h, 0), b.vec(1, 0, 0), b.vec(0, 0, 1), ring_r, 0.7 * lr, 1, mask=ring)


def _desk_cls(b: ShapeBuilder) -> None:  # parts: top, panels, drawer
    w, d, h, t = b.u(0.8, 1.5), b.u(0.4, 0.8), b.u(0.6, 0.85), b.u(0.02, 0.06)
    pt, overhang, depth = b.u(0.02, 0.05), b.u(0.0, 0.05), b.u(0.85, 1.0)
    b.box(b.vec(0, h - t / 2, 0), b.vec(w / 2, t / 2, d / 2), 0)
    ph = h - t
    for sx in (1.0, -1.0):
        b.box(b.vec(sx * (w / 2 - overhang - pt / 2), ph / 2, 0), b.vec(pt / 2, ph / 2, depth * d / 2), 1)
    modesty = b.flag(0.5)
    mh = ph * b.u(0.25, 0.5)
    b.box(b.vec(0, ph - mh / 2, -0.45 * d), b.vec(w / 2 - overhang - pt, mh / 2, pt / 2), 1, mask=modesty)
    drawer = b.flag(0.5)
    dw, dh = w * b.u(0.2, 0.35), ph * b.u(0.2, 1.0)
    b.box(b.vec(w / 2 - overhang - pt - dw / 2, ph - dh / 2, 0), b.vec(dw / 2, dh / 2, 0.45 * d), 2, mask=drawer)


def _chair_cls(b: ShapeBuilder) -> None:  # parts: seat, back, legs, arms
    w, d, hs, t = b.u(0.38, 0.6), b.u(0.38, 0.6), b.u(0.38, 0.55), b.u(0.03, 0.1)
    hb, bt, tilt = b.u(0.3, 0.75), b.u(0.02, 0.07), b.u(0.0, 0.35)
    b.box(b.vec(0, hs - t / 2, 0), b.vec(w / 2, t / 2, d / 2), 0)
    rot = _rot_x(-tilt)  # lean the back towards -z
    up = rot[:, :, 1]
    back_c = b.vec(0, hs, -d / 2 + bt / 2) + up * (hb / 2)[:, None]
    b.box(back_c, b.vec(w / 2, hb / 2, bt / 2), 1, rot=rot)
    leg, inset = b.u(0.015, 0.035), b.u(0.0, 0.05)
    _legs(b, w / 2 - inset - leg, d / 2 - inset - leg, hs - t, leg, 2)
    arms = b.flag(0.3)
    ah = b.u(0.15, 0.25)
    for sx in (1.0, -1.0):
        b.box(b.vec(sx * (w / 2 - 0.03), hs + ah, 0), b.vec(0.03, 0.02, d / 2), 3, mask=arms)
        b.box(b.vec(sx * (w / 2 - 0.03), hs + ah / 2, d / 2 - 0.03), b.vec(0.015, ah / 2, 0.015), 3, mask=arms)


def _lamp_cls(b: ShapeBuilder) -> None:  # parts: base, pole, shade
    rb, hb = b.u(0.1, 0.28), b.u(0.02, 0.08)
    round_base = b.flag(0.7)
    b.cylinder(b.vec(0, 0, 0), b.vec(0, hb, 0), rb, part=0, mask=round_base)
    b.box(b.vec(0, hb / 2, 0), b.vec(rb, hb / 2, rb), 0, mask=~round_base)
    rp, hp = b.u(0.008, 0.025), b.u(0.35, 1.1)
    b.cylinder(b.vec(0, hb, 0), b.vec(0, hp, 0), rp, part=1, bottom=False, top=False)
    r_bot, hs = b.u(0.12, 0.35), b.u(0.12, 0.35)
    r_top = r_bot * b.u(0.35, 0.85)
    y0 = hb + hp - hs * b.u(0.3, 0.7)
    b.cylinder(b.vec(0, y0, 0), b.vec(0, hs, 0), r_bot, r_top, part=2, bottom=False, top=False)


def _mug_cls(b: ShapeBuilder) -> None:  # parts: body, handle
    r, h = b.u(0.28, 0.5), b.u(0.45, 1.1)
    wall = r * b.u(0.06, 0.12)
    b.cylinder(b.vec(0, 0, 0), b.vec(0, h, 0), r, part=0, bottom=True, top=False)
    b.cylinder(b.vec(0, wall, 0), b.vec(0, h - wall, 0), r - wall, part=0, bottom=True, top=False)
    b.disk(b.vec(0, h, 0), b.vec(r, 0, 0), b.vec(0, 0, r), 0, inner=(r - wall) / r)
    hr, hm = h * b.u(0.22, 0.38), b.u(0.03, 0.07)
    b.torus(b.vec(r - 0.5 * hm, h * b.u(0.45, 0.6), 0), b.vec(1, 0, 0), b.vec(0, 1, 0), hr, hm, 1,
            phi0=-0.5 * math.pi, phi1=0.5 * math.pi)


def _bottle_cls(b: ShapeBuilder) -> None:  # parts: body, neck, cap
    r, hb = b.u(0.22, 0.45), b.u(0.6, 1.5)
    rn, hs, hn = r * b.u(0.22, 0.45), b.u(0.08, 0.35), b.u(0.08, 0.35)
    cap = b.flag(0.6)
    b.cylinder(b.vec(0, 0, 0), b.vec(0, hb, 0), r, part=0, bottom=True, top=False)
    b.cylinder(b.vec(0, hb, 0), b.vec(0, hs, 0), r, rn, part=1, bottom=False, top=False)
    b.cylinder(b.vec(0, hb + hs, 0), b.vec(0, hn, 0), rn, part=1, bottom=False, top=False)
    b.disk(b.vec(0, hb + hs + hn, 0), rn[:, None] * b.vec(1, 0, 0), rn[:, None] * b.vec(0, 0, 1), 1, mask=~cap)
    hc = b.u(0.04, 0.1)
    b.cylinder(b.vec(0, hb + hs + hn - 0.6 * hc, 0), b.vec(0, hc, 0), 1.2 * rn, part=2, mask=cap)


def _wing(b: ShapeBuilder, root, span, chord, thick, sweep, side: float, part: int, vertical: bool = False,
          mask=None) -> None:
    """A thin box from ``root`` outwards (+z * side, or +y if vertical), swept back by ``sweep`` radians."""
    s, c = np.sin(sweep), np.cos(sweep)
    zero = np.zeros_like(s)
    if vertical:
        d, ch, th = np.stack([-s, c, zero], -1), np.stack([c, s, zero], -1), b.vec(0, 0, 1)
    else:
        d, ch, th = np.stack([-s, zero, side * c], -1), np.stack([c, zero, side * s], -1), b.vec(0, 1, 0)
    rot = np.stack([ch, th, d], -1)  # columns: chord, thickness, span
    center = root + d * (span / 2)[:, None]
    b.box(center, np.stack([chord / 2, thick / 2, span / 2], -1), part, rot=rot, mask=mask)


def _airplane_cls(b: ShapeBuilder) -> None:  # parts: fuselage, wings, tail, engines
    length, rf = b.u(1.6, 2.6), b.u(0.07, 0.16)
    nose, tail_len = length * b.u(0.08, 0.18), length * b.u(0.15, 0.3)
    x1, x0 = length / 2 - nose, -length / 2 + tail_len
    b.cylinder(b.vec(x0, 0, 0), b.vec(x1 - x0, 0, 0), rf, part=0, bottom=False, top=False)
    b.ellipsoid(b.vec(x1, 0, 0), b.vec(0, rf, 0), b.vec(0, 0, rf), b.vec(nose, 0, 0), 0, half=True)
    b.cylinder(b.vec(x0, 0, 0), b.vec(-tail_len, 0, 0), rf, rf * b.u(0.2, 0.5), part=0, bottom=False, top=True)
    span, chord, thick, sweep = b.u(0.5, 1.3), b.u(0.15, 0.45), b.u(0.015, 0.04), b.u(0.0, 0.6)
    xw = length / 2 * b.u(-0.2, 0.25)
    for side in (1.0, -1.0):
        _wing(b, b.vec(xw, 0, side * 0.5 * rf), span, chord, thick, sweep, side, 1)
    ts, tc, xt = span * b.u(0.25, 0.45), chord * b.u(0.5, 0.8), x0 - 0.3 * tail_len
    for side in (1.0, -1.0):
        _wing(b, b.vec(xt, 0, side * 0.3 * rf), ts, tc, thick, sweep, side, 2)
    _wing(b, b.vec(xt, 0.5 * rf, 0), b.u(0.15, 0.4), tc, thick, sweep, 1.0, 2, vertical=True)
    engines = b.flag(0.5)
    er, el, at = b.u(0.03, 0.07), b.u(0.15, 0.35), 0.5 * rf + span * b.u(0.25, 0.5)
    for side in (1.0, -1.0):
        x = xw - at * np.sin(sweep) - 0.5 * el + 0.3 * chord
        c = b.vec(x, -(thick / 2 + er), side * at * np.cos(sweep))
        b.cylinder(c, b.vec(el, 0, 0), er, part=3, mask=engines)


def _sofa_cls(b: ShapeBuilder) -> None:  # parts: seat, back, arms
    w, d, hs = b.u(1.1, 2.2), b.u(0.55, 0.95), b.u(0.3, 0.5)
    hb, bt, aw, ah = b.u(0.25, 0.6), b.u(0.1, 0.25), b.u(0.08, 0.25), b.u(0.08, 0.3)
    arms = b.flag(0.85)
    inner = w / 2 - aw * arms
    b.box(b.vec(0, hs / 2, bt / 2), b.vec(inner, hs / 2, (d - bt) / 2), 0)
    b.box(b.vec(0, (hs + hb) / 2, -d / 2 + bt / 2), b.vec(w / 2, (hs + hb) / 2, bt / 2), 1)
    for sx in (1.0, -1.0):
        b.box(b.vec(sx * (w / 2 - aw / 2), (hs + ah) / 2, bt / 2), b.vec(aw / 2, (hs + ah) / 2, (d - bt) / 2), 2,
              mask=arms)


def _bed_cls(b: ShapeBuilder) -> None:  # parts: mattress, headboard, footboard
    w, length, hm = b.u(0.9, 1.9), b.u(1.8, 2.3), b.u(0.25, 0.6)
    hh, ht, hf = b.u(0.25, 0.9), b.u(0.03, 0.1), b.u(0.0, 0.35)
    b.box(b.vec(0, hm / 2, 0), b.vec(w / 2, hm / 2, length / 2), 0)
    pillow = b.flag(0.6)
    pr = b.u(0.06, 0.12)
    for sx in (0.25, -0.25):
        b.ellipsoid(b.vec(sx * w, hm + 0.5 * pr, -length / 2 + 0.2), b.vec(0.22 * w, 0, 0), b.vec(0, 0, 0.15),
                    b.vec(0, pr, 0), 0, mask=pillow)
    b.box(b.vec(0, (hm + hh) / 2, -length / 2 - ht / 2), b.vec(w / 2, (hm + hh) / 2, ht / 2), 1)
    foot = b.flag(0.5)
    b.box(b.vec(0, (hm + hf) / 2, length / 2 + ht / 2), b.vec(w / 2, (hm + hf) / 2, ht / 2), 2, mask=foot)


def _bookshelf_cls(b: ShapeBuilder) -> None:  # parts: frame, shelves, back
    w, h, d, t = b.u(0.45, 1.4), b.u(0.7, 2.0), b.u(0.22, 0.45), b.u(0.015, 0.045)
    for sx in (1.0, -1.0):
        b.box(b.vec(sx * (w / 2 - t / 2), h / 2, 0), b.vec(t / 2, h / 2, d / 2), 0)
    for y in (t / 2, h - t / 2):
        b.box(b.vec(0, y, 0), b.vec(w / 2 - t, t / 2, d / 2), 0)
    n_shelves = b.integers(1, 5)
    depth = b.u(0.9, 1.0)
    for k in range(1, 6):
        y = t + (h - 2 * t) * k / (n_shelves + 1)
        b.box(b.vec(0, y, (1 - depth) * -d / 2), b.vec(w / 2 - t, t / 2, depth * d / 2), 1, mask=k <= n_shelves)
    back = b.flag(0.7)
    b.box(b.vec(0, h / 2, -d / 2 + t / 4), b.vec(w / 2 - t, h / 2 - t, t / 4), 2, mask=back)


@dataclass(frozen=True)
class ShapeClass:
    name: str
    build: Callable[[ShapeBuilder], None]
    parts: tuple[str, ...]  # local part names; local id = index

    @property
    def composite(self) -> bool:
        return len(self.parts) > 1


SHAPE_CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("ellipsoid", _ellipsoid_cls, ("body",)),
    ShapeClass("box", _box_cls, ("body",)),
    ShapeClass("cylinder", _cylinder_cls, ("body",)),
    ShapeClass("capsule", _capsule_cls, ("body",)),
    ShapeClass("cone", _cone_cls, ("body",)),
    ShapeClass("pyramid", _pyramid_cls, ("body",)),
    ShapeClass("torus", _torus_cls, ("body",)),
    ShapeClass("table", _table_cls, ("top", "legs")),
    ShapeClass("stool", _stool_cls, ("seat", "legs")),
    ShapeClass("desk", _desk_cls, ("top", "panels", "drawer")),
    ShapeClass("chair", _chair_cls, ("seat", "back", "legs", "arms")),
    ShapeClass("lamp", _lamp_cls, ("base", "pole", "shade")),
    ShapeClass("mug", _mug_cls, ("body", "handle")),
    ShapeClass("bottle", _bottle_cls, ("body", "neck", "cap")),
    ShapeClass("airplane", _airplane_cls, ("fuselage", "wings", "tail", "engines")),
    ShapeClass("sofa", _sofa_cls, ("seat", "back", "arms")),
    ShapeClass("bed", _bed_cls, ("mattress", "headboard", "footboard")),
    ShapeClass("bookshelf", _bookshelf_cls, ("frame", "shelves", "back")),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in SHAPE_CLASSES)
PART_CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in SHAPE_CLASSES if c.composite)
_BY_NAME = {c.name: (i, c) for i, c in enumerate(SHAPE_CLASSES)}

SPLIT_CODES = {"train": 0, "test": 1, "val": 2}


def generate(
    classes: Sequence[str],
    samples_per_class: int,
    num_raw_points: int,
    *,
    seed: int,
    split: str,
    noise: float,
    occlusion: float,
    occlusion_max: float,
    jitter: float,
    stretch: float,
    max_tilt: float,
    max_yaw: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances of ``classes``: points [n, P, 3] float32 (centred, max norm 1), labels [n] (index into
    ``classes``), local part ids [n, P]. Samples are grouped by class, ``samples_per_class`` each.

    Each class draws from its own stream ``SeedSequence([seed, split, global class index])``, so selecting a
    subset of classes does not change the instances of the others. Angles are in degrees.
    """
    n_cand = num_raw_points if occlusion <= 0 else int(math.ceil(num_raw_points / (1.0 - occlusion_max))) + 8
    all_pts, all_labels, all_parts = [], [], []
    for label, name in enumerate(classes):
        gidx, spec = _BY_NAME[name]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], gidx]))
        b = ShapeBuilder(rng, samples_per_class, jitter)
        spec.build(b)
        pts, parts = b.sample(n_cand)
        n = samples_per_class
        # pose: anisotropic stretch in the shape frame, yaw about y, then a small tilt about a horizontal axis
        stretch_m = rng.uniform(1.0 - stretch, 1.0 + stretch, size=(n, 3))
        yaw = np.deg2rad(max_yaw) * rng.uniform(-1.0, 1.0, size=n)
        tilt_dir = rng.uniform(0.0, TWO_PI, size=n)
        tilt = np.deg2rad(max_tilt) * rng.random(n)
        tilt_axis = np.stack([np.cos(tilt_dir), np.zeros(n), np.sin(tilt_dir)], -1)
        m = _axis_angle(tilt_axis, tilt) @ _rot_y(yaw) * stretch_m[:, None, :]
        pts = np.einsum("bij,bpj->bpi", m, pts)
        pts = _centre_scale(pts)
        pts = pts + noise * rng.standard_normal(pts.shape)
        # occlusion: drop the points beyond a random plane (a fraction of the cloud), keep the first P of the rest
        occluded = rng.random(n) < occlusion
        frac = rng.uniform(0.3, 1.0, size=n) * occlusion_max * occluded
        direction = rng.standard_normal((n, 3))
        direction /= np.maximum(_norm(direction), 1e-12)[:, None]
        proj = np.einsum("bpi,bi->bp", pts, direction)
        rank = np.argsort(np.argsort(-proj, axis=1, kind="stable"), axis=1, kind="stable")
        dropped = rank < np.floor(frac * n_cand)[:, None]
        keep = np.argsort(dropped, axis=1, kind="stable")[:, :num_raw_points]
        pts = np.take_along_axis(pts, keep[:, :, None], 1)
        parts = np.take_along_axis(parts, keep, 1)
        all_pts.append(pts)
        all_parts.append(parts)
        all_labels.append(np.full(n, label, dtype=np.int64))
    # interleave the classes in a seeded order (so that a prefix of the split is not a single class)
    order = _stable_order(int(seed) * 4 + SPLIT_CODES[split], sum(len(x) for x in all_labels))
    pts = _centre_scale(np.concatenate(all_pts)[order])
    # quantise to a 2^-20 grid: last-ulp differences of sin/cos between CPUs then almost never change the bytes
    pts = (np.round(pts * 2.0**20) / 2.0**20).astype(np.float32)
    return pts, np.concatenate(all_labels)[order], np.concatenate(all_parts)[order]


def _centre_scale(pts: np.ndarray) -> np.ndarray:
    pts = pts - pts.mean(1, keepdims=True)
    radius = _norm(pts).max(1)
    return pts / np.maximum(radius, 1e-12)[:, None, None]

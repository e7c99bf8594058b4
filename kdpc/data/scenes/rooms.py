"""Procedural indoor rooms for ``synthetic-rooms``: walls with door and window openings, floor, ceiling, and
furniture from the shape generator (``kdpc.data.shapes``) laid out by room type, with a class and a colour per point.

Units are metres, z is up, the room spans ``[0, W] x [0, D] x [0, H]``. Every surface is sampled at the same density
(points per square metre; window glass at a third of it), so a room has 10^4-10^5 points. What makes it hard: look-
alike classes in the same rooms (table / desk, chair / stool, sofa / bed, door / wall), colours drawn from one
palette for all furniture (colour alone does not give the class), door panels and window reveals that sit on or in
the wall plane, open doors, clutter on tables and on the floor, and sensor noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..shapes import SHAPE_CLASSES, ShapeBuilder

ROOM_CLASSES: tuple[str, ...] = ("ceiling", "floor", "wall", "door", "window", "table", "desk", "chair", "stool",
                                 "sofa", "bed", "bookshelf", "lamp", "clutter")
_LABEL = {name: i for i, name in enumerate(ROOM_CLASSES)}
_BUILDERS = {c.name: c for c in SHAPE_CLASSES}
_CLUTTER_SHAPES = (("box", 0.12, 0.3), ("cylinder", 0.08, 0.2), ("mug", 0.12, 0.22), ("bottle", 0.12, 0.25),
                   ("cone", 0.08, 0.18), ("ellipsoid", 0.08, 0.2), ("torus", 0.06, 0.14), ("capsule", 0.08, 0.16))
_FLOOR_CLUTTER = (("box", 0.25, 0.55), ("cylinder", 0.15, 0.35), ("capsule", 0.15, 0.3))
_PALETTE = np.array([[0.76, 0.60, 0.42], [0.55, 0.38, 0.22], [0.36, 0.24, 0.14], [0.92, 0.91, 0.88],
                     [0.14, 0.14, 0.15], [0.52, 0.53, 0.55], [0.70, 0.70, 0.68]])
ROOM_TYPES = ("bedroom", "office", "living", "dining")
GLASS_DENSITY = 1.0 / 3.0


@dataclass
class _Room:
    rng: np.random.Generator
    width: float
    depth: float
    height: float
    density: float
    points: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    colors: list[np.ndarray] = field(default_factory=list)
    occupied: list[tuple[float, float, float, float]] = field(default_factory=list)  # footprints (x0, y0, x1, y1)

    def add(self, pts: np.ndarray, label: str, color: np.ndarray) -> None:
        if len(pts):
            self.points.append(pts)
            self.labels.append(np.full(len(pts), _LABEL[label], dtype=np.int16))
            self.colors.append(np.broadcast_to(np.asarray(color, dtype=np.float64), pts.shape))

    # ---------------------------------------------------------------------------------------------- surfaces
    def rect(self, origin, e1, e2, label: str, color, holes=(), density_factor: float = 1.0) -> None:
        """Points on the parallelogram ``origin + u e1 + v e2`` (u, v in [0, 1]) outside ``holes`` (u0, u1, v0, v1)."""
        origin, e1, e2 = (np.asarray(v, dtype=np.float64) for v in (origin, e1, e2))
        area = float(np.linalg.norm(np.cross(e1, e2)))
        n = self.rng.poisson(self.density * density_factor * area)
        uv = self.rng.random((n, 2))
        keep = np.ones(n, dtype=bool)
        for u0, u1, v0, v1 in holes:
            keep &= ~((uv[:, 0] >= u0) & (uv[:, 0] <= u1) & (uv[:, 1] >= v0) & (uv[:, 1] <= v1))
        uv = uv[keep]
        self.add(origin + uv[:, :1] * e1 + uv[:, 1:] * e2, label, color)

    def free(self, box: tuple[float, float, float, float], clearance: float, ignore: tuple[int, ...] = ()) -> bool:
        """Whether footprint ``box`` lies inside the room and ``clearance`` away from every occupied footprint
        (except those at positions ``ignore``: a chair may come close to its own table)."""
        x0, y0, x1, y1 = box
        if x0 < 0.02 or y0 < 0.02 or x1 > self.width - 0.02 or y1 > self.depth - 0.02:
            return False
        return all(x1 + clearance <= a0 or a1 + clearance <= x0 or y1 + clearance <= b0 or b1 + clearance <= y0
                   for i, (a0, b0, a1, b1) in enumerate(self.occupied) if i not in ignore)


def _walls(width: float, depth: float) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]:
    """(origin, along, length, inward normal) of the 4 walls, counter-clockwise from y = 0."""
    return [
        (np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), width, np.array([0.0, 1.0, 0.0])),
        (np.array([width, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), depth, np.array([-1.0, 0.0, 0.0])),
        (np.array([width, depth, 0.0]), np.array([-1.0, 0.0, 0.0]), width, np.array([0.0, -1.0, 0.0])),
        (np.array([0.0, depth, 0.0]), np.array([0.0, -1.0, 0.0]), depth, np.array([1.0, 0.0, 0.0])),
    ]


def _light(rng: np.random.Generator) -> np.ndarray:
    hue = rng.random(3)
    return np.clip(rng.uniform(0.72, 0.95) - rng.uniform(0.0, 0.18) * hue, 0.0, 1.0)


def _furniture_color(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.7:
        return _PALETTE[rng.integers(len(_PALETTE))] * rng.uniform(0.85, 1.1)
    return np.clip(rng.uniform(0.15, 0.85, 3), 0.0, 1.0)  # upholstery / painted


def _shell(room: _Room, wall_color: np.ndarray) -> None:
    """Floor, ceiling, walls with their door and window openings, doors and windows."""
    rng, w, d, h = room.rng, room.width, room.depth, room.height
    floor_color = [np.array([0.55, 0.4, 0.25]), np.array([0.45, 0.45, 0.47]), rng.uniform(0.2, 0.6, 3)][rng.integers(3)]
    room.rect([0, 0, 0], [w, 0, 0], [0, d, 0], "floor", floor_color * rng.uniform(0.85, 1.1))
    ceiling_color = wall_color if rng.random() < 0.4 else np.full(3, rng.uniform(0.85, 0.97))
    room.rect([0, 0, h], [w, 0, 0], [0, d, 0], "ceiling", ceiling_color)
    openings: list[list[tuple[float, float, float, float]]] = [[] for _ in range(4)]
    kinds: list[list[str]] = [[] for _ in range(4)]
    for kind, count in (("door", rng.integers(1, 3)), ("window", rng.integers(0, 4))):
        for _ in range(count):
            for _try in range(20):
                k = int(rng.integers(4))
                length = (w, d, w, d)[k]
                ow = rng.uniform(0.8, 1.0) if kind == "door" else rng.uniform(0.6, 2.0)
                z0, oh = (0.0, rng.uniform(2.0, min(2.2, h - 0.2))) if kind == "door" else \
                    (rng.uniform(0.7, 1.1), rng.uniform(0.8, 1.5))
                oh = min(oh, h - 0.15 - z0)
                if length - ow < 0.7:
                    continue
                s0 = rng.uniform(0.3, length - ow - 0.3)
                if all(s0 + ow + 0.25 < a or b + 0.25 < s0 for a, b, _, _ in openings[k]):
                    openings[k].append((s0, s0 + ow, z0, z0 + oh))
                    kinds[k].append(kind)
                    break
    for k, (origin, along, length, normal) in enumerate(_walls(w, d)):
        up = np.array([0.0, 0.0, h])
        holes = [(a / length, b / length, z0 / h, z1 / h) for a, b, z0, z1 in openings[k]]
        room.rect(origin, along * length, up, "wall", wall_color, holes=holes)
        for (s0, s1, z0, z1), kind in zip(openings[k], kinds[k]):
            corner = origin + along * s0 + np.array([0.0, 0.0, z0])
            width_v, height_v = along * (s1 - s0), np.array([0.0, 0.0, z1 - z0])
            (_door if kind == "door" else _window)(room, corner, width_v, height_v, normal, wall_color)
            if kind == "door":  # keep the way through the door free of furniture
                front = corner + normal * 1.0
                xs = [corner[0], corner[0] + width_v[0], front[0], front[0] + width_v[0]]
                ys = [corner[1], corner[1] + width_v[1], front[1], front[1] + width_v[1]]
                room.occupied.append((min(xs), min(ys), max(xs), max(ys)))


def _door(room: _Room, corner, width_v, height_v, normal, wall_color) -> None:
    rng = room.rng
    color = [np.array([0.5, 0.33, 0.18]), np.array([0.9, 0.9, 0.88]), wall_color * 0.92][rng.integers(3)]
    color = color * rng.uniform(0.9, 1.1)
    if rng.random() < 0.3:  # open: the panel swings into the room about the hinge at `corner`
        angle = rng.uniform(0.5, 1.7)
        along = width_v / np.linalg.norm(width_v)
        panel = (math.cos(angle) * along + math.sin(angle) * normal) * np.linalg.norm(width_v)
        room.rect(corner, panel, height_v, "door", color)
        room.rect(corner + normal * 0.04, panel, height_v, "door", color)
    else:
        room.rect(corner + normal * rng.uniform(-0.06, 0.03), width_v, height_v, "door", color)
    trim = rng.uniform(0.04, 0.09)
    trim_color = color if rng.random() < 0.5 else np.full(3, 0.92)
    along = width_v / np.linalg.norm(width_v)
    for start, e1 in ((corner - along * trim, along * trim), (corner + width_v, along * trim)):
        room.rect(start + normal * 0.015, e1, height_v + np.array([0, 0, trim]), "door", trim_color)
    room.rect(corner - along * trim + height_v + normal * 0.015, width_v + 2 * along * trim, np.array([0, 0, trim]),
              "door", trim_color)


def _window(room: _Room, corner, width_v, height_v, normal, wall_color) -> None:
    rng = room.rng
    depth = rng.uniform(0.12, 0.3)
    outward = -normal * depth
    # the reveal: the wall's thickness around the opening (wall-coloured, but part of the window)
    room.rect(corner, width_v, outward, "window", wall_color)
    room.rect(corner + height_v, width_v, outward, "window", wall_color)
    room.rect(corner, height_v, outward, "window", wall_color)
    room.rect(corner + width_v, height_v, outward, "window", wall_color)
    pane = corner + outward * rng.uniform(0.3, 0.8)
    glass = np.clip(np.array([0.55, 0.62, 0.7]) * rng.uniform(0.5, 1.3), 0, 1)
    room.rect(pane, width_v, height_v, "window", glass, density_factor=GLASS_DENSITY)
    frame = np.full(3, rng.choice([0.9, 0.5, 0.2]))
    bar = rng.uniform(0.03, 0.06)
    along = width_v / np.linalg.norm(width_v)
    room.rect(pane + width_v * 0.5 - along * bar / 2 + normal * 0.01, along * bar, height_v, "window", frame)
    if rng.random() < 0.7:  # a sill
        sill = corner + normal * rng.uniform(0.05, 0.2)
        room.rect(sill - along * 0.05, width_v + along * 0.1, corner - sill, "window", frame * 0.95 + 0.05)


def _instances(room: _Room, name: str, n: int, scale: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` instances of shape class ``name``: points (z up, standing on z = 0, footprint centred on the origin,
    the class's back towards -y) sampled at the room's density, and their local part ids."""
    rng = room.rng
    builder = ShapeBuilder(rng, n, jitter=1.0)
    _BUILDERS[name].build(builder)
    scale = np.ones(n) if scale is None else scale
    areas = np.stack([leaf.area for leaf in builder.leaves]).sum(0) * scale**2
    counts = np.maximum(8, rng.poisson(room.density * areas)).astype(int)
    pts, parts = builder.sample(int(counts.max()))
    out = []
    for i in range(n):
        local = pts[i, : counts[i]][:, [0, 2, 1]] * scale[i]  # shape frame (y up, back at -z) -> z up, back at -y
        lo, hi = local.min(0), local.max(0)
        local -= np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
        out.append((local, parts[i, : counts[i]]))
    return out


def _yawed(local: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    out = local.copy()
    out[:, 0], out[:, 1] = local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c
    return out


def _place_points(room: _Room, inst, label: str, yaw: float, centre, *, colored: bool = True) -> np.ndarray:
    local, parts = inst
    pts = _yawed(local, yaw) + np.array([centre[0], centre[1], 0.0])
    rng = room.rng
    base = _furniture_color(rng)
    colors = np.broadcast_to(base, pts.shape).copy()
    for part in np.unique(parts):
        if rng.random() < 0.3:  # legs of metal, a fabric seat on a wooden frame, ...
            colors[parts == part] = _furniture_color(rng)
    room.points.append(pts)
    room.labels.append(np.full(len(pts), _LABEL[label], dtype=np.int16))
    room.colors.append(colors)
    return pts


def _footprint(pts: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _try_place(room: _Room, inst, label: str, *, wall: int | None = None, yaw: float | None = None,
               centre=None, clearance: float = 0.15, tries: int = 25, ignore=()) -> np.ndarray | None:
    """Place one instance against wall ``wall`` (its back to it), at ``centre`` with ``yaw``, or anywhere free."""
    rng = room.rng
    walls = _walls(room.width, room.depth)
    for _ in range(tries):
        if wall is not None:
            origin, along, length, normal = walls[wall]
            theta = (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi)[wall] + rng.uniform(-0.03, 0.03)
            x0, y0, x1, y1 = _footprint(_yawed(inst[0], theta))
            half_along = abs(np.dot([x1 - x0, y1 - y0], np.abs(along[:2]))) / 2
            half_depth = abs(np.dot([x1 - x0, y1 - y0], np.abs(normal[:2]))) / 2
            if length < 2 * half_along + 0.1:
                return None
            s = rng.uniform(half_along + 0.05, length - half_along - 0.05)
            c = origin[:2] + along[:2] * s + normal[:2] * (half_depth + rng.uniform(0.03, 0.12))
        else:
            theta = yaw if yaw is not None else rng.integers(4) * 0.5 * math.pi + rng.uniform(-0.15, 0.15)
            c = np.asarray(centre, dtype=np.float64) if centre is not None else \
                np.array([rng.uniform(0.3, room.width - 0.3), rng.uniform(0.3, room.depth - 0.3)])
        fx0, fy0, fx1, fy1 = _footprint(_yawed(inst[0], theta))
        box = (c[0] + fx0, c[1] + fy0, c[0] + fx1, c[1] + fy1)
        if room.free(box, clearance, tuple(ignore)):
            room.occupied.append(box)
            return _place_points(room, inst, label, theta, c)
        if centre is not None:
            return None
    return None


def _chairs_around(room: _Room, table_pts: np.ndarray, n: int, chair_name: str = "chair") -> None:
    if n <= 0:
        return
    table_index = len(room.occupied) - 1
    x0, y0, x1, y1 = _footprint(table_pts)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    for inst in _instances(room, chair_name, n):
        side = room.rng.integers(4)
        t = room.rng.uniform(0.2, 0.8)
        edge = [np.array([x0 + t * (x1 - x0), y0]), np.array([x1, y0 + t * (y1 - y0)]),
                np.array([x0 + t * (x1 - x0), y1]), np.array([x0, y0 + t * (y1 - y0)])][side]
        out = [np.array([0, -1.0]), np.array([1.0, 0]), np.array([0, 1.0]), np.array([-1.0, 0])][side]
        reach = np.ptp(inst[0][:, 1]) / 2 + room.rng.uniform(0.0, 0.25)
        c = edge + out * reach
        to_table = centre - c
        yaw = math.atan2(to_table[1], to_table[0]) - 0.5 * math.pi + room.rng.uniform(-0.3, 0.3)
        _try_place(room, inst, chair_name, centre=c, yaw=yaw, clearance=0.02, ignore=(table_index,))


def _top_clutter(room: _Room, surface_pts: np.ndarray, n: int) -> None:
    if n <= 0:
        return
    x0, y0, x1, y1 = _footprint(surface_pts)
    top = float(np.quantile(surface_pts[:, 2], 0.98))
    for _ in range(n):
        name, lo, hi = _CLUTTER_SHAPES[room.rng.integers(len(_CLUTTER_SHAPES))]
        (inst,) = _instances(room, name, 1, scale=np.array([room.rng.uniform(lo, hi)]))
        span = np.ptp(inst[0][:, :2], axis=0) / 2
        if x1 - x0 < 2 * span[0] + 0.05 or y1 - y0 < 2 * span[1] + 0.05:
            continue
        c = np.array([room.rng.uniform(x0 + span[0], x1 - span[0]), room.rng.uniform(y0 + span[1], y1 - span[1])])
        pts = _yawed(inst[0], room.rng.uniform(0, 2 * math.pi)) + np.array([c[0], c[1], top])
        room.add(pts, "clutter", np.clip(room.rng.uniform(0.05, 0.95, 3), 0, 1))


def _floor_clutter(room: _Room, n: int) -> None:
    for _ in range(n):
        name, lo, hi = _FLOOR_CLUTTER[room.rng.integers(len(_FLOOR_CLUTTER))]
        (inst,) = _instances(room, name, 1, scale=np.array([room.rng.uniform(lo, hi)]))
        pts = _try_place(room, inst, "clutter", clearance=0.05, tries=10)
        if pts is not None:
            room.colors[-1] = np.broadcast_to(np.clip(room.rng.uniform(0.1, 0.9, 3), 0, 1), pts.shape)


def _furnish(room: _Room, kind: str) -> None:
    rng = room.rng
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    wall = lambda: int(rng.integers(4))  # noqa: E731
    surfaces: list[np.ndarray] = []
    if kind == "bedroom":
        plan_wall = [("bed", 1), ("bookshelf", r(0, 1)), ("desk", r(0, 1))]
        plan_free = [("lamp", r(0, 2)), ("stool", r(0, 1)), ("chair", r(0, 1))]
    elif kind == "office":
        plan_wall = [("desk", r(1, 4)), ("bookshelf", r(0, 2))]
        plan_free = [("lamp", r(0, 1)), ("stool", r(0, 1))]
    elif kind == "living":
        plan_wall = [("sofa", r(1, 2)), ("bookshelf", r(0, 2))]
        plan_free = [("lamp", r(1, 2)), ("chair", r(0, 2)), ("stool", r(0, 1))]
    else:
        plan_wall = [("bookshelf", r(0, 1)), ("sofa", r(0, 1))]
        plan_free = [("lamp", r(0, 1)), ("stool", r(0, 3))]
    for name, count in plan_wall:
        if count == 0:
            continue
        for inst in _instances(room, name, count):
            pts = _try_place(room, inst, name, wall=wall())
            if pts is None:
                continue
            if name == "desk":
                surfaces.append(pts)
                if rng.random() < 0.85:  # a chair in front of the desk, facing it
                    _chair_at_desk(room, pts)
    n_tables = {"bedroom": r(0, 1), "office": r(0, 1), "living": 1, "dining": r(1, 2)}[kind]
    if n_tables:
        for inst in _instances(room, "table", n_tables):
            pts = _try_place(room, inst, "table", clearance=0.6)
            if pts is not None:
                surfaces.append(pts)
                _chairs_around(room, pts, {"dining": r(2, 6), "office": r(0, 4)}.get(kind, r(0, 2)))
    for name, count in plan_free:
        if count:
            for inst in _instances(room, name, count):
                _try_place(room, inst, name)
    for pts in surfaces:
        _top_clutter(room, pts, r(0, 3))
    _floor_clutter(room, r(0, 4))


def _chair_at_desk(room: _Room, desk_pts: np.ndarray) -> None:
    desk_index = len(room.occupied) - 1
    x0, y0, x1, y1 = _footprint(desk_pts)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    # the desk's free side: away from the nearest wall
    gaps = [centre[1], room.width - centre[0], room.depth - centre[1], centre[0]]
    into = [np.array([0, 1.0]), np.array([-1.0, 0]), np.array([0, -1.0]), np.array([1.0, 0])][int(np.argmin(gaps))]
    (inst,) = _instances(room, "chair", 1)
    half = np.array([(x1 - x0) / 2, (y1 - y0) / 2])
    c = centre + into * (abs(np.dot(half, np.abs(into))) + room.rng.uniform(0.05, 0.35))
    yaw = math.atan2(-into[1], -into[0]) - 0.5 * math.pi + room.rng.uniform(-0.3, 0.3)
    _try_place(room, inst, "chair", centre=c, yaw=yaw, clearance=0.02, ignore=(desk_index,))


def generate_room(rng: np.random.Generator, density: float, noise: float, color_noise: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One room: coord [n, 3] float32 (quantised to 2^-13 m), color [n, 3] uint8, segment [n] int16, room type."""
    room = _Room(rng, width=rng.uniform(3.5, 8.0), depth=rng.uniform(3.5, 7.0), height=rng.uniform(2.5, 3.2),
                 density=density)
    kind = ROOM_TYPES[rng.integers(len(ROOM_TYPES))]
    _shell(room, _light(rng))
    _furnish(room, kind)
    pts = np.concatenate(room.points)
    pts = pts + noise * rng.standard_normal(pts.shape)
    colors = np.concatenate([np.asarray(c, dtype=np.float64) for c in room.colors])
    colors = colors + color_noise * rng.standard_normal(colors.shape)
    coord = (np.round(pts * 8192.0) / 8192.0).astype(np.float32)
    color = np.round(np.clip(colors, 0.0, 1.0) * 255.0).astype(np.uint8)
    return coord, color, np.concatenate(room.labels), kind

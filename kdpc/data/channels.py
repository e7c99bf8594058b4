"""Per-point channel groups: what the columns of a dataset's points (and a teacher's input) are.

A layout is a tuple of group names, xyz first: ``("xyz",)``, ``("xyz", "normals")``, ``("xyz", "rgb")``,
``("xyz", "normals", "rgb")``. Every group is 3 columns wide, in this order in the points array. Written in configs as
``xyz+normals`` (or a list); ``colour`` / ``color`` mean ``rgb``, ``normal`` means ``normals``.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import KdpcError

GROUPS = ("xyz", "normals", "rgb")
GROUP_WIDTH = 3
_ALIASES = {"colour": "rgb", "color": "rgb", "colours": "rgb", "colors": "rgb", "normal": "normals"}


def parse_channels(spec: Any, what: str = "channels") -> tuple[str, ...]:
    """``"xyz+normals"``, ``"xyz,rgb"`` or ``["xyz", "normals"]`` -> ``("xyz", "normals")``; one ``KdpcError`` line
    naming ``what`` for anything else."""
    if isinstance(spec, str):
        parts = [p for p in spec.replace(",", "+").replace(" ", "+").split("+") if p]
    elif isinstance(spec, (list, tuple)) and all(isinstance(p, str) for p in spec):
        parts = list(spec)
    else:
        raise KdpcError(f"{what} must be a string like xyz+normals or a list of {', '.join(GROUPS)}, got {spec!r}")
    groups = tuple(_ALIASES.get(p.strip().lower(), p.strip().lower()) for p in parts)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise KdpcError(f"{what}: unknown channel group(s) {', '.join(map(repr, unknown))}; known: {', '.join(GROUPS)}")
    if not groups or groups[0] != "xyz" or len(set(groups)) != len(groups):
        raise KdpcError(f"{what} must start with xyz and name each group once, got {'+'.join(groups) or 'nothing'}")
    return groups


def channels_text(groups: Sequence[str]) -> str:
    return "+".join(groups)


def default_channels(num_columns: int) -> tuple[str, ...]:
    """The layout of a points array that does not name its channels: 3 columns xyz, 6 xyz + normals."""
    if num_columns == 3:
        return ("xyz",)
    if num_columns == 6:
        return ("xyz", "normals")
    raise KdpcError(f"points with {num_columns} columns must name their channels (e.g. xyz+normals+rgb)")


def channel_columns(layout: Sequence[str], wanted: Sequence[str], what: str = "the data") -> list[int]:
    """The column indices of the groups ``wanted`` in a points array laid out as ``layout``."""
    missing = [g for g in wanted if g not in layout]
    if missing:
        raise KdpcError(f"{what} has channels {channels_text(layout)} but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} wanted")
    cols: list[int] = []
    for g in wanted:
        start = GROUP_WIDTH * list(layout).index(g)
        cols.extend(range(start, start + GROUP_WIDTH))
    return cols

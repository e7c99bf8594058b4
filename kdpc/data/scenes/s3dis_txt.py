"""The original S3DIS text release (``Stanford3dDataset_v1.2_Aligned_Version``): a room is the union of its
``Annotations/<class>_<k>.txt`` files, one ``x y z r g b`` point per line.

Policy for the release's known blemishes (each documented in the README):

- a line that is not six finite numbers with colours in 0..255 (the release has one, a stray control character in
  ``Area_5/hallway_6/Annotations/ceiling_1.txt``): ``bad_lines="skip"`` (the default) drops the line and counts it
  (``describe()["notes"]``); ``bad_lines="error"`` stops with one error naming the file and line;
- an annotation class outside the 13 (``stairs``) is labelled ``clutter``, as PointNet's and Pointcept's
  preprocessing do; files that are not ``.txt`` (``.DS_Store``, macOS ``Icon`` files) are ignored;
- a room whose annotation files hold no readable point at all is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import KdpcError
from .base import Scene

BAD_LINES = ("skip", "error")


def parse_annotation(dataset: str, path: Path, bad_lines: str) -> tuple[np.ndarray, int]:
    """``([k, 6] float64 rows, number of lines skipped)`` of one annotation file."""
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise KdpcError(f"{dataset}: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    lines = text.splitlines()
    rows = [line for line in lines if line.strip()]
    try:  # fast path: the whole file at once
        values = np.array(" ".join(rows).split(), dtype=np.float64)
        if values.size == 6 * len(rows):
            values = values.reshape(-1, 6)
            if _good_rows(values).all():
                return values, 0
    except ValueError:
        pass
    return _parse_lines(dataset, path, lines, bad_lines)


def _good_rows(values: np.ndarray) -> np.ndarray:
    colors = values[:, 3:6]
    return np.isfinite(values).all(1) & (colors >= 0).all(1) & (colors <= 255).all(1)


def _parse_lines(dataset: str, path: Path, lines: list[str], bad_lines: str) -> tuple[np.ndarray, int]:
    out: list[list[float]] = []
    skipped = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            row = [float(f) for f in fields] if len(fields) == 6 else None
        except ValueError:
            row = None
        if row is not None and _good_rows(np.array([row])).all():
            out.append(row)
            continue
        if bad_lines == "error":
            raise KdpcError(f"{dataset}: {str(path)!r} line {number}: unreadable annotation line "
                            f"{line.strip()[:60]!r}; expected 'x y z r g b' (six numbers, colours 0..255); "
                            "pass --dataset-opt bad_lines=skip to drop such lines")
        skipped += 1
    return np.array(out, dtype=np.float64).reshape(-1, 6), skipped


def read_annotated_room(dataset: str, folder: Path, name: str, class_names: tuple[str, ...], bad_lines: str
                        ) -> tuple[Scene, dict[str, int]]:
    """One room from its ``Annotations`` folder, and what the policy did (``skipped_lines``,
    ``unknown_class_files``)."""
    annotations = folder / "Annotations"
    files = sorted(p for p in annotations.iterdir() if p.is_file() and p.suffix == ".txt")
    if not files:
        raise KdpcError(f"{dataset}: {str(annotations)!r} holds no <class>_<k>.txt annotation files")
    clutter = class_names.index("clutter")
    parts, labels = [], []
    notes = {"skipped_lines": 0, "unknown_class_files": 0}
    for path in files:
        cls = path.stem.split("_")[0]
        label = class_names.index(cls) if cls in class_names else clutter
        notes["unknown_class_files"] += cls not in class_names
        rows, skipped = parse_annotation(dataset, path, bad_lines)
        notes["skipped_lines"] += skipped
        parts.append(rows)
        labels.append(np.full(len(rows), label, dtype=np.int16))
    rows = np.concatenate(parts)
    if not len(rows):
        raise KdpcError(f"{dataset}: room {name} has zero points (no readable line in {str(annotations)!r})")
    return Scene(name=name, coord=rows[:, :3].astype(np.float32), segment=np.concatenate(labels),
                 color=np.round(rows[:, 3:6]).astype(np.uint8)), notes

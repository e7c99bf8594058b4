"""Write tiny scene datasets in the exact on-disk layouts of the real ones, for tests.

Each writer takes the folder to write into (created if needed), sizes and a seed, and returns the folder to pass as
``root``. Rooms are random boxes of points in metres, offset like real area frames; labels are seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

S3DIS_CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
                 "board", "clutter")


def _room(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coord = (rng.random((n, 3)) * np.array([5.0, 4.0, 3.0]) + rng.uniform(-20, 20, (1, 3))).astype(np.float32)
    color = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    normal = rng.standard_normal((n, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return coord, color, normal


def write_s3dis_pointcept(root, areas=(1, 2, 5), rooms_per_area: int = 2, num_points: int = 400, seed: int = 0) -> Path:
    """Pointcept's preprocessed S3DIS: ``Area_N/<room>/coord.npy`` float32 [n, 3], ``color.npy`` uint8 [n, 3],
    ``normal.npy`` float32 [n, 3], ``segment.npy`` int16 [n, 1] and ``instance.npy`` int16 [n, 1]."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    kinds = ("office", "conferenceRoom", "hallway")
    for area in areas:
        for r in range(rooms_per_area):
            folder = root / f"Area_{area}" / f"{kinds[r % len(kinds)]}_{r + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            coord, color, normal = _room(rng, num_points + 37 * r)
            np.save(folder / "coord.npy", coord)
            np.save(folder / "color.npy", color)
            np.save(folder / "normal.npy", normal)
            np.save(folder / "segment.npy", rng.integers(0, 13, (len(coord), 1)).astype(np.int16))
            np.save(folder / "instance.npy", rng.integers(0, 9, (len(coord), 1)).astype(np.int16))
    return root


def write_s3dis_txt(root, areas=(1, 5), rooms_per_area: int = 2, points_per_file: int = 60,
                    classes=("ceiling", "floor", "wall", "chair", "stairs"), seed: int = 0) -> Path:
    """The original release: ``Area_N/<room>/<room>.txt`` (the whole room) and ``Area_N/<room>/Annotations/
    <class>_<k>.txt`` with ``x y z r g b`` lines (3 decimals, integer colours), plus a stray ``.DS_Store``.
    ``stairs`` is a real annotation class outside the 13."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for area in areas:
        for r in range(rooms_per_area):
            room = f"office_{r + 1}"
            ann = root / f"Area_{area}" / room / "Annotations"
            ann.mkdir(parents=True, exist_ok=True)
            rows_all = []
            for k, cls in enumerate(classes):
                coord, color, _ = _room(rng, points_per_file)
                rows = np.concatenate([coord, color.astype(np.float32)], 1)
                lines = [f"{x:.3f} {y:.3f} {z:.3f} {int(cr)} {int(cg)} {int(cb)}" for x, y, z, cr, cg, cb in rows]
                (ann / f"{cls}_{k + 1}.txt").write_text("\n".join(lines) + "\n")
                rows_all += lines
            (ann.parent / f"{room}.txt").write_text("\n".join(rows_all) + "\n")
        (root / f"Area_{area}" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def write_scannet(root, counts=(("train", 3), ("val", 2), ("test", 1)), num_points: int = 400, seed: int = 0) -> Path:
    """Pointcept's preprocessed ScanNet: ``<split>/scene%04d_00/coord.npy`` float32, ``color.npy`` uint8,
    ``normal.npy`` float32, ``segment20.npy`` / ``segment200.npy`` / ``instance.npy`` int16 [n] with -1 for
    unlabelled points; the ``test`` scenes have no labels."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    number = 0
    for split, count in counts:
        for _ in range(count):
            folder = root / split / f"scene{number:04d}_00"
            number += 1
            folder.mkdir(parents=True, exist_ok=True)
            coord, color, normal = _room(rng, num_points)
            np.save(folder / "coord.npy", coord)
            np.save(folder / "color.npy", color)
            np.save(folder / "normal.npy", normal)
            if split != "test":
                segment = rng.integers(-1, 20, len(coord)).astype(np.int16)
                np.save(folder / "segment20.npy", segment)
                np.save(folder / "segment200.npy", rng.integers(-1, 200, len(coord)).astype(np.int16))
                np.save(folder / "instance.npy", rng.integers(-1, 30, len(coord)).astype(np.int16))
    return root

"""Shared by the bring-your-own-teacher/data tests: a folder dataset of mixed files, teachers of architectures kdpc
does not know (saved in every format), and the CLI run in-process (same parsing and error handling as
``kdpc.cli.main``, without a new interpreter per call)."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

TEACHER_MODULE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """[B, N, 3] -> logits [B, K]."""

    def __init__(self, num_classes=2, width=16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.mlp(x).amax(1))


class ConvNet(nn.Module):
    """[B, 3, N] -> {"logits": [B, K], "features": [B, D]}, like reference PointNet/DGCNN code."""

    def __init__(self, num_classes=2, width=16):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(3, width, 1), nn.ReLU(), nn.Conv1d(width, 2 * width, 1))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        feats = self.conv(x).amax(2)
        return {"logits": self.head(feats), "features": feats}


def build_conv(num_classes=2, width=16):
    return ConvNet(num_classes, width)


def build_tiny(num_classes=2, width=16):
    return TinyNet(num_classes, width)
'''

CLASSES = ("ball", "box")
FOLDER_OPTS = ["--dataset", "folder", "--dataset-opt", "num_raw_points=64", "--num-points", "32"]


def write_teacher_module(folder: Path, name: str) -> None:
    (folder / f"{name}.py").write_text(TEACHER_MODULE)


def make_folder_dataset(root: Path, per_class: dict[str, int] | None = None, normals: bool = False) -> Path:
    """``root/{train,test}/{ball,box}/`` with a mesh (.off), a small binary PLY cloud, an ASCII PLY cloud and an
    .npy cloud of different sizes per sample."""
    import trimesh

    per_class = per_class or {"train": 2, "test": 1}
    for split, n in per_class.items():
        for c in CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mesh = trimesh.creation.icosphere(subdivisions=1) if c == "ball" else trimesh.creation.box()
                mesh.apply_scale([1.0 + 0.2 * i, 1.0, 1.0 - 0.1 * i])
                mesh.export(folder / f"mesh{i}.off")
                pts, faces = trimesh.sample.sample_surface(mesh, 40 + 7 * i, seed=i)
                if normals:
                    write_ply(folder / f"cloud{i}.ply", np.asarray(pts), mesh.face_normals[faces], text=False)
                    write_ply(folder / f"ascii{i}.ply", np.asarray(pts), mesh.face_normals[faces], text=True)
                else:
                    cloud = trimesh.PointCloud(np.asarray(pts))
                    cloud.export(folder / f"cloud{i}.ply")  # binary
                    cloud.export(folder / f"ascii{i}.ply", encoding="ascii")
                pts, faces = trimesh.sample.sample_surface(mesh, 100 + i, seed=10 + i)
                arr = np.asarray(pts, dtype=np.float32)
                if normals:
                    arr = np.concatenate([arr, mesh.face_normals[faces]], 1).astype(np.float32)
                np.save(folder / f"points{i}.npy", arr)
    return root


def write_ply(path: Path, xyz: np.ndarray, normals: np.ndarray, text: bool) -> None:
    from plyfile import PlyData, PlyElement

    names = ("x", "y", "z", "nx", "ny", "nz")
    vertex = np.empty(len(xyz), dtype=[(n, "f4") for n in names])
    for i, n in enumerate(names):
        vertex[n] = (xyz if i < 3 else normals)[:, i % 3]
    PlyData([PlyElement.describe(vertex, "vertex")], text=text).write(str(path))


def save_teacher_formats(folder: Path, module_name: str) -> dict[str, Path]:
    """TinyNet (an architecture kdpc does not know) as TorchScript, torch.export and ONNX; ConvNet's weights."""
    sys.path.insert(0, str(folder))
    try:
        mod = __import__(module_name)
    finally:
        sys.path.remove(str(folder))
    torch.manual_seed(0)
    tiny = mod.TinyNet().eval()
    conv = mod.ConvNet().eval()
    x = torch.randn(2, 32, 3)
    out = {"module": tiny}
    out["torchscript"] = folder / "teacher.ts"
    torch.jit.script(tiny).save(str(out["torchscript"]))
    out["export"] = folder / "teacher.pt2"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(tiny, (x,), dynamic_shapes=({0: batch},)), str(out["export"]))
    out["onnx"] = folder / "teacher.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(tiny, (x,), str(out["onnx"]), dynamo=False, input_names=["points"],
                              output_names=["logits"], dynamic_axes={"points": {0: "batch"}})
        except ImportError:  # the ONNX tests skip without onnxruntime / onnx
            out["onnx"] = None
    out["conv_weights"] = folder / "conv_weights.pt"
    torch.save(conv.state_dict(), out["conv_weights"])
    out["conv"] = conv
    return out


def kdpc(*args: str) -> SimpleNamespace:
    """The CLI in this process: ``returncode``, ``stdout``, ``stderr`` as ``kdpc.cli.main`` would produce them."""
    import click

    from kdpc import secrets
    from kdpc.cli import cli
    from kdpc.errors import KdpcError

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(args=[str(a) for a in args], prog_name="kdpc", standalone_mode=False)
            rc = code if isinstance(code, int) else 0
        except KdpcError as exc:
            print(f"kdpc: error: {' '.join(secrets.redact_text(str(exc)).split())}", file=sys.stderr)
            rc = 2
        except click.ClickException as exc:
            exc.show()
            rc = exc.exit_code
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


def ok(*args: str) -> SimpleNamespace:
    proc = kdpc(*args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc

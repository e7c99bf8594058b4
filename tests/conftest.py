import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tests run on 2 shared cores: one intra-op thread is faster and keeps runs comparable.
torch.set_num_threads(1)
os.environ.setdefault("KDPC_NO_PROGRESS", "1")

# A tiny synthetic split: 18 classes x 4 samples, 64 raw points, 32 fed to the models.
TINY_DATA_OPTS = ["--dataset-opt", "samples_per_class=4", "--dataset-opt", "num_raw_points=64", "--num-points", "32"]


def run_kdpc(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True):
    """Run the real CLI in a fresh process (what a user runs), returning the CompletedProcess."""
    full_env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "kdpc", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"kdpc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def flip_a_bit(array_dir: Path) -> None:
    """Flip one bit in the middle of the first chunk object of a zarr array folder (a damaged download)."""
    chunk = next(p for p in sorted(Path(array_dir).rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kdpc: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A pointnet-tiny teacher trained for one epoch on the tiny synthetic split."""
    out = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "1", "--batch-size", "8",
             "--device", "cpu", "--out", str(out))
    return out


def record_tiny(teacher: Path, folder: Path, *args: str) -> Path:
    """``teacher`` recorded with 2 views and ``args`` into ``folder/store.zarr``."""
    out = folder / "store.zarr"
    run_kdpc("record", "--teacher", str(teacher), "--views", "2", *args, "--device", "cpu", "--out", str(out))
    return out


@pytest.fixture(scope="session")
def tiny_store(tiny_teacher, tmp_path_factory) -> Path:
    """A complete zarr store of 3 views from the tiny teacher, in blocks of 64 records."""
    out = tmp_path_factory.mktemp("store") / "tiny.zarr"
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "3", "--chunk-records", "64", "--device", "cpu",
             "--out", str(out))
    return out

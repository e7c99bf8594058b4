"""bench/accuracy.py trains the teacher it is told to: a wider teacher is one --teacher-opt away."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "accuracy.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_teacher_options_reach_the_teacher_checkpoint_and_the_report(tmp_path):
    done = _run("--quick", "--teacher-opt", "embed_dim=16", "--students", "pointnet-tiny", "--arms", "ce",
                "--jobs", "1", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    teacher = torch.load(tmp_path / "work" / "teacher.pt", map_location="cpu", weights_only=True)
    assert teacher["model_config"] == {"embed_dim": 16}
    assert teacher["state_dict"]["encoder.embedding.linear.weight"].shape == (16, 3)
    assert "Teacher pointmlp-tiny embed_dim=16: 2 epochs" in done.stdout
    assert "| teacher pointmlp-tiny embed_dim=16 | - |" in done.stdout


def test_a_malformed_teacher_option_is_one_line_and_no_work(tmp_path):
    done = _run("--teacher-opt", "embed_dim", "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "accuracy.py: error: --teacher-opt takes KEY=VALUE, got 'embed_dim'"
    assert "Traceback" not in done.stderr and not (tmp_path / "work").exists()

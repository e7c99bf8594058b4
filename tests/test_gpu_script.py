"""bench/gpu.sh, the prepared GPU benchmark, runs end to end in its CPU dry-run mode and writes its tables."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "KDPC_NO_PROGRESS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / "gpu.md").read_text()
    for step in ("1/4 step cost", "2/4 kdpc record vs bare forward", "3/4 + 4/4"):
        assert step in report
    assert "| bf16 |" in report and "| fp16 |" in report  # the precision table
    assert "recorded at fp32" in report and report.rstrip().endswith("OK")  # the recorded store verified on the CPU
    assert (tmp_path / "record_cost.json").exists() and (tmp_path / "records-cpu.zarr").is_dir()


def test_gpu_script_refuses_a_machine_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr

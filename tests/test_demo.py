"""`kdpc demo` (what `make demo` runs): the whole pipeline on tiny splits, for both tasks, and its comparison table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdpc.checkpoint import load_checkpoint
from kdpc.demo import PRESETS, STAGES, DemoConfig, format_table, run_demo
from kdpc.distill.seg import CE_ONLY_WEIGHTS, SrkdConfig
from kdpc.errors import KdpcError

TINY_CLS = dict(task="classification", dataset_cfg={"samples_per_class": 4, "num_raw_points": 64}, num_points=32,
                teacher="pointnet-tiny", teacher_epochs=1, student_epochs=1, views=2, batch_size=8, device="cpu")


def test_classification_demo_runs_train_record_distill_and_prints_the_table(tmp_path, capfd):
    lines = []
    cfg = DemoConfig(**TINY_CLS, parallel=True)
    rows = run_demo(tmp_path, cfg, log=lines.append)
    assert [r["model"] for r in rows] == ["teacher", "student, CE only", "student, offline KD"]
    assert all(0.0 <= r["oa"] <= 1.0 and r["params"] > 0 and r["epoch"] == 1 for r in rows)
    assert (tmp_path / "records" / "synthetic.zarr").is_dir() and (tmp_path / "student-kd" / "curves.png").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["task"] == "classification" and list(saved["timings_s"]) == list(STAGES)
    text = "\n".join(lines)
    assert format_table(rows, "classification") in text and "| test OA | test mAcc |" in text
    gain = 100 * (rows[2]["oa"] - rows[1]["oa"])
    assert f"offline KD - CE only: {gain:+.2f} test OA points (seed 0;" in text
    # the students trained side by side in two 1-thread processes: their lines come back tagged
    assert cfg.parallel and any(line.startswith("[CE] ") for line in capfd.readouterr().out.splitlines())
    # a second run reuses what is there (the store is complete, every stage marked done) and gives the same table
    again = []
    assert run_demo(tmp_path, cfg, log=again.append) == rows
    assert f"\n== {STAGES[1]}" in again and f"\n== {STAGES[0]}" not in again and f"\n== {STAGES[2]}" not in again


def test_partseg_demo_compares_srkd_with_ce_on_the_same_recorded_views(tmp_path):
    lines = []
    cfg = DemoConfig(dataset_cfg={"samples_per_class": 2, "num_raw_points": 64}, num_points=32,
                     teacher="pointnet2-seg-tiny", teacher_epochs=1, student_epochs=1, views=1, batch_size=4,
                     device="cpu", parallel=False)
    assert cfg.task == "partseg" and cfg.dataset == "synthetic-parts"
    rows = run_demo(tmp_path, cfg, log=lines.append)
    assert [r["model"] for r in rows] == ["teacher", "student, CE only", "student, offline KD"]
    assert all(0.0 <= r["inst_miou"] <= 1.0 and 0.0 <= r["cls_miou"] <= 1.0 for r in rows)
    ce, kd = (load_checkpoint(tmp_path / d / "student.pt") for d in ("student-ce", "student-kd"))
    # the same half-width student, both distilled from the one store; only the SRKD weights differ
    assert ce.model_config == kd.model_config and ce.model_config["emb_dims"] == 64
    ce_srkd, kd_srkd = (yaml.safe_load((tmp_path / d / "config.yaml").read_text())["srkd"]
                        for d in ("student-ce", "student-kd"))
    assert ce_srkd["pointwise_weight"] == ce_srkd["affinity_weight"] == ce_srkd["cross_weight"] == 0.0
    kd_weights = SrkdConfig(**kd_srkd)  # kdpc distill's SRKD defaults
    assert kd_weights.pointwise_weight > 0 and kd_weights.affinity_weight > 0 and kd_weights.cross_weight > 0
    gain = 100 * (rows[2]["inst_miou"] - rows[1]["inst_miou"])
    text = "\n".join(lines)
    assert "| test instance mIoU | test class mIoU |" in text
    assert f"offline KD - CE only: {gain:+.2f} test instance mIoU points (seed 0;" in text


def test_an_interrupted_stage_is_resumed_not_taken_as_done(tmp_path):
    cfg = DemoConfig(**TINY_CLS, parallel=False)
    run_demo(tmp_path, cfg, log=lambda line: None)
    # a teacher checkpoint exists from its first epoch on: without the finish marker the stage runs again (resumed)
    (tmp_path / "teacher.done").unlink()
    (tmp_path / "student-kd" / "student.done").unlink()
    lines = []
    run_demo(tmp_path, cfg, log=lines.append)
    assert f"\n== {STAGES[0]}" in lines and f"\n== {STAGES[2]}" in lines
    assert not any(line.startswith("[CE]") for line in lines)  # the finished CE student is not retrained
    assert (tmp_path / "teacher.done").exists() and (tmp_path / "student-kd" / "student.done").exists()
    # a folder left by a demo with other settings is refused, not silently reused
    with pytest.raises(KdpcError, match="teacher.pt was made by a demo with other settings; give another --out"):
        run_demo(tmp_path, DemoConfig(**{**TINY_CLS, "teacher_epochs": 2}), log=lambda line: None)


def test_demo_defaults_are_the_benchmarks_settings():
    cfg = DemoConfig()
    assert (cfg.task, cfg.teacher, cfg.student) == ("partseg", "pointmlp-seg-tiny", "dgcnn-seg-tiny")
    assert cfg.views == cfg.student_epochs == 20 and cfg.dataset_cfg == {"samples_per_class": 24}
    cls = DemoConfig(task="classification")
    assert (cls.teacher, cls.student, cls.views) == ("pointmlp-tiny", "pointnet2-tiny", cls.student_epochs)
    assert DemoConfig(student_epochs=7).views == 7 and DemoConfig(student_epochs=7, views=3).views == 3
    # a dict option is merged over the preset's, key by key; the presets themselves are never changed
    merged = DemoConfig(dataset_cfg={"num_raw_points": 64})
    assert merged.dataset_cfg == {"samples_per_class": 24, "num_raw_points": 64}
    merged.dataset_cfg["samples_per_class"] = 1
    assert PRESETS["partseg"].dataset_cfg == {"samples_per_class": 24}
    with pytest.raises(KdpcError, match="demo task must be one of partseg, classification"):
        DemoConfig(task="detection")
    with pytest.raises(KdpcError, match="demo teacher_epochs must be an integer >= 1, got 0"):
        DemoConfig(teacher_epochs=0)


def test_the_part_benchmark_runs_the_demos_setting(tmp_path):
    """bench/seg_accuracy.py's defaults come from the partseg preset: the demo is one seed of that benchmark."""
    script = Path(__file__).resolve().parents[1] / "bench" / "seg_accuracy.py"
    done = subprocess.run([sys.executable, str(script), "--dry-run", "--seeds", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    preset = PRESETS["partseg"]
    ce, srkd = (yaml.safe_load((tmp_path / "seed0" / f"{key}.yaml").read_text()) for key in ("ce", "srkd"))
    assert ce["student"] == srkd["student"] == preset.student and ce["student_cfg"] == preset.student_cfg
    assert ce["epochs"] == preset.student_epochs and ce["batch_size"] == preset.batch_size
    assert ce["srkd"] == {"ce_weight": 1.0, **CE_ONLY_WEIGHTS}
    assert srkd["srkd"]["pointwise_weight"] == SrkdConfig.pointwise_weight > 0
    assert f"--model {preset.teacher} " in done.stdout and f"--epochs {preset.teacher_epochs} " in done.stdout
    assert f"samples_per_class={preset.dataset_cfg['samples_per_class']} " in done.stdout
    assert f"--views {preset.student_epochs} " in done.stdout

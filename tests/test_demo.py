"""`kdpc demo` (what `make demo` runs): the whole pipeline on a tiny synthetic split, and its comparison table."""

import json

from kdpc.demo import STAGES, DemoConfig, format_table, run_demo


def test_demo_runs_train_record_distill_and_prints_the_table(tmp_path, capfd):
    lines = []
    cfg = DemoConfig(dataset_cfg={"samples_per_class": 4, "num_raw_points": 64}, num_points=32, teacher="pointnet-tiny",
                     teacher_epochs=1, student_epochs=1, views=2, batch_size=8, device="cpu", parallel=True)
    rows = run_demo(tmp_path, cfg, log=lines.append)
    assert [r["model"] for r in rows] == ["teacher", "student, CE only", "student, offline KD"]
    assert all(0.0 <= r["oa"] <= 1.0 and r["params"] > 0 and r["epoch"] == 1 for r in rows)
    assert (tmp_path / "records" / "synthetic.zarr").is_dir() and (tmp_path / "student-kd" / "curves.png").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and list(saved["timings_s"]) == list(STAGES)
    text = "\n".join(lines)
    assert format_table(rows) in text
    gain = 100 * (rows[2]["oa"] - rows[1]["oa"])
    assert f"offline KD - CE only: {gain:+.2f} test OA points (seed 0;" in text
    # the students trained side by side in two 1-thread processes: their lines come back tagged
    assert cfg.parallel and any(line.startswith("[CE] ") for line in capfd.readouterr().out.splitlines())
    # a second run reuses what is there (the store is complete, checkpoints exist) and gives the same table
    assert run_demo(tmp_path, cfg, log=lambda line: None) == rows


def test_demo_defaults_are_the_documented_recipe():
    cfg = DemoConfig()
    assert (cfg.teacher, cfg.student, cfg.views) == ("pointmlp-tiny", "pointnet2-tiny", cfg.student_epochs)

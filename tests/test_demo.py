"""`kdpc demo` (what `make demo` runs): the whole pipeline on a tiny synthetic split, and its comparison table."""

import json

from kdpc.demo import DemoConfig, format_table, run_demo


def test_demo_runs_train_record_distill_and_prints_the_table(tmp_path):
    lines = []
    cfg = DemoConfig(dataset_cfg={"samples_per_class": 4, "num_raw_points": 64}, num_points=32, teacher="pointnet-tiny",
                     teacher_epochs=1, student_epochs=1, views=2, batch_size=8, device="cpu")
    rows = run_demo(tmp_path, cfg, log=lines.append)
    assert [r["model"] for r in rows] == ["teacher", "student, CE only", "student, offline KD + NWSD"]
    assert all(0.0 <= r["oa"] <= 1.0 and r["params"] > 0 for r in rows)
    assert (tmp_path / "records" / "synthetic.zarr").is_dir() and (tmp_path / "student-kd" / "curves.png").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and set(saved["timings_s"]) == {
        "1/4 train the teacher", "2/4 record the teacher's views", "3/4 train the student with CE only",
        "4/4 distill the student offline from the records (KD + NWSD)"}
    assert format_table(rows) in "\n".join(lines)
    # a second run reuses what is there (the store is complete, checkpoints exist) and gives the same table
    assert run_demo(tmp_path, cfg, log=lambda line: None) == rows

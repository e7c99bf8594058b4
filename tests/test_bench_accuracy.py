"""bench/accuracy.py trains the teacher it is told to (a wider teacher is one --teacher-opt away), refuses a workdir
that holds another teacher, and reports the same runs at their last epoch on request."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdpc.training.evaluate import evaluate_checkpoint

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

    # that workdir holds this teacher: asking for another there is one line, and nothing is run or reported
    other = _run("--quick", "--teacher-opt", "embed_dim=24", "--students", "pointnet-tiny", "--arms", "ce", "--jobs", "1",
                 "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "other"), cwd=tmp_path)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.strip().splitlines()[-1] == (
        f"accuracy.py: error: {tmp_path / 'work'} holds a teacher trained with model_cfg {{'embed_dim': 16}} "
        "(asked {'embed_dim': 24}): use another --workdir for this teacher")
    assert not (tmp_path / "other").exists()

    # the same runs at their last epoch: each last.pt scored once on val and test, cached, and reported
    last = _run("--quick", "--teacher-opt", "embed_dim=16", "--students", "pointnet-tiny", "--arms", "ce", "--jobs", "1",
                "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "last"), "--report", "--selection", "last",
                cwd=tmp_path)
    assert last.returncode == 0, last.stderr
    assert "every run at its last epoch" in last.stdout
    for name, checkpoint in (("teacher", "teacher.last.pt"), ("pointnet-tiny-ce-s1", "pointnet-tiny-ce-s1.last.pt")):
        cached = json.loads((tmp_path / "work" / f"{name}.last-epoch.json").read_text())
        scored = evaluate_checkpoint(str(tmp_path / "work" / checkpoint), split="test", device="cpu")["oa"]
        assert cached["test/oa"] == pytest.approx(scored)
    student_cached = json.loads((tmp_path / "work" / "pointnet-tiny-ce-s1.last-epoch.json").read_text())
    row = next(line for line in last.stdout.splitlines() if line.startswith("| pointnet-tiny | CE only |"))
    assert f"| {100 * student_cached['val/oa']:.2f} ± 0.00 | {100 * student_cached['test/oa']:.2f} ± 0.00 |" in row


def test_a_malformed_teacher_option_is_one_line_and_no_work(tmp_path):
    done = _run("--teacher-opt", "embed_dim", "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "accuracy.py: error: --teacher-opt takes KEY=VALUE, got 'embed_dim'"
    assert "Traceback" not in done.stderr and not (tmp_path / "work").exists()


def test_last_epoch_scores_come_from_the_last_checkpoint_and_are_cached(tmp_path, tiny_teacher):
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_accuracy", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    expected = {split: evaluate_checkpoint(str(tiny_teacher), split=split, device="cpu")["oa"] for split in ("val", "test")}
    # only the last-epoch files exist: reading the chosen checkpoint instead would fail
    (tmp_path / "ce.last.pt").write_bytes(tiny_teacher.read_bytes())
    (tmp_path / "kd").mkdir()
    (tmp_path / "kd" / "last.pt").write_bytes(tiny_teacher.read_bytes())
    runs = [{"kind": "train", "cfg": {"out": str(tmp_path / "ce.pt")}, "done_file": str(tmp_path / "ce.json"),
             "metrics": {"val/oa": 2.0, "test/oa": 2.0, "epoch": 1}},
            {"kind": "distill", "cfg": {"out": str(tmp_path / "kd")}, "done_file": str(tmp_path / "kd.json"),
             "metrics": {"val/oa": 2.0, "test/oa": 2.0, "epoch": 1}}]
    for run in runs:
        scored = bench.at_last_epoch(run)["metrics"]
        assert scored["val/oa"] == pytest.approx(expected["val"]) and scored["test/oa"] == pytest.approx(expected["test"])
        assert scored["selected_by"] == "last epoch" and "epoch" not in scored
    (tmp_path / "ce.last.pt").unlink()  # a second report reads the cache, not the checkpoint
    assert bench.at_last_epoch(runs[0])["metrics"]["test/oa"] == pytest.approx(expected["test"])


def test_an_ensemble_teacher_is_trained_recorded_merged_and_scored_as_kdpc_eval_scores_it(tmp_path):
    from kdpc.store.backends import open_store, read_header
    from kdpc.training.evaluate import evaluate_ensemble

    done = _run("--quick", "--teacher-seeds", "7,8", "--students", "pointnet-tiny", "--arms", "kd", "--jobs", "1",
                "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    members = [torch.load(work / name, map_location="cpu", weights_only=True) for name in ("teacher.pt", "teacher-s8.pt")]
    assert [m["provenance"]["config"]["seed"] for m in members] == [7, 8]
    # the students learn from the merged store: both members, the first one's embedding kept
    kd = json.loads((work / "pointnet-tiny-kd-s1.json").read_text())
    assert kd["cfg"]["records"] == str(work / "records-2v-f256-ens2.zarr")
    header = read_header(open_store(work / "records-2v-f256-ens2.zarr"))
    assert len(header.teacher["ensemble"]) == 2
    assert header.teacher["embedding_from"] == header.teacher["ensemble"][0]["sha256"]
    # the teacher row is the ensemble as kdpc eval scores it, each member beneath it
    scores = evaluate_ensemble([str(work / "teacher.pt"), str(work / "teacher-s8.pt")], split="test", device="cpu")
    assert "| teacher: ensemble of 2 pointmlp-tiny | - | " in done.stdout
    assert f"| {100 * scores['oa']:.2f} | - | - | - | 1 |" in done.stdout.split("| teacher: ensemble of 2")[1].splitlines()[0]
    for member, seed in zip(scores["members"], (7, 8)):
        assert f"| member seed {seed} | - | " in done.stdout and f"{100 * member['oa']:.2f} | - |" in done.stdout
    assert "seeds 7, 8 (an equal-weight ensemble)" in done.stdout


def test_an_ensemble_teacher_refuses_the_online_arm_and_repeated_seeds(tmp_path):
    online = _run("--teacher-seeds", "1,2", "--arms", "ce,online", "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert online.returncode == 2 and "Traceback" not in online.stderr
    assert online.stderr.strip().splitlines()[-1] == (
        "accuracy.py: error: the online arm runs one live teacher: leave it out of --arms with --teacher-seeds")
    twice = _run("--teacher-seeds", "1,1", "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert twice.returncode == 2 and twice.stderr.strip().splitlines()[-1] == (
        "accuracy.py: error: --teacher-seeds names a seed twice: 1,1")
    assert not any((tmp_path / "work").glob("*.pt"))


def test_a_teacher_at_more_points_is_recorded_there_and_the_students_read_their_own(tmp_path):
    from kdpc.checkpoint import load_checkpoint
    from kdpc.store.backends import open_store, read_header

    done = _run("--quick", "--teacher-points", "256", "--students", "pointnet-tiny", "--arms", "ce,kd", "--jobs", "1",
                "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    assert load_checkpoint(work / "teacher.pt").dataset["num_points"] == 256
    assert read_header(open_store(work / "records-2v-f256.zarr")).num_points == 256
    for student in ("pointnet-tiny-ce-s1.pt", "pointnet-tiny-kd-s1/student.pt"):
        assert load_checkpoint(work / student).dataset["num_points"] == 128  # --quick's students read 128
    assert "| teacher pointmlp-tiny at 256 points | - |" in done.stdout


def test_teacher_points_refuse_the_online_arm_and_fewer_points_than_the_students(tmp_path):
    online = _run("--teacher-points", "512", "--arms", "ce,online", "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert online.returncode == 2 and online.stderr.strip().splitlines()[-1] == (
        "accuracy.py: error: the online teacher reads the student's own points: leave the online arm out of --arms "
        "with --teacher-points")
    fewer = _run("--teacher-points", "128", "--arms", "ce,kd", "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert fewer.returncode == 2 and fewer.stderr.strip().splitlines()[-1] == (
        "accuracy.py: error: --teacher-points 128: the students read 256 points of each view, so the teacher needs "
        "at least as many")
    assert not any((tmp_path / "work").glob("*.pt"))


def test_a_teacher_on_more_shapes_is_recorded_and_scored_on_the_students_data(tmp_path):
    from kdpc.checkpoint import load_checkpoint
    from kdpc.store.backends import open_store, read_header
    from kdpc.training.evaluate import evaluate_checkpoint

    done = _run("--quick", "--teacher-samples-per-class", "6", "--students", "pointnet-tiny", "--arms", "ce,kd",
                "--jobs", "1", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    teacher = load_checkpoint(work / "teacher.pt")
    assert teacher.dataset["config"]["samples_per_class"] == 6  # --quick's students have 4 shapes a class
    assert read_header(open_store(work / "records-2v-f256.zarr")).num_samples == 4 * 18
    student = load_checkpoint(work / "pointnet-tiny-kd-s1" / "student.pt")
    assert student.dataset["config"]["samples_per_class"] == 4
    # the teacher's row is its score on the students' val and test (4 a class), not on its own (6 a class)
    scores = json.loads((work / "score.json").read_text())["metrics"]
    for split in ("val", "test"):
        expected = evaluate_checkpoint(str(work / "teacher.pt"), split=split, device="cpu",
                                       dataset_options={"samples_per_class": 4})
        assert expected["num_samples"] == 4 * 18 and scores[f"{split}/oa"] == expected["oa"]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| teacher pointmlp-tiny trained on 6"))
    assert f"| {100 * scores['test/oa']:.2f} |" in row


def test_a_teacher_on_more_shapes_refuses_the_online_arm_and_fewer_shapes(tmp_path):
    online = _run("--teacher-samples-per-class", "400", "--arms", "ce,online", "--workdir", str(tmp_path / "work"),
                  cwd=tmp_path)
    assert online.returncode == 2 and online.stderr.strip().splitlines()[-1] == (
        "accuracy.py: error: the online arm trains on the teacher's own data: leave it out of --arms with "
        "--teacher-samples-per-class")
    fewer = _run("--teacher-samples-per-class", "100", "--arms", "ce,kd", "--workdir", str(tmp_path / "work"),
                 cwd=tmp_path)
    assert fewer.returncode == 2 and fewer.stderr.strip().splitlines()[-1] == (
        "accuracy.py: error: --teacher-samples-per-class 100: the students' train split has 100 shapes a class, so "
        "the teacher needs more")
    assert not any((tmp_path / "work").glob("*.pt"))


def test_augment_reaches_the_teacher_the_records_and_the_ce_students(tmp_path):
    from kdpc.checkpoint import load_checkpoint
    from kdpc.store.backends import open_store, read_header

    done = _run("--quick", "--augment", "scale_low=0.9", "--augment", "scale_high=1.1", "--students", "pointnet-tiny",
                "--arms", "ce,kd", "--jobs", "1", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    for checkpoint in ("teacher.pt", "pointnet-tiny-ce-s1.pt"):
        views = load_checkpoint(work / checkpoint).provenance["training_views"]["augment"]
        assert (views["scale_low"], views["scale_high"], views["translate"]) == (0.9, 1.1, 0.2)
    header = read_header(open_store(work / "records-2v-f256.zarr"))
    assert (header.augment["scale_low"], header.augment["scale_high"]) == (0.9, 1.1)
    assert "every run shape-level augmented with scale_low=0.9, scale_high=1.1;" in done.stdout

    # the workdir's teacher saw these views: asking it for the default views is refused in one line
    other = _run("--quick", "--students", "pointnet-tiny", "--arms", "ce", "--jobs", "1", "--workdir", str(work),
                 "--out", str(tmp_path / "other"), cwd=tmp_path)
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1].startswith(
        f"accuracy.py: error: {work} holds a teacher trained with augment {{'scale_low': 0.9, 'scale_high': 1.1}}")


def test_a_bad_augment_is_one_line_and_no_work(tmp_path):
    for args, message in ((("--augment", "scale=2"), "unknown augment option(s): scale"),
                          (("--augment", "mix=0.5"), "--augment mix: kdpc train draws plain views, so the CE students "
                                                     "could not see them")):
        done = _run(*args, "--workdir", str(tmp_path / "work"), cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1] == f"accuracy.py: error: {message}"
    assert not any((tmp_path / "work").glob("*.pt"))

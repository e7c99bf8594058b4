"""`kdpc distill`: exact replay, view cycling, provenance checks, run outputs, resume, and no teacher in sight."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_one_line_error, run_kdpc
from fixture_writers import write_modelnet40_h5
from kdpc.augment import AugmentConfig, PointAugmentConfig
from kdpc.checkpoint import load_checkpoint
from kdpc.data import create_dataset
from kdpc.distill.dataset import RecordedViews, check_provenance, view_schedule
from kdpc.distill.trainer import FEATURE_WEIGHT
from kdpc.errors import KdpcError
from kdpc.recorder.views import RecordViews
from kdpc.store import RecordReader

TINY = dict(samples_per_class=4, num_raw_points=64)
NO_POINT_AUG = PointAugmentConfig(jitter_sigma=0.0, shuffle=False, dropout_max=0.0)


def tiny_train_set(**overrides):
    return create_dataset("synthetic", split="train", num_points=32, **{**TINY, **overrides})


def test_replayed_views_equal_the_recorded_teacher_inputs(tiny_store):
    reader = RecordReader(str(tiny_store))
    data = tiny_train_set()
    recorded = RecordViews(data, AugmentConfig.from_dict(reader.header.augment), reader.header.run_seed)
    replay = RecordedViews(data, NO_POINT_AUG, seed=0, reader=reader)
    for epoch in range(reader.num_views):
        replay.set_epoch(epoch)
        items = replay.__getitems__(list(range(len(data))))
        for item in items:
            np.testing.assert_array_equal(item["points"], recorded[item["record"]]["points"])  # bit-exact
            np.testing.assert_allclose(item["teacher_logprobs"], reader.get(np.array([item["record"]]))["logprobs"][0])


def test_point_level_augmentation_is_added_on_top_and_never_recorded(tiny_store):
    reader = RecordReader(str(tiny_store))
    data = tiny_train_set()
    plain = RecordedViews(data, NO_POINT_AUG, seed=0, reader=reader)[5]["points"]
    jittered = RecordedViews(data, PointAugmentConfig(jitter_sigma=0.01, jitter_clip=0.05, shuffle=True), seed=0,
                             reader=reader)[5]["points"]
    assert not np.array_equal(plain, jittered)
    # the same cloud up to order and a jitter bounded by the clip
    dist = np.abs(np.sort(plain, axis=0) - np.sort(jittered, axis=0)).max()
    assert dist <= 0.05 + 1e-6


def test_every_sample_cycles_through_all_its_views_before_any_repeats():
    num_samples, views = 50, 5
    for cycle in range(3):
        seen = np.stack([view_schedule(7, num_samples, views, cycle * views + p) for p in range(views)], 1)
        assert all(sorted(row) == list(range(views)) for row in seen)
    first = np.stack([view_schedule(7, num_samples, views, p) for p in range(views)], 1)
    second = np.stack([view_schedule(7, num_samples, views, views + p) for p in range(views)], 1)
    assert not np.array_equal(first, second)  # each cycle visits the views in a new order


def test_provenance_differences_are_named():
    data = tiny_train_set()

    class Header:
        dataset = data.describe()
        num_points = data.num_points
        class_names = data.class_names
        task = "cls"

    check_provenance(Header, data)  # identical data passes
    with pytest.raises(KdpcError, match="fingerprint"):
        check_provenance(Header, tiny_train_set(noise=0.02))
    with pytest.raises(KdpcError, match="num_points 32 vs 16"):
        check_provenance(Header, create_dataset("synthetic", num_points=16, **TINY))


def test_distill_refuses_a_store_whose_data_changed(tmp_path):
    root = write_modelnet40_h5(tmp_path / "mn40", n_train=12, n_test=6, num_points=64, seed=0)
    data = ["--dataset", "modelnet40", "--data-root", str(root), "--num-points", "32"]
    run_kdpc("train", "--model", "pointnet-tiny", *data, "--epochs", "1", "--batch-size", "4", "--device", "cpu",
             "--out", str(tmp_path / "t.pt"))
    store = tmp_path / "mn40.zarr"
    run_kdpc("record", "--teacher", str(tmp_path / "t.pt"), "--data-root", str(root), "--views", "1",
             "--device", "cpu", "--out", str(store))
    write_modelnet40_h5(tmp_path / "mn40", n_train=12, n_test=6, num_points=64, seed=1)  # the files change
    proc = run_kdpc("distill", "--records", str(store), "--data-root", str(root), "--epochs", "1",
                    "--out", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "not made from this data", "fingerprint")


def distill_args(store, out, *extra):
    return ["distill", "--records", str(store), "--epochs", "2", "--batch-size", "16", "--device", "cpu",
            "--out", str(out), *extra]


def test_distill_run_folder_has_checkpoints_metrics_config_and_curves(tiny_store, tmp_path):
    out = tmp_path / "run"
    proc = run_kdpc(*distill_args(tiny_store, out, "--nwsd-source", "past", "--nwsd-weight", "-0.2"))
    assert "chosen: epoch" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert {"loss/ce", "loss/kd", "loss/nwsd", "loss/total", "val/oa", "val/macc", "lr", "train_time_s",
                "train/acc", "train/agree"} <= set(row)
        assert not any(k.startswith("test/") for k in row)  # the test split never shows up during training
        assert all(np.isfinite(v) for k, v in row.items() if k.startswith("loss/"))
    assert (out / "curves.png").stat().st_size > 1000
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["nwsd_source"] == "past" and cfg["records"] == str(tiny_store)
    ckpt = load_checkpoint(out / "student.pt")
    assert ckpt.provenance["source"]["records"] == str(tiny_store)
    assert ckpt.provenance["source"]["teacher"]["arch"] == "pointnet-tiny"
    # student.pt is the epoch with the best VALIDATION accuracy; its test score is measured once, afterwards
    best = max(rows, key=lambda r: r["val/oa"])
    assert ckpt.metrics["epoch"] == best["epoch"] and ckpt.metrics["selected_by"] == "best val/oa"
    result = json.loads(run_kdpc("eval", "--model", str(out / "student.pt"), "--json", "--device", "cpu").stdout)
    assert result["oa"] == pytest.approx(ckpt.metrics["test/oa"])
    # a second run into the same folder is refused rather than mixed into it
    assert_one_line_error(run_kdpc(*distill_args(tiny_store, out), check=False), "--resume")


KILL_AFTER_FIRST_EPOCH = """
import os, signal, sys
import kdpc.checkpoint as C
original = C.save_checkpoint
def save_checkpoint(path, ckpt):
    result = original(path, ckpt)
    if str(path).endswith("last.pt"):
        os.kill(os.getpid(), signal.SIGKILL)
    return result
C.save_checkpoint = save_checkpoint
import kdpc.distill.trainer as T
T.save_checkpoint = save_checkpoint
from kdpc.cli import main
main(sys.argv[1:])
"""


# the "past" run also decays its KD weight: the resumed epoch must pick the schedule up where it stopped
@pytest.mark.parametrize("source, extra", [("ema", ()), ("past", ("--kd-schedule", "linear"))])
def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_store, tmp_path, source, extra):
    straight = tmp_path / "straight"
    run_kdpc(*distill_args(tiny_store, straight, "--nwsd-source", source, *extra))
    resumed = tmp_path / "resumed"
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_EPOCH,
                           *distill_args(tiny_store, resumed, "--nwsd-source", source, *extra)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert len((resumed / "metrics.jsonl").read_text().splitlines()) == 1
    run_kdpc(*distill_args(tiny_store, resumed, "--nwsd-source", source, "--resume", *extra))
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    for key in a.state_dict:
        torch.testing.assert_close(a.state_dict[key], b.state_dict[key], rtol=0, atol=0, msg=key)
    rows_a = (straight / "metrics.jsonl").read_text().splitlines()
    rows_b = (resumed / "metrics.jsonl").read_text().splitlines()
    assert len(rows_b) == 2
    strip = lambda row: {k: v for k, v in json.loads(row).items() if k != "train_time_s"}  # noqa: E731
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


AUDITED_DISTILL = """
import os, sys
teacher = os.path.realpath(sys.argv[1])
def audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        if os.path.realpath(os.fsdecode(args[0])) == teacher:
            sys.stderr.write("TEACHER FILE OPENED\\n")
            os._exit(99)
sys.addaudithook(audit)
from kdpc.cli import main
main(sys.argv[2:])
"""


def test_distill_never_opens_the_teacher_file(tiny_store, tiny_teacher, tmp_path):
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    # the audit hook itself works: the online baseline, which does load the teacher, trips it
    online = subprocess.run([sys.executable, "-c", AUDITED_DISTILL, str(tiny_teacher), "distill", "--online-teacher",
                             str(tiny_teacher), "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "online")],
                            env=env, capture_output=True, text=True)
    assert online.returncode == 99 and "TEACHER FILE OPENED" in online.stderr
    offline = subprocess.run([sys.executable, "-c", AUDITED_DISTILL, str(tiny_teacher),
                              *distill_args(tiny_store, tmp_path / "offline")], env=env, capture_output=True, text=True)
    assert offline.returncode == 0, offline.stderr
    assert (tmp_path / "offline" / "student.pt").exists()


def test_online_teacher_baseline_trains_on_the_same_views(tiny_teacher, tmp_path):
    out = tmp_path / "online"
    run_kdpc("distill", "--online-teacher", str(tiny_teacher), "--epochs", "1", "--batch-size", "16",
             "--device", "cpu", "--out", str(out))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss/kd"] > 0 and np.isfinite(row["loss/total"])
    # the teacher is named, not its absolute path (checkpoints are shared; paths name home folders)
    assert load_checkpoint(out / "student.pt").provenance["source"]["online_teacher"] == tiny_teacher.name


def test_nwsd_is_off_by_default_and_then_has_no_self_distillation_term(tiny_store, tmp_path):
    out = tmp_path / "plain-kd"
    run_kdpc(*distill_args(tiny_store, out))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # the tiny store keeps the teacher's 128-dim embedding, as wide as the student's: embedding matching is on
    assert "loss/nwsd" not in row and row["loss/total"] == pytest.approx(
        row["loss/ce"] + row["loss/kd"] + FEATURE_WEIGHT * row["loss/embedding"], rel=1e-3)


def test_relation_weight_adds_the_answer_relation_term(tiny_store, tmp_path):
    plain, related = tmp_path / "plain", tmp_path / "related"
    run_kdpc(*distill_args(tiny_store, plain))
    run_kdpc(*distill_args(tiny_store, related, "--relation-weight", "0.5"))
    first = {name: json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
             for name, run in (("plain", plain), ("related", related))}
    assert "loss/relation" not in first["plain"]
    row = first["related"]
    assert 0.0 < row["loss/relation"] < 4.0  # squared differences of correlations
    assert row["loss/total"] == pytest.approx(row["loss/ce"] + row["loss/kd"] + 0.5 * row["loss/relation"]
                                              + FEATURE_WEIGHT * row["loss/embedding"], rel=1e-3)
    assert yaml.safe_load((related / "config.yaml").read_text())["relation_weight"] == 0.5


def test_classifiers_distil_with_dist_by_default_and_kl_or_zkl_on_request(tiny_store, tmp_path):
    runs = {"default": (), "dist": ("--kd-objective", "dist"), "kl": ("--kd-objective", "kl"),
            "zkl": ("--kd-objective", "zkl")}
    rows = {}
    for name, flags in runs.items():
        run_kdpc(*distill_args(tiny_store, tmp_path / name, *flags))
        rows[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
    assert yaml.safe_load((tmp_path / "dist" / "config.yaml").read_text())["kd_objective"] == "dist"
    assert rows["default"]["loss/kd"] == rows["dist"]["loss/kd"]  # auto = dist for classification
    # T^2 (1 - Pearson) lies in [0, 2 T^2] for each of the two relation terms (T = 2); the KL is another number
    assert 0.0 < rows["dist"]["loss/kd"] < 16.0 and rows["dist"]["loss/kd"] != pytest.approx(rows["kl"]["loss/kd"])
    assert rows["zkl"]["loss/kd"] > 0.0 and rows["zkl"]["loss/kd"] != pytest.approx(rows["kl"]["loss/kd"])
    row = rows["dist"]
    assert row["loss/total"] == pytest.approx(row["loss/ce"] + row["loss/kd"] + FEATURE_WEIGHT * row["loss/embedding"],
                                              rel=1e-3)
    with pytest.raises(KdpcError, match="--kd-objective"):
        from kdpc.distill.trainer import DistillConfig

        DistillConfig(records="x.zarr", kd_objective="cosine")


def test_the_kd_weight_is_constant_by_default_and_falls_linearly_to_zero_on_request(tiny_store, tmp_path):
    from kdpc.distill.trainer import DistillConfig, kd_weight_at

    assert kd_weight_at("linear", 2.0, 0.0, 40) == 2.0 and kd_weight_at("linear", 2.0, 10.0, 40) == 1.5
    assert kd_weight_at("linear", 1.0, 40.0, 40) == 0.0 and kd_weight_at("constant", 0.7, 39.5, 40) == 0.7
    samples = RecordReader(tiny_store).num_samples  # an epoch is one view of every sample, batches of 16
    steps = samples // 16 if samples > 16 else 1  # the loader drops a last short batch
    rows = {}
    for name, flags in (("default", ()), ("linear", ("--kd-schedule", "linear", "--kd-weight", "0.5"))):
        run_kdpc(*distill_args(tiny_store, tmp_path / name, *flags))
        rows[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    for epoch, row in enumerate(rows["linear"]):  # the epoch's mean of 0.5 (1 - (steps done / steps per epoch) / 2)
        expected = np.mean([0.5 * (1.0 - (epoch * steps + s) / steps / 2) for s in range(steps)])
        assert row["train/kd_weight"] == pytest.approx(expected, abs=1e-6)
    assert [row["train/kd_weight"] for row in rows["default"]] == [1.0, 1.0]
    # the same first step, then a smaller pull towards the teacher: the runs part
    assert rows["linear"][0]["loss/total"] != pytest.approx(rows["default"][0]["loss/total"], rel=1e-4)
    assert yaml.safe_load((tmp_path / "linear" / "config.yaml").read_text())["kd_schedule"] == "linear"
    with pytest.raises(KdpcError, match="--kd-schedule"):
        DistillConfig(records="x.zarr", kd_schedule="cosine")


def test_missing_records_argument_is_one_line(tmp_path):
    assert_one_line_error(run_kdpc("distill", "--out", str(tmp_path / "r"), check=False), "--records")
    assert_one_line_error(run_kdpc("distill", "--records", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "r"),
                                   check=False))


def test_views_option_uses_only_the_first_k_recorded_views(tiny_store):
    reader = RecordReader(str(tiny_store))
    data = tiny_train_set()
    two = RecordedViews(data, NO_POINT_AUG, seed=0, reader=reader, num_views=2)
    seen = set()
    for epoch in range(4):
        two.set_epoch(epoch)
        seen |= {item["record"] // len(data) for item in two.__getitems__(list(range(len(data))))}
    assert seen == {0, 1}
    with pytest.raises(KdpcError, match="holds 3 views"):
        RecordedViews(data, NO_POINT_AUG, seed=0, reader=reader, num_views=5)

"""`kdpc distill --num-points N`: a student reads the first N points of each view a teacher recorded at more."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import assert_one_line_error, record_tiny, run_kdpc
from kdpc.augment import AugmentConfig, ParamSpec, PointAugmentConfig, draw_params, params_at, replay_view
from kdpc.checkpoint import load_checkpoint
from kdpc.data import create_dataset
from kdpc.distill.dataset import RecordedViews, student_points
from kdpc.errors import KdpcError
from kdpc.store import RecordReader


def test_a_view_at_fewer_points_is_the_first_points_of_the_same_view():
    params = draw_params(AugmentConfig(), 11, np.arange(6), np.arange(6) % 3, stream="record", num_samples=6)
    full = create_dataset("synthetic", num_points=64, samples_per_class=1, num_raw_points=64)
    part = create_dataset("synthetic", num_points=24, samples_per_class=1, num_raw_points=64)
    for k in range(6):
        big, _ = replay_view(full, k, params_at(params, k))
        small, _ = replay_view(part, k, params_at(params, k))
        assert small.shape == (24, 3)
        np.testing.assert_array_equal(small, big[:24])


@pytest.fixture(scope="module")
def dense_store(tiny_teacher, tmp_path_factory):
    """The tiny teacher (trained at 32 points) recorded at all 64 raw points, 2 views."""
    return record_tiny(tiny_teacher, tmp_path_factory.mktemp("dense"), "--num-points", "64")


def test_the_student_replays_the_first_points_of_each_recorded_view(dense_store):
    reader = RecordReader(str(dense_store))
    assert reader.header.num_points == 64
    reader.load_all()
    cfg = reader.header.dataset.get("config", {})
    student_data = create_dataset("synthetic", num_points=32, **cfg)
    teacher_data = create_dataset("synthetic", num_points=64, **cfg)
    no_noise = PointAugmentConfig(jitter_sigma=0.0, shuffle=False)
    views = RecordedViews(student_data, no_noise, seed=3, reader=reader)
    samples = [0, 5, 9]
    items = views.__getitems__(samples)
    batch = reader.get(np.array([it["record"] for it in items]))
    for k, item in enumerate(items):
        recorded = {s.name: batch[s.name][k] for s in reader.header.params}
        teacher_view, _ = replay_view(teacher_data, samples[k], recorded)
        assert teacher_view.shape == (64, 3) and item["points"].shape == (32, 3)
        np.testing.assert_array_equal(item["points"], teacher_view[:32])
        np.testing.assert_array_equal(item["teacher_logprobs"], batch["logprobs"][k])
        assert item["teacher_logprobs"].shape == (reader.header.num_classes,)


def test_distill_reads_fewer_points_than_recorded_end_to_end(dense_store, tmp_path):
    proc = run_kdpc("distill", "--records", str(dense_store), "--num-points", "32", "--epochs", "1",
                    "--batch-size", "16", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert "reads the first 32 of the 64 points of each recorded view" in proc.stdout
    ckpt = load_checkpoint(tmp_path / "run" / "student.pt")
    assert ckpt.dataset["num_points"] == 32
    scored = json.loads(run_kdpc("eval", "--checkpoint", str(tmp_path / "run" / "student.pt"), "--json").stdout)
    assert 0.0 <= scored["oa"] <= 1.0 and scored["num_samples"] == 72


def test_distill_refuses_more_points_than_recorded_and_the_online_baseline(dense_store, tiny_teacher, tmp_path):
    proc = run_kdpc("distill", "--records", str(dense_store), "--num-points", "65", "--epochs", "1",
                    "--device", "cpu", "--out", str(tmp_path / "a"), check=False)
    assert_one_line_error(proc, "recorded at 64 points per view")
    proc = run_kdpc("distill", "--online-teacher", str(tiny_teacher), "--num-points", "16", "--epochs", "1",
                    "--device", "cpu", "--out", str(tmp_path / "b"), check=False)
    assert_one_line_error(proc, "--num-points is for offline distillation")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_fewer_points_are_refused_for_part_scene_and_mix_stores():
    plain = [ParamSpec("seed", (), "uint32")]
    cls = SimpleNamespace(task="cls", num_points=64, params=plain)
    assert student_points(cls, None, "s") is None and student_points(cls, 64, "s") is None
    assert student_points(cls, 16, "s") == 16
    for task in ("partseg", "semseg"):
        with pytest.raises(KdpcError, match="classification stores"):
            student_points(SimpleNamespace(task=task, num_points=64, params=plain), 16, "s")
    mix = SimpleNamespace(task="cls", num_points=64, params=[*plain, ParamSpec("partner", (), "int64")])
    with pytest.raises(KdpcError, match="mix views"):
        student_points(mix, 16, "s")
    with pytest.raises(KdpcError, match="at most"):
        student_points(cls, 0, "s")

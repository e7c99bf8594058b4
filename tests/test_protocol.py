"""The evaluation protocol: recorded views are never the teacher's training views, and no checkpoint is ever chosen
by its test score (validation split or last epoch only)."""

import json

import numpy as np
import pytest

from conftest import TINY_DATA_OPTS, assert_one_line_error, run_kdpc
from fixture_writers import write_modelnet40_h5
from kdpc.augment import AugmentConfig, draw_params
from kdpc.checkpoint import load_checkpoint
from kdpc.data import create_dataset, dataset_splits, has_validation
from kdpc.store import RecordReader


def _view_set(params: dict) -> set[bytes]:
    return {b"".join(np.ascontiguousarray(params[k][i]).tobytes() for k in sorted(params))
            for i in range(len(params["seed"]))}


@pytest.mark.parametrize("rotation", ["none", "so3"])
def test_record_stream_never_repeats_a_training_view_for_any_seed_pair(rotation):
    cfg = AugmentConfig(rotation=rotation)
    samples = np.arange(300)
    for train_seed, record_seed in [(0, 0), (1, 1), (0, 1), (7, 0)]:
        trained = _view_set(draw_params(cfg, train_seed, np.repeat(samples, 100), np.tile(np.arange(100), 300),
                                        stream="train"))  # 100 epochs
        recorded = _view_set(draw_params(cfg, record_seed, np.repeat(samples, 50), np.tile(np.arange(50), 300),
                                         stream="record"))  # 50 views
        assert len(trained) == 30000 and len(recorded) == 15000
        assert not trained & recorded, (train_seed, record_seed)
    # the same (seed, sample, view) in the same stream is the same view: replay stays exact
    a = draw_params(cfg, 3, samples, 2, stream="record")
    b = draw_params(cfg, 3, samples, 2, stream="record")
    assert _view_set(a) == _view_set(b)


def test_default_recording_holds_no_view_the_teacher_was_trained_on(tiny_teacher, tiny_store):
    views = load_checkpoint(tiny_teacher).provenance["training_views"]
    header = RecordReader(str(tiny_store)).header
    assert header.view_stream == "record" and views["stream"] == "train"
    num = header.num_samples
    batch = RecordReader(str(tiny_store)).get(np.arange(header.num_records))
    recorded = _view_set({p.name: batch[p.name] for p in header.params})
    trained = _view_set(draw_params(AugmentConfig.from_dict(views["augment"]), views["seed"],
                                    np.repeat(np.arange(num), views["epochs"]),
                                    np.tile(np.arange(views["epochs"]), num), stream="train"))
    assert len(recorded) == header.num_records
    assert not recorded & trained


def test_train_keeps_the_best_validation_epoch_and_scores_it_on_test_once(tmp_path):
    out = tmp_path / "t.pt"
    proc = run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "3", "--batch-size", "8",
                    "--device", "cpu", "--out", str(out))
    assert "checkpoint chosen by: best validation oa" in proc.stdout
    metrics = load_checkpoint(out).metrics
    val_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    val = [float(line.split("val/oa=")[1].split()[0]) for line in val_lines]
    assert len(val) == 3 and "test/" not in " ".join(val_lines)
    assert metrics["epoch"] == int(np.argmax(val)) + 1 and metrics["selected_by"] == "best val/oa"
    assert metrics["val/oa"] == pytest.approx(max(val), abs=1e-4)
    test = json.loads(run_kdpc("eval", "--model", str(out), "--json", "--device", "cpu").stdout)
    assert metrics["test/oa"] == pytest.approx(test["oa"])

    last = tmp_path / "last.pt"
    run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "2", "--batch-size", "8",
             "--device", "cpu", "--select", "last", "--out", str(last))
    assert load_checkpoint(last).metrics["epoch"] == 2
    assert load_checkpoint(last).metrics["selected_by"] == "last epoch"


def test_no_training_path_evaluates_the_test_split_before_the_choice_is_made(monkeypatch, tmp_path):
    import kdpc.training.evaluate as evaluation
    import kdpc.training.setup as setup
    from kdpc.training.train import TrainConfig, train

    calls = []
    original = evaluation.evaluate

    def spy(model, dataset, device, batch_size=64, workers=0):
        calls.append(dataset.split)
        return original(model, dataset, device, batch_size=batch_size, workers=workers)

    monkeypatch.setattr(evaluation, "evaluate", spy)
    monkeypatch.setattr(setup, "evaluate", spy)
    state, out = train(TrainConfig(model="pointnet-tiny", epochs=3, batch_size=8, device="cpu", num_points=32,
                                   dataset_cfg={"samples_per_class": 4, "num_raw_points": 64},
                                   out=str(tmp_path / "t.pt")), log=lambda line: None)
    assert calls == ["val", "val", "val", "test"]  # test once, at the end, on the chosen checkpoint
    assert state.best_metrics["test/oa"] == load_checkpoint(out).metrics["test/oa"]


def test_holdout_makes_a_deterministic_stratified_validation_split(tmp_path):
    root = tmp_path / "mn40"
    write_modelnet40_h5(root, n_train=120, n_test=8, num_points=64, seed=0)
    assert dataset_splits("modelnet40") == ("train", "test") and not has_validation("modelnet40")
    assert has_validation("modelnet40", {"holdout": 0.25})
    full = create_dataset("modelnet40", root=root, num_points=32)
    train = create_dataset("modelnet40", root=root, num_points=32, holdout=0.25)
    val = create_dataset("modelnet40", root=root, num_points=32, split="val", holdout=0.25)
    assert len(train) + len(val) == len(full) and train.config["holdout"] == 0.25
    seen = {p.tobytes() for p in train.points}
    assert not seen & {p.tobytes() for p in val.points}  # disjoint
    assert seen | {p.tobytes() for p in val.points} == {p.tobytes() for p in full.points}
    for c in np.unique(full.labels):  # stratified: a quarter of every class (rounded)
        assert (val.labels == c).sum() == round(0.25 * (full.labels == c).sum()) or (full.labels == c).sum() < 2
    again = create_dataset("modelnet40", root=root, num_points=32, split="val", **val.config)
    assert again.fingerprint() == val.fingerprint()
    assert train.fingerprint() != full.fingerprint()  # a teacher trained with a hold-out never records it


def test_dataset_without_validation_takes_the_last_epoch_unless_given_a_holdout(tmp_path):
    root = tmp_path / "mn40"
    write_modelnet40_h5(root, n_train=120, n_test=8, num_points=64, seed=0)
    base = ["train", "--model", "pointnet-tiny", "--dataset", "modelnet40", "--data-root", str(root), "--num-points",
            "32", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
    run_kdpc(*base, "--out", str(tmp_path / "a.pt"))
    assert load_checkpoint(tmp_path / "a.pt").metrics["selected_by"] == "last epoch"
    assert_one_line_error(run_kdpc(*base, "--select", "val", "--out", str(tmp_path / "b.pt"), check=False),
                          "holdout")
    run_kdpc(*base, "--dataset-opt", "holdout=0.25", "--out", str(tmp_path / "c.pt"))
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.metrics["selected_by"] == "best val/oa" and ckpt.dataset["config"]["holdout"] == 0.25
    assert ckpt.dataset["num_samples"] == 80
    store = tmp_path / "c.zarr"  # the teacher's records cover the reduced train split only
    run_kdpc("record", "--teacher", str(tmp_path / "c.pt"), "--data-root", str(root), "--views", "2",
             "--device", "cpu", "--out", str(store))
    assert RecordReader(str(store)).num_samples == 80

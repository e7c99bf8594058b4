"""`kdpc train` / `kdpc eval`: checkpoint contents, provenance and the metrics they report."""

import json

import torch

from conftest import TINY_DATA_OPTS, run_kdpc
from kdpc.checkpoint import load_checkpoint
from kdpc.data import create_dataset


def test_checkpoint_opens_weights_only_and_carries_provenance(tiny_teacher):
    raw = torch.load(tiny_teacher, weights_only=True)
    assert raw["format"] == "kdpc-checkpoint" and raw["arch"] == "pointnet-tiny"
    data = create_dataset("synthetic", num_points=32, samples_per_class=4, num_raw_points=64)
    assert raw["dataset"]["fingerprint"] == data.fingerprint()
    assert raw["dataset"]["num_points"] == 32 and raw["num_classes"] == 18
    assert raw["class_names"] == data.class_names
    assert set(raw["metrics"]) >= {"val/oa", "test/oa", "test/macc", "epoch", "selected_by"}
    views = raw["provenance"]["training_views"]  # what the teacher was fitted on, so kdpc record can avoid it
    assert views["stream"] == "train" and views["seed"] == 0 and views["augment"]["rotation"] == "none"
    model = load_checkpoint(tiny_teacher).build_model()
    assert not model.training
    assert model(torch.zeros(2, 32, 3)).shape == (2, 18)


def test_eval_json_reproduces_the_recorded_best_metrics(tiny_teacher):
    result = json.loads(run_kdpc("eval", "--model", str(tiny_teacher), "--json", "--device", "cpu").stdout)
    stored = load_checkpoint(tiny_teacher).metrics
    test_set = create_dataset("synthetic", split="test", num_points=32, samples_per_class=4, num_raw_points=64)
    assert result["num_samples"] == len(test_set)
    assert abs(result["oa"] - stored["test/oa"]) < 1e-9 and abs(result["macc"] - stored["test/macc"]) < 1e-9
    assert 0.0 <= result["oa"] <= 1.0


def test_yaml_config_with_cli_override(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: pointnet-tiny\nepochs: 5\nbatch_size: 8\nlr: 0.01\n")
    out = tmp_path / "m.pt"
    run_kdpc("train", "--config", str(cfg), "--epochs", "1", *TINY_DATA_OPTS, "--device", "cpu", "--out", str(out))
    ckpt = load_checkpoint(out)
    assert ckpt.provenance["config"]["epochs"] == 1  # the flag won over the file
    assert ckpt.provenance["config"]["lr"] == 0.01  # the file won over the default


def test_eval_dataset_opt_scores_other_data_than_the_checkpoints_own(tiny_teacher):
    from conftest import assert_one_line_error
    from kdpc.training.evaluate import evaluate

    model = load_checkpoint(tiny_teacher).build_model()
    other = create_dataset("synthetic", split="val", num_points=32, samples_per_class=6, num_raw_points=64)
    expected = evaluate(model, other, torch.device("cpu"))["oa"]
    single = json.loads(run_kdpc("eval", "--checkpoint", str(tiny_teacher), "--split", "val", "--dataset-opt",
                                 "samples_per_class=6", "--json", "--device", "cpu").stdout)
    assert single["num_samples"] == 6 * 18 and abs(single["oa"] - expected) < 1e-9
    pair = json.loads(run_kdpc("eval", "--checkpoint", str(tiny_teacher), "--checkpoint", str(tiny_teacher),
                               "--split", "val", "--dataset-opt", "samples_per_class=6", "--json").stdout)
    assert pair["num_samples"] == 6 * 18 and abs(pair["oa"] - expected) < 1e-9
    # null restores the dataset's own default for the option: the standard val split, 50 shapes a class
    standard = json.loads(run_kdpc("eval", "--checkpoint", str(tiny_teacher), "--split", "val", "--dataset-opt",
                                   "samples_per_class=null", "--json").stdout)
    assert standard["num_samples"] == 50 * 18
    assert_one_line_error(run_kdpc("eval", "--checkpoint", str(tiny_teacher), "--dataset-opt", "samples_per_class=0",
                                   check=False), "samples_per_class")
    assert_one_line_error(run_kdpc("eval", "--checkpoint", str(tiny_teacher), "--dataset-opt", "noise", check=False),
                          "--dataset-opt")

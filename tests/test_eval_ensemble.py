"""``kdpc eval`` of an ensemble of classifiers: each member's score, the ensemble's by the rule ``kdpc records merge``
records (the weighted mean of the probabilities), and bad input as one line."""

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_kdpc
from kdpc.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from kdpc.data import create_dataset
from kdpc.ensemble import mix_log_probs, parse_weights
from kdpc.errors import KdpcError
from kdpc.models import create_model
from kdpc.training.evaluate import class_log_probs

DATA = dict(samples_per_class=3, num_raw_points=64)


def _save(path, arch, data, seed, task="cls", num_classes=None):
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes or data.num_classes)
    return save_checkpoint(path, Checkpoint(
        arch=arch, model_config={}, num_classes=num_classes or data.num_classes, class_names=data.output_names,
        task=task, dataset=data.describe(), state_dict=model.state_dict()))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    data = create_dataset("synthetic", split="test", num_points=32, **DATA)
    folder = tmp_path_factory.mktemp("ens")
    return data, [_save(folder / f"m{seed}.pt", "pointnet-tiny", data, seed) for seed in (1, 2)]


def test_mix_log_probs_is_the_weighted_mean_of_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)) * 3
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    mixed = mix_log_probs(log_p, [0.75, 0.25])
    expected = np.log(0.75 * np.exp(log_p[0]) + 0.25 * np.exp(log_p[1]))
    np.testing.assert_allclose(mixed, expected, atol=1e-12)
    np.testing.assert_allclose(np.exp(mixed).sum(-1), 1.0, atol=1e-12)
    assert parse_weights("3,1", 2) == [0.75, 0.25] and parse_weights(None, 4) == [0.25] * 4
    with pytest.raises(KdpcError, match="--weights has 1 values for 2 checkpoints"):
        parse_weights("1", 2, "checkpoints")
    with pytest.raises(KdpcError, match="positive"):
        parse_weights("1,-1", 2)


def test_eval_scores_each_member_and_their_weighted_ensemble(members):
    data, paths = members
    out = json.loads(run_kdpc("eval", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1]),
                              "--weights", "3,1", "--json").stdout)
    assert out["model"] == "ensemble" and out["weights"] == [0.75, 0.25] and out["num_samples"] == len(data)
    scores = [class_log_probs(load_checkpoint(p).build_model(), data, torch.device("cpu")) for p in paths]
    labels = scores[0][1]
    for member, path, (log_p, _) in zip(out["members"], paths, scores):
        assert member["checkpoint"] == str(path)
        assert member["oa"] == pytest.approx(float((log_p.argmax(-1) == labels).mean()))
    mean_p = 0.75 * np.exp(scores[0][0]) + 0.25 * np.exp(scores[1][0])
    expected = float((mean_p.argmax(-1) == labels).mean())
    assert out["oa"] == pytest.approx(expected)
    # the two random members disagree, so the weights matter: the ensemble is not just the first member
    assert (scores[0][0].argmax(-1) != scores[1][0].argmax(-1)).any()
    text = run_kdpc("eval", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1])).stdout.splitlines()
    equal = float(((np.exp(scores[0][0]) + np.exp(scores[1][0])).argmax(-1) == labels).mean())
    assert len(text) == 3 and text[0].startswith("pointnet-tiny") and "(weight 0.5)" in text[0]
    assert text[2].startswith("ensemble of 2 on synthetic/test") and f"oa={equal:.4f}" in text[2]


def test_an_ensemble_of_one_checkpoint_twice_is_that_checkpoint(members):
    _, paths = members
    single = json.loads(run_kdpc("eval", "--checkpoint", str(paths[0]), "--json").stdout)
    twice = json.loads(run_kdpc("eval", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[0]), "--json").stdout)
    assert twice["oa"] == pytest.approx(single["oa"]) and twice["macc"] == pytest.approx(single["macc"])
    assert twice["members"][0]["oa"] == pytest.approx(single["oa"])


def test_bad_ensembles_are_one_line(members, tmp_path):
    data, paths = members
    assert_one_line_error(run_kdpc("eval", "--checkpoint", str(paths[0]), "--weights", "1", check=False),
                          "--weights is for an ensemble")
    assert_one_line_error(run_kdpc("eval", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1]),
                                   "--weights", "1", check=False), "--weights has 1 values for 2 checkpoints")
    parts = create_dataset("synthetic-parts", split="test", num_points=32, samples_per_class=1, num_raw_points=64)
    seg = _save(tmp_path / "seg.pt", "dgcnn-seg-tiny", parts, 0, task="partseg", num_classes=parts.num_parts)
    assert_one_line_error(run_kdpc("eval", "--checkpoint", str(paths[0]), "--checkpoint", str(seg), check=False),
                          "partseg model", "classifiers only")
    torch.manual_seed(0)
    renamed = save_checkpoint(tmp_path / "renamed.pt", Checkpoint(
        arch="pointnet-tiny", model_config={}, num_classes=data.num_classes, class_names=data.output_names[::-1],
        task="cls", dataset=data.describe(), state_dict=create_model("pointnet-tiny", num_classes=data.num_classes).state_dict()))
    assert_one_line_error(run_kdpc("eval", "--checkpoint", str(paths[0]), "--checkpoint", str(renamed), check=False),
                          "renamed.pt was trained on other classes")

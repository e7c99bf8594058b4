"""Mix views: recorded views whose points partly come from another sample, replayed exactly, with the CE target
split between the two labels in the proportion of their points."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_DATA_OPTS, run_kdpc
from kdpc.augment import AugmentConfig, draw_params, mixed_points, param_specs, replay_view
from kdpc.data import create_dataset
from kdpc.distill.losses import label_smoothing_ce
from kdpc.errors import KdpcError
from kdpc.store import RecordReader


def test_mix_views_draw_partners_among_the_other_samples_and_fractions_up_to_mix_max():
    cfg = AugmentConfig(mix=0.4, mix_max=0.3)
    samples = np.repeat(np.arange(50), 40)
    views = np.tile(np.arange(40), 50)
    p = draw_params(cfg, 7, samples, views, stream="record", num_samples=50)
    mixed = p["mix"] > 0
    assert abs(mixed.mean() - 0.4) < 0.03
    assert (p["partner"][mixed] != samples[mixed]).all() and (p["partner"][~mixed] == samples[~mixed]).all()
    assert 0 <= p["partner"].min() and p["partner"].max() < 50
    assert p["mix"].max() <= np.float16(0.3) and (p["mix"][~mixed] == 0).all()
    assert len(np.unique(p["partner"][mixed])) == 50  # every sample serves as a partner
    assert [s.name for s in param_specs(cfg)][-2:] == ["partner", "mix"]
    assert "mix" not in AugmentConfig().to_dict()  # stores without mix views keep their earlier header
    with pytest.raises(KdpcError, match="number of samples"):
        draw_params(cfg, 7, samples, views, stream="record")


def test_a_mix_view_is_the_two_samples_views_cut_at_the_mixed_fraction():
    data = create_dataset("synthetic", num_points=32, samples_per_class=2, num_raw_points=64)
    p = {k: v[0] for k, v in draw_params(AugmentConfig(mix=1.0), 3, np.array([5]), np.array([1]), stream="record",
                                         num_samples=len(data)).items()}
    n = mixed_points(p, 32)
    assert 1 <= n <= 16
    mixed, _ = replay_view(data, 5, p)
    plain = {**p, "mix": np.float16(0)}
    own, _ = replay_view(data, 5, plain)
    other, _ = replay_view(data, int(p["partner"]), plain)
    np.testing.assert_array_equal(mixed, np.concatenate([own[: 32 - n], other[:n]]))


def test_mixed_ce_weights_the_two_labels_by_their_points():
    logits = torch.randn(4, 5)
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 0, 1])
    lam = torch.tensor([0.0, 0.25, 0.5, 0.1])
    got = label_smoothing_ce(logits, a, 0.0, weight=1 - lam) + label_smoothing_ce(logits, b, 0.0, weight=lam)
    logp = logits.log_softmax(-1)
    want = -((1 - lam) * logp[range(4), a] + lam * logp[range(4), b]).mean()
    assert torch.allclose(got, want, atol=1e-6)


def test_record_mix_replays_exactly_and_distills(tiny_teacher, tmp_path):
    store = tmp_path / "m.zarr"
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "2", "--mix", "0.5", "--device", "cpu",
             "--out", str(store))
    header = RecordReader(str(store)).header
    assert header.augment["mix"] == 0.5 and [p.name for p in header.params][-2:] == ["partner", "mix"]
    verify = json.loads(run_kdpc("records", "verify", str(store), "--teacher", str(tiny_teacher), "--check", "64",
                                 "--json").stdout)
    assert verify["ok"] and not verify["problems"]
    run_kdpc("distill", "--records", str(store), "--epochs", "1", "--batch-size", "16", "--device", "cpu",
             "--out", str(tmp_path / "run"))
    proc = run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "1", "--out",
                    str(tmp_path / "t.pt"), "--config", str(_yaml(tmp_path, "augment:\n  mix: 0.5\n")), check=False)
    assert proc.returncode == 2 and "mix views are recorded views" in proc.stderr


def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path

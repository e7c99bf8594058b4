"""Classification stores that keep the teacher's embedding of every view (`kdpc record --feature-dim`), and the
student's embedding matched to it (`kdpc distill --feature-weight`, kdpc.distill.embedding)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_DATA_OPTS, assert_one_line_error, record_tiny, run_kdpc
from kdpc.augment import params_at, replay_view
from kdpc.checkpoint import load_checkpoint
from kdpc.distill.dataset import recorded_dataset
from kdpc.distill.embedding import EmbeddingProjector, embedding_contrast_loss
from kdpc.distill.trainer import FEATURE_WEIGHT
from kdpc.errors import KdpcError
from kdpc.recorder.seg import project_features
from kdpc.store import RecordReader, StoreHeader
from kdpc.store.schema import FEATURES, array_specs


@pytest.fixture(scope="module")
def feature_store(tiny_teacher, tmp_path_factory):
    """The tiny pointnet-tiny teacher (128-dim embedding) recorded with 16-dim (projected) embeddings."""
    return record_tiny(tiny_teacher, tmp_path_factory.mktemp("emb"), "--feature-dim", "16")


def test_cls_header_with_features_round_trips_and_stays_plain_without():
    h = StoreHeader(num_samples=5, num_views=2, num_classes=3, feature_dim=4)
    data = h.to_dict()
    assert data["feature_dim"] == 4 and data["feature_projection"] == {} and "num_anchors" not in data
    assert StoreHeader.from_dict(data).feature_shape == (4,)
    spec = next(s for s in array_specs(h) if s.name == FEATURES)
    assert spec.shape == (10, 4) and spec.dtype == "float16" and spec.dims == ("record", "feature")
    plain = StoreHeader(num_samples=5, num_views=2, num_classes=3).to_dict()
    assert not {"feature_dim", "feature_projection", "num_anchors"} & set(plain)
    with pytest.raises(KdpcError, match="num_anchors is for partseg"):
        StoreHeader(num_samples=5, num_views=2, num_classes=3, num_anchors=2, feature_dim=4)
    with pytest.raises(KdpcError, match="feature_projection needs feature_dim"):
        StoreHeader(num_samples=5, num_views=2, num_classes=3,
                    feature_projection={"kind": "gaussian", "seed": 0, "in_dim": 8, "out_dim": 4})


def test_recorded_embeddings_are_the_teachers_projected_embedding_of_the_replayed_view(tiny_teacher, feature_store):
    reader = RecordReader(str(feature_store))
    h = reader.header
    assert h.feature_dim == 16 and h.feature_projection["in_dim"] == 128 and h.feature_projection["out_dim"] == 16
    info = run_kdpc("records", "info", str(feature_store)).stdout
    assert "the teacher's embedding, 16 dims (random projection from 128, seed 0)" in info
    ckpt = load_checkpoint(tiny_teacher)
    model = ckpt.build_model("cpu").eval()
    dataset = recorded_dataset(h, str(feature_store))
    records = np.array([0, 7, h.num_records - 1])
    cols = reader.get(records)
    assert cols["features"].shape == (3, 16) and cols["features"].dtype == np.float32
    params = {spec.name: cols[spec.name] for spec in h.params}
    points = np.stack([replay_view(dataset, int(cols["sample"][k]), params_at(params, k))[0] for k in range(3)])
    with torch.inference_mode():
        feats = model.forward_features(torch.from_numpy(points).float())
        expected = project_features(feats, h).numpy()
        logprobs = F.log_softmax(model.forward_head(feats), -1).numpy()
    np.testing.assert_allclose(cols["features"], expected, rtol=2e-3, atol=2e-3)  # stored as float16
    assert np.abs(np.exp(cols["logprobs"]) - np.exp(logprobs)).max() < 0.01  # the u8log codec's resolution


def test_distill_matches_the_embedding_by_default_when_the_store_keeps_it(feature_store, tiny_teacher, tmp_path):
    out = tmp_path / "auto"
    proc = run_kdpc("distill", "--records", str(feature_store), "--epochs", "1", "--batch-size", "16",
                    "--device", "cpu", "--out", str(out))
    assert f"embedding matching: weight {FEATURE_WEIGHT:g}, the teacher's 16-dim embedding" in proc.stdout
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss/embedding"] > 0 and np.isfinite(row["loss/embedding"])
    last = load_checkpoint(out / "last.pt")
    assert set(last.training_state["extra"]["projector"]) == {"linear.weight", "linear.bias"}
    assert not any(k.startswith("linear.") for k in last.state_dict)  # the student alone is the deliverable
    student = load_checkpoint(out / "student.pt")
    assert student.build_model("cpu") is not None

    off = tmp_path / "off"
    run_kdpc("distill", "--records", str(feature_store), "--epochs", "1", "--batch-size", "16", "--device", "cpu",
             "--feature-weight", "0", "--out", str(off))
    assert "loss/embedding" not in json.loads((off / "metrics.jsonl").read_text().splitlines()[0])

    narrow = tmp_path / "narrow"  # a student narrower than the recorded embeddings: auto leaves the term off
    proc = run_kdpc("distill", "--records", str(feature_store), "--epochs", "1", "--batch-size", "16", "--device",
                    "cpu", "--set", "student_cfg.widths=[8,12]", "--out", str(narrow))
    assert "embedding matching off: pointnet-tiny's embedding (12) is narrower than the teacher's 16" in proc.stdout
    assert "loss/embedding" not in json.loads((narrow / "metrics.jsonl").read_text().splitlines()[0])

    plain_store = tmp_path / "plain.zarr"  # a store without embeddings: auto is off, asking for the term is one line
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "1", "--feature-dim", "0", "--device", "cpu",
             "--out", str(plain_store))
    assert RecordReader(str(plain_store)).header.feature_dim == 0
    plain = tmp_path / "plain"
    proc = run_kdpc("distill", "--records", str(plain_store), "--epochs", "1", "--device", "cpu", "--out", str(plain))
    assert "embedding matching" not in proc.stdout
    proc = run_kdpc("distill", "--records", str(plain_store), "--epochs", "1", "--device", "cpu", "--feature-weight",
                    "1", "--out", str(tmp_path / "asked"), check=False)
    assert_one_line_error(proc, "--feature-weight 1", "kdpc record --feature-dim")
    proc = run_kdpc("distill", "--records", str(feature_store), "--feature-weight", "-1", "--out",
                    str(tmp_path / "neg"), check=False)
    assert_one_line_error(proc, "--feature-weight must be a number >= 0")


def test_resume_continues_with_the_projector(feature_store, tmp_path):
    out = tmp_path / "run"
    args = ["distill", "--records", str(feature_store), "--batch-size", "16", "--device", "cpu", "--out", str(out)]
    run_kdpc(*args, "--epochs", "1")
    first = load_checkpoint(out / "last.pt").training_state["extra"]["projector"]["linear.weight"]
    run_kdpc(*args, "--epochs", "2", "--resume")
    second = load_checkpoint(out / "last.pt").training_state["extra"]["projector"]["linear.weight"]
    assert second.shape == first.shape and not torch.equal(first, second)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_online_baseline_matches_the_kdpc_teachers_own_embedding(tiny_teacher, tmp_path):
    out = tmp_path / "online"
    proc = run_kdpc("distill", "--online-teacher", str(tiny_teacher), "--epochs", "1", "--batch-size", "16",
                    "--device", "cpu", "--out", str(tmp_path / "default"))
    assert "embedding matching" not in proc.stdout  # the online baseline matches embeddings only when asked
    proc = run_kdpc("distill", "--online-teacher", str(tiny_teacher), "--feature-weight", "2", "--epochs", "1",
                    "--batch-size", "16", "--device", "cpu", "--out", str(out))
    assert "the teacher's 128-dim embedding" in proc.stdout
    assert "loss/embedding" in json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_record_refuses_embeddings_it_cannot_get(tiny_teacher, tmp_path):
    proc = run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "1", "--feature-dim", "-3", "--device",
                    "cpu", "--out", str(tmp_path / "neg.zarr"), check=False)
    assert_one_line_error(proc, "--feature-dim must be >= 0")
    assert not (tmp_path / "neg.zarr").exists()
    proc = run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "1", "--set", "anchors=4", "--device", "cpu",
                    "--out", str(tmp_path / "anch.zarr"), check=False)
    assert_one_line_error(proc, "--anchors is for part and scene teachers")
    scripted = tmp_path / "scripted.pt"
    model = load_checkpoint(tiny_teacher).build_model("cpu").eval()
    torch.jit.trace(model, torch.randn(2, 32, 3)).save(str(scripted))
    proc = run_kdpc("record", "--teacher", str(scripted), "--dataset", "synthetic", *TINY_DATA_OPTS, "--views", "1",
                    "--feature-dim", "8", "--device", "cpu", "--out", str(tmp_path / "ts.zarr"), check=False)
    assert_one_line_error(proc, "needs a kdpc checkpoint teacher", "--feature-dim 0")


@pytest.fixture(scope="module")
def second_store(tmp_path_factory):
    """Another teacher (seed 3) recorded on the same views as ``feature_store``, its 128-dim embedding projected to
    12 dims."""
    folder = tmp_path_factory.mktemp("second")
    other = folder / "teacher2.pt"
    run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "1", "--batch-size", "8", "--seed", "3",
             "--device", "cpu", "--out", str(other))
    second = folder / "second.zarr"
    run_kdpc("record", "--teacher", str(other), "--views", "2", "--feature-dim", "12", "--device", "cpu",
             "--out", str(second))
    return second


def test_ensembles_keep_the_answers_and_leave_the_embeddings_out(feature_store, second_store, tmp_path):
    second = second_store
    ens = tmp_path / "ens.zarr"
    proc = run_kdpc("records", "merge", str(feature_store), str(second), "--out", str(ens))
    assert "ensemble of 2 teachers" in proc.stdout and "the teachers' embeddings are left out" in proc.stdout
    merged = RecordReader(str(ens))
    assert merged.header.feature_dim == 0 and "feature_dim" not in merged.header.to_dict()
    cols = merged.get(np.arange(5))
    assert "features" not in cols
    a, b = RecordReader(str(feature_store)).get(np.arange(5)), RecordReader(str(second)).get(np.arange(5))
    mix = np.log(0.5 * np.exp(a["logprobs"]) + 0.5 * np.exp(b["logprobs"]))
    assert np.abs(np.exp(cols["logprobs"]) - np.exp(mix)).max() < 0.02  # the average of the two teachers' answers


def test_an_ensemble_keeps_one_members_embedding_when_asked(feature_store, second_store, tmp_path):
    ens = tmp_path / "ens.zarr"
    proc = run_kdpc("records", "merge", str(feature_store), str(second_store), "--embedding-from", str(second_store),
                    "--out", str(ens))
    assert f"the embedding is {second_store}'s" in proc.stdout
    merged, source = RecordReader(str(ens)), RecordReader(str(second_store))
    assert merged.header.feature_dim == 12 and merged.header.feature_projection == source.header.feature_projection
    assert merged.header.teacher["embedding_from"] == source.header.teacher["sha256"]
    records = np.arange(merged.header.num_records)
    np.testing.assert_array_equal(merged.get(records)["features"], source.get(records)["features"])  # as stored
    answers_only = RecordReader(str(feature_store)).get(records)
    assert not np.array_equal(merged.get(records)["logprobs"], answers_only["logprobs"])  # still the ensemble's
    info = run_kdpc("records", "info", str(ens)).stdout
    member_lines = [line for line in info.splitlines() if "weight 0.5" in line]
    assert len(member_lines) == 2 and "its embedding is stored" in member_lines[1]
    assert "its embedding is stored" not in member_lines[0]
    run = tmp_path / "run"  # a student matches that embedding (the store's 12 dims) and the ensemble's answers
    proc = run_kdpc("distill", "--records", str(ens), "--student", "pointnet-tiny", "--epochs", "1", "--batch-size",
                    "8", "--device", "cpu", "--out", str(run))
    assert "the teacher's 12-dim embedding of each view" in proc.stdout + proc.stderr
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["loss/embedding"] > 0 and last["loss/kd"] > 0


def test_embedding_from_refuses_what_it_cannot_keep(tiny_teacher, tiny_store, feature_store, second_store, tmp_path):
    plain = tmp_path / "plain.zarr"  # the first teacher on the same views, without its embedding
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "2", "--feature-dim", "0",
             "--device", "cpu", "--out", str(plain))
    cases = [((str(plain), str(second_store), "--embedding-from", str(plain)), "keeps no embedding"),
             ((str(feature_store), str(second_store), "--embedding-from", "elsewhere.zarr"), "is not one of the stores"),
             ((str(tiny_store), str(tiny_store), "--embedding-from", str(tiny_store)), "share one teacher"),
             ((str(tiny_store), str(feature_store)), "keep the teacher's features differently")]
    for args, fragment in cases:
        proc = run_kdpc("records", "merge", *args, "--out", str(tmp_path / "out.zarr"), check=False)
        assert_one_line_error(proc, fragment)
        assert not (tmp_path / "out.zarr").exists()


def test_record_keeps_the_embedding_by_default_for_kdpc_teachers_only(tiny_teacher, tiny_store, tmp_path):
    h = RecordReader(str(tiny_store)).header  # recorded without --feature-dim
    assert h.feature_dim == 128 and h.feature_projection == {}  # the 128-dim teacher is narrower than the default
    plain = tmp_path / "plain.zarr"  # an interrupted store without embeddings resumes as it was begun
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "2", "--feature-dim", "0", "--chunk-records", "64",
             "--device", "cpu", "--out", str(plain))
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "2", "--chunk-records", "64", "--device", "cpu",
             "--out", str(plain), "--resume")
    assert RecordReader(str(plain)).header.feature_dim == 0
    scripted = tmp_path / "scripted.pt"  # a foreign teacher gives class scores only: nothing to keep, no error
    model = load_checkpoint(tiny_teacher).build_model("cpu").eval()
    torch.jit.trace(model, torch.randn(2, 32, 3)).save(str(scripted))
    out = tmp_path / "ts.zarr"
    run_kdpc("record", "--teacher", str(scripted), "--dataset", "synthetic", *TINY_DATA_OPTS, "--views", "1",
             "--device", "cpu", "--out", str(out))
    assert RecordReader(str(out)).header.feature_dim == 0


def test_contrast_loss_is_infonce_over_the_batch():
    torch.manual_seed(0)
    teacher = torch.randn(6, 8)
    aligned = embedding_contrast_loss(teacher * 3.0, teacher, temperature=0.1)
    shuffled = embedding_contrast_loss(teacher[torch.tensor([1, 2, 3, 4, 5, 0])], teacher, temperature=0.1)
    assert aligned < 0.5 < shuffled
    s, t = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8)
    loss = embedding_contrast_loss(s, t, temperature=0.5)
    manual = F.cross_entropy(F.normalize(s, dim=-1) @ F.normalize(t, dim=-1).T / 0.5, torch.arange(6))
    assert torch.allclose(loss, manual)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert EmbeddingProjector(5, 7)(torch.randn(3, 5)).shape == (3, 7)
    with pytest.raises(KdpcError, match="one width"):
        embedding_contrast_loss(torch.randn(4, 3), torch.randn(4, 5))


def test_verify_with_the_teacher_recomputes_the_embeddings(tiny_teacher, feature_store, monkeypatch):
    proc = run_kdpc("records", "verify", str(feature_store), "--teacher", str(tiny_teacher), "--check", "20", "--json")
    report = json.loads(proc.stdout)
    assert report["ok"] and report["replay"]["checked"] == 20
    assert 0 <= report["replay"]["feature_max_abs_error"] < 0.01 and "embeddings max |error|" in report["replay"]["message"]

    import kdpc.recorder.seg as seg
    from kdpc.recorder.replay_check import replay_check

    honest = seg.teacher_cls_outputs

    def drifted(model, points, header):  # a store whose embeddings are not this teacher's
        out = honest(model, points, header)
        return {**out, "features": out["features"] + 0.05}

    monkeypatch.setattr(seg, "teacher_cls_outputs", drifted)
    result = replay_check(str(feature_store), str(tiny_teacher), 20, device="cpu")
    assert not result["ok"] and "OUTSIDE float16" in result["message"]

"""Offline SRKD on scenes: `kdpc record` of a scene teacher (ragged per-point outputs + anchor features), verify
--teacher, distill from the store alone, eval; integrity, resume, torchrun and sharing of scene stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, flip_a_bit, run_kdpc
from kdpc.checkpoint import load_checkpoint
from kdpc.data import create_dataset
from kdpc.distill.scene_views import SceneRecordedViews, collate_scene_records
from kdpc.recorder import RecordConfig, record
from kdpc.recorder.scenes import anchor_rows
from kdpc.scenes.transforms import SceneAugmentConfig, ScenePointAugmentConfig, replay_scene_view
from kdpc.store import RecordReader
from kdpc.store.schema import POINT_COUNT, POINT_OFFSET
from kdpc.testing.stores import store_contents
from kdpc.training.train import TrainConfig, train
from scene_fixture_writers import write_s3dis_pointcept
from test_record import KILL_AFTER_TWO_BLOCKS
from test_torchrun import ok, torchrun

ROOMS_CFG = {"rooms": 2, "density": 40.0}
ROOMS = ["--dataset-opt", "rooms=2", "--dataset-opt", "density=40", "--num-points", "600"]
RECORD = ["--views", "3", "--chunk-records", "2", "--batch-size", "2", "--set", "anchors=64", "--device", "cpu"]


def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scene-records")


@pytest.fixture(scope="module")
def teacher(work) -> Path:
    """`kdpc train --model ptv3-nano --dataset synthetic-rooms` on two tiny rooms for one epoch, in this process."""
    out = work / "teacher.pt"
    train(TrainConfig(model="ptv3-nano", dataset="synthetic-rooms", dataset_cfg=dict(ROOMS_CFG), num_points=600,
                      epochs=1, batch_size=2, device="cpu", out=str(out)), log=quiet)
    return out


@pytest.fixture(scope="module")
def store(teacher, work) -> Path:
    out = work / "rooms.zarr"
    record(RecordConfig(teacher=str(teacher), views=3, chunk_records=2, batch_size=2, anchors=64, device="cpu",
                        out=str(out)), log=quiet, show_progress=False)
    return out


def train_rooms():
    return create_dataset("synthetic-rooms", split="train", num_points=600, **ROOMS_CFG)


def test_scene_store_holds_exactly_the_replayed_views_points(store, teacher):
    reader = RecordReader(str(store))
    header = reader.header
    assert header.task == "semseg" and header.num_records == 6 and header.num_blocks == 3
    assert header.num_anchors == 64 and header.codec == "u8log:8"
    data = train_rooms()
    augment = SceneAugmentConfig.from_dict(header.augment)
    counts = reader.get(np.arange(6))[POINT_COUNT]
    everything = reader._encoded[POINT_OFFSET]  # the rows of a block start at block * chunk_records * N
    for r in range(6):
        view = reader.get_view(r)
        replayed = replay_scene_view(data, int(view["sample"]), {p.name: view[p.name] for p in header.params}, augment)
        assert view["logprobs"].shape == (replayed.num_points, 14) == (counts[r], 14)
        assert np.allclose(np.exp(view["logprobs"]).sum(-1), 1.0, atol=0.02)
        assert view["features"].shape == (64, header.feature_dim) and view["anchors"].max() < replayed.num_points
        block_first = (r // 2) * 2 * header.num_points
        assert everything[r] == block_first + (0 if r % 2 == 0 else counts[r - 1])
    # the stored answers are the teacher's on exactly those points: its argmax agrees almost everywhere
    model = load_checkpoint(teacher)
    assert model.task == "semseg"
    out = run_kdpc("records", "verify", str(store), "--teacher", str(teacher), "--check", "6").stdout
    assert "6 views" in out and "within the u8log:8 codec bound" in out and out.strip().endswith("OK")
    info = json.loads(run_kdpc("records", "info", str(store), "--json").stdout)
    assert info["points"] == int(counts.sum()) and 0 < info["output_bytes_per_point"] < 4


def test_distill_views_replay_the_store_and_online_views_are_the_same(store):
    reader = RecordReader(str(store))
    reader.load_all()
    data = train_rooms()
    noise = ScenePointAugmentConfig()
    offline = SceneRecordedViews(data, noise, seed=3, reader=reader)
    online = SceneRecordedViews(data, noise, seed=3, augment=SceneAugmentConfig.from_dict(reader.header.augment),
                                run_seed=reader.header.run_seed, num_views=3)
    for epoch in (0, 1, 2):
        offline.set_epoch(epoch)
        online.set_epoch(epoch)
        for i in range(len(data)):
            a, b = offline[i], online[i]
            assert a["record"] == b["record"]
            np.testing.assert_array_equal(a["coord"], b["coord"])
            np.testing.assert_array_equal(a["feat"], b["feat"])
            assert a["teacher_logprobs"].shape[0] == a["coord"].shape[0] and "teacher_logprobs" not in b
    # every view is used once per cycle of 3 epochs
    seen = {offline.set_epoch(e) or offline[0]["record"] for e in range(3)}
    assert seen == {0, 2, 4}
    batch = collate_scene_records([offline[0], offline[1]], num_anchors=64)
    m0 = int(batch["offset"][0])
    assert batch["teacher_logprobs"].shape == (int(batch["offset"][-1]), 14)
    assert batch["teacher_features"].shape == (2, 64, reader.header.feature_dim)
    rows = batch["anchor_rows"]
    assert (rows[0] < m0).all() and (rows[1] >= m0).all()
    expected, _ = anchor_rows(np.array([offline[0]["seed"], offline[1]["seed"]]), np.diff(batch["offset"], prepend=0),
                              64)
    np.testing.assert_array_equal(rows.numpy(), expected)


def test_rooms_record_verify_distill_eval_from_the_cli(teacher, work):
    out = work / "cli.zarr"
    log = run_kdpc("record", "--teacher", str(teacher), *RECORD, "--out", str(out)).stdout
    assert "store complete" in log
    text = run_kdpc("records", "info", str(out)).stdout
    assert "task semseg" in text and "bytes/point" in text and "anchors x 32 dims" in text
    run_kdpc("records", "verify", str(out), "--teacher", str(teacher))
    run_dir = work / "student"
    log = run_kdpc("distill", "--records", str(out), "--student", "pointunet-tiny", "--epochs", "2", "--batch-size",
                   "2", "--device", "cpu", "--out", str(run_dir)).stdout
    assert "chosen: epoch" in log and "test/miou=" in log
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/ce", "loss/kd", "loss/aff", "loss/cross", "train/acc", "train/agree"} <= set(lines[0])
    ckpt = load_checkpoint(run_dir / "student.pt")
    assert ckpt.task == "semseg" and ckpt.provenance["trained_by"] == "kdpc distill"
    result = json.loads(run_kdpc("eval", "--model", str(run_dir / "student.pt"), "--json").stdout)
    assert abs(result["miou"] - ckpt.metrics["test/miou"]) < 1e-12
    # the online baseline (the teacher beside the student) runs the same views; NWSD is for objects only
    online = work / "online"
    run_kdpc("distill", "--online-teacher", str(teacher), "--student", "pointunet-tiny", "--epochs", "1",
             "--batch-size", "2", "--set", "online_views=3", "--device", "cpu", "--out", str(online))
    assert "loss/kd" in (online / "metrics.jsonl").read_text()
    assert_one_line_error(run_kdpc("distill", "--records", str(out), "--student", "pointunet-tiny", "--nwsd-weight",
                                   "-0.2", "--out", str(work / "nwsd"), check=False), "self-distillation")
    assert_one_line_error(run_kdpc("distill", "--records", str(out), "--student", "pointnet-tiny",
                                   "--out", str(work / "cls"), check=False), "semseg")


def test_a_flipped_bit_in_a_scene_store_is_refused(store, work):
    damaged = work / "flipped.zarr"
    run_kdpc("records", "copy", str(store), str(damaged))
    flip_a_bit(damaged / "output" / "q")
    proc = run_kdpc("records", "verify", str(damaged), check=False)
    assert proc.returncode == 2 and "output/q" in proc.stdout + proc.stderr
    assert_one_line_error(run_kdpc("distill", "--records", str(damaged), "--student", "pointunet-tiny", "--out",
                                   str(work / "bad"), check=False))


def test_killed_scene_recording_resumes_into_the_same_store(teacher, store, work):
    killed = work / "killed.zarr"
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_TWO_BLOCKS, "record", "--teacher", str(teacher), *RECORD,
                           "--out", str(killed)], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert not json.loads(run_kdpc("records", "info", str(killed), "--json").stdout)["complete"]
    resumed = run_kdpc("record", "--teacher", str(teacher), *RECORD, "--out", str(killed), "--resume").stdout
    assert "already recorded" in resumed
    assert_same_arrays(store, killed)


def assert_same_arrays(one: Path, other: Path) -> None:
    (header_a, a), (header_b, b) = store_contents(one), store_contents(other)
    assert header_a == header_b and a.keys() == b.keys() and POINT_OFFSET in a and "output/q" in a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_two_rank_scene_store_equals_the_one_rank_store(teacher, store, work):
    out = work / "two.zarr"
    ok(torchrun("record", "--teacher", str(teacher), *RECORD, "--out", str(out), cwd=work))
    assert_same_arrays(store, out)


def test_convert_pack_merge_on_scene_stores(teacher, store, work):
    h5 = work / "rooms.h5"
    run_kdpc("records", "convert", str(store), str(h5))
    back = work / "back.zarr"
    run_kdpc("records", "convert", str(h5), str(back))
    a, b, c = (RecordReader(str(p)) for p in (store, h5, back))
    for r in range(6):
        va, vb, vc = a.get_view(r), b.get_view(r), c.get_view(r)
        for key in va:
            np.testing.assert_array_equal(va[key], vb[key], err_msg=key)
            np.testing.assert_array_equal(va[key], vc[key], err_msg=key)
    packed = work / "rooms.zarr.zip"
    run_kdpc("records", "pack", str(store), str(packed))
    assert run_kdpc("records", "verify", str(packed)).stdout.strip().endswith("OK")
    np.testing.assert_array_equal(RecordReader(str(packed)).get_view(5)["logprobs"], va["logprobs"])

    more = work / "seed1.zarr"
    run_kdpc("record", "--teacher", str(teacher), *RECORD[:1], "2", *RECORD[2:], "--seed", "1", "--out", str(more))
    merged = work / "merged.zarr"
    run_kdpc("records", "merge", str(store), str(more), "--out", str(merged))
    m, extra = RecordReader(str(merged)), RecordReader(str(more))
    assert m.num_views == 5 and m.num_records == 10
    # the merged store's view 3 + v of scene s is view v of the second store: same params, same rows
    for r in range(4):
        got, want = m.get_view(6 + r), extra.get_view(r)
        np.testing.assert_array_equal(got["logprobs"], want["logprobs"])
        np.testing.assert_array_equal(got["features"], want["features"])
        assert got["seed"] == want["seed"]
    out = run_kdpc("records", "verify", str(merged), "--teacher", str(teacher), "--check", "10").stdout
    assert "10 views" in out and out.strip().endswith("OK")


def test_s3dis_fixture_record_verify_distill_eval(tmp_path):
    root = write_s3dis_pointcept(tmp_path / "s3dis", areas=(1, 2, 5), rooms_per_area=2)
    data = ["--dataset", "s3dis", "--data-root", str(root), "--dataset-opt", "grid_size=0.1", "--num-points", "300"]
    teacher = tmp_path / "teacher.pt"
    run_kdpc("train", "--model", "ptv3-nano", *data, "--epochs", "1", "--batch-size", "2", "--device", "cpu",
             "--out", str(teacher))
    store = tmp_path / "s3dis.zarr"
    run_kdpc("record", "--teacher", str(teacher), "--data-root", str(root), "--views", "2", "--set", "anchors=32",
             "--device", "cpu", "--out", str(store))
    header = RecordReader(str(store)).header
    assert header.dataset["name"] == "s3dis" and header.num_records == 2 * 4  # areas 1 and 2 train, area 5 tests
    run_kdpc("records", "verify", str(store), "--teacher", str(teacher), "--data-root", str(root))
    run_dir = tmp_path / "student"
    run_kdpc("distill", "--records", str(store), "--data-root", str(root), "--student", "pointunet-tiny", "--epochs",
             "1", "--batch-size", "2", "--device", "cpu", "--out", str(run_dir))
    result = json.loads(run_kdpc("eval", "--model", str(run_dir / "student.pt"), "--data-root", str(root),
                                 "--json").stdout)
    assert result["num_samples"] == 2 and 0.0 <= result["miou"] <= 1.0
    # other data than the store's is refused before training
    other = write_s3dis_pointcept(tmp_path / "other", areas=(1, 2, 5), rooms_per_area=2, seed=1)
    assert_one_line_error(run_kdpc("distill", "--records", str(store), "--data-root", str(other), "--student",
                                   "pointunet-tiny", "--out", str(tmp_path / "x"), check=False), "not made from")


def test_minimal_scene_decoder_of_the_format_doc_reads_a_recorded_store(store):
    """record-format.md 10.1, run as written (plain zarr + numpy), gives the reader's log-probs of view 0."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "record-format.md").read_text()
    code = doc.split("### 10.1 Minimal decoder", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(code.replace('"scenes.zarr"', repr(str(store))), scope)  # noqa: S102 - our own documentation
    view = RecordReader(str(store)).get_view(0)
    np.testing.assert_allclose(scope["logprobs"], view["logprobs"], atol=1e-5)
    np.testing.assert_array_equal(scope["features"][: view["features"].shape[0]], view["features"])


def test_scene_srkd_terms_by_hand():
    """CE skips unlabelled points, the per-point KL covers every point of every view, a view smaller than M has its
    missing anchors masked, and the loss reaches the student and the projector."""
    import torch
    import torch.nn.functional as F

    from kdpc.distill.losses import kd_loss
    from kdpc.distill.seg import SrkdLoss
    from kdpc.models import create_model

    torch.manual_seed(0)
    student = create_model("pointunet-tiny", num_classes=5, in_channels=6, grid_size=0.1)
    counts = [40, 12]
    coord = torch.rand(sum(counts), 3)
    feat = torch.cat([coord, torch.rand(sum(counts), 3)], 1)
    offset = torch.tensor(np.cumsum(counts))
    segment = torch.randint(0, 5, (sum(counts),))
    segment[:7] = -1
    teacher = F.log_softmax(torch.randn(sum(counts), 5), -1)
    rows, _ = anchor_rows(np.array([1, 2], dtype=np.uint32), np.array(counts), 16)
    batch = {"segment": segment, "teacher_logprobs": teacher, "teacher_features": torch.randn(2, 16, 8),
             "anchor_rows": torch.from_numpy(rows)}
    loss = SrkdLoss({}, student.num_features, 8)
    logits, terms, total = loss.scene_forward(student, coord, feat, offset, batch)
    assert logits.shape == (52, 5) and {"ce", "kd", "aff", "cross"} <= set(terms)
    assert torch.allclose(terms["ce"], F.cross_entropy(logits[7:], segment[7:]))
    assert torch.allclose(terms["kd"], kd_loss(logits, teacher, 2.0))
    assert abs(float(terms["anchors_valid"]) - (16 + 12) / 32) < 1e-6  # the 12-point view has 12 anchors
    expected = terms["ce"] + 0.3 * terms["kd"] + terms["aff"] + 1e-3 * terms["cross"]
    assert torch.allclose(total, expected)
    total.backward()
    assert all(p.grad is not None for p in loss.projector.parameters())
    assert sum(float(p.grad.abs().sum()) for p in student.parameters() if p.grad is not None) > 0


def test_scene_runs_default_to_a_pointwise_temperature_of_one():
    from kdpc.distill.seg import SrkdConfig, srkd_options

    assert SrkdConfig.from_dict(srkd_options("semseg", {})).pointwise_temperature == 1.0
    assert SrkdConfig.from_dict(srkd_options("partseg", {})).pointwise_temperature == 2.0
    assert srkd_options("semseg", {"pointwise_temperature": 2.0})["pointwise_temperature"] == 2.0
    online = SrkdConfig.from_dict(srkd_options("semseg", {"affinity_weight": 3.0}, online=True))
    assert online.affinity_weight == 0.0 and online.cross_weight == 0.0 and not online.uses_features

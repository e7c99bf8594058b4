"""Part segmentation end to end from the CLI: train -> record (per-point outputs + anchor features) -> distill
with the SRKD terms -> eval (mIoU)."""

import json

import pytest

from conftest import assert_one_line_error, run_kdpc
from kdpc.checkpoint import load_checkpoint
from kdpc.store import RecordReader

PARTS = ["--dataset", "synthetic-parts", "--dataset-opt", "samples_per_class=4", "--dataset-opt",
         "num_raw_points=96", "--num-points", "48"]


@pytest.fixture(scope="module")
def seg_store(tmp_path_factory):
    work = tmp_path_factory.mktemp("seg")
    run_kdpc("train", "--model", "pointnet2-seg-tiny", *PARTS, "--epochs", "1", "--batch-size", "8", "--device", "cpu",
             "--out", str(work / "teacher.pt"))
    run_kdpc("record", "--teacher", str(work / "teacher.pt"), "--views", "2", "--device", "cpu",
             "--out", str(work / "parts.zarr"))
    return work


def test_seg_store_holds_per_point_outputs_and_anchor_features(seg_store):
    reader = RecordReader(str(seg_store / "parts.zarr"))
    header = reader.header
    assert header.task == "partseg" and header.codec.startswith("ptopk")
    batch = reader.get([0, 1, reader.num_records - 1])
    assert batch["logprobs"].shape == (3, 48, header.num_classes)
    assert batch["features"].shape == (3, header.num_anchors, header.feature_dim) and header.num_anchors > 0
    verify = json.loads(run_kdpc("records", "verify", str(seg_store / "parts.zarr"), "--teacher",
                                 str(seg_store / "teacher.pt"), "--check", "8", "--json").stdout)
    assert verify["ok"], verify


def test_seg_distill_trains_with_srkd_terms_and_evaluates_miou(seg_store, tmp_path):
    cfg = tmp_path / "srkd.yaml"
    cfg.write_text("srkd:\n  pointwise_weight: 0.3\n  affinity_weight: 1.0\n  cross_weight: 0.001\n")
    out = tmp_path / "run"
    run_kdpc("distill", "--records", str(seg_store / "parts.zarr"), "--student", "dgcnn-seg-tiny", "--epochs", "2",
             "--batch-size", "8", "--config", str(cfg), "--device", "cpu", "--out", str(out))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/ce", "loss/kd", "loss/aff", "loss/cross", "val/inst_miou", "val/cls_miou"} <= set(rows[-1])
    assert rows[-1]["loss/aff"] > 0 and rows[-1]["loss/kd"] > 0
    metrics = load_checkpoint(out / "student.pt").metrics
    assert metrics["epoch"] == max(rows, key=lambda r: r["val/inst_miou"])["epoch"]
    result = json.loads(run_kdpc("eval", "--model", str(out / "student.pt"), "--json", "--device", "cpu").stdout)
    assert result["inst_miou"] == pytest.approx(metrics["test/inst_miou"])
    assert load_checkpoint(out / "student.pt").task == "partseg"


def test_seg_distill_refuses_a_classification_kd_objective(seg_store, tmp_path):
    proc = run_kdpc("distill", "--records", str(seg_store / "parts.zarr"), "--student", "dgcnn-seg-tiny", "--epochs",
                    "1", "--kd-objective", "dist", "--device", "cpu", "--out", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "--kd-objective dist is for classification")
    proc = run_kdpc("distill", "--records", str(seg_store / "parts.zarr"), "--student", "dgcnn-seg-tiny", "--epochs",
                    "1", "--relation-weight", "1", "--device", "cpu", "--out", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "--relation-weight is for classification")
    proc = run_kdpc("distill", "--records", str(seg_store / "parts.zarr"), "--student", "dgcnn-seg-tiny", "--epochs",
                    "1", "--kd-schedule", "linear", "--device", "cpu", "--out", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "--kd-schedule linear is for classification")

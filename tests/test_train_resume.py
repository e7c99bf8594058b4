"""`kdpc train` writes X.last.pt, X.metrics.jsonl and X.curves.png next to X.pt, and `--resume` continues an
interrupted run to the same result as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_DATA_OPTS, assert_one_line_error, run_kdpc
from kdpc.checkpoint import load_checkpoint
from kdpc.errors import KdpcError
from kdpc.training.run_files import run_files, sidecar
from kdpc.training.train import TrainConfig, train

RUNS = {
    "objects": dict(model="pointnet-tiny", dataset_cfg={"samples_per_class": 4, "num_raw_points": 64}, num_points=32,
                    batch_size=8),
    "scenes": dict(model="ptv3-nano", dataset="synthetic-rooms", dataset_cfg={"rooms": 2, "density": 30.0},
                   num_points=400, batch_size=2),
}


class Interrupted(Exception):
    pass


def _stop_at(prefix: str):
    def log(line: str) -> None:
        if line.startswith(prefix):
            raise Interrupted(line)

    return log


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sidecar_names():
    assert sidecar(Path("runs/teacher.pt"), "last.pt") == Path("runs/teacher.last.pt")
    assert sidecar(Path("runs/teacher"), "metrics.jsonl") == Path("runs/teacher.metrics.jsonl")


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_resume_after_an_interruption_matches_an_uninterrupted_run(kind, tmp_path):
    common = dict(RUNS[kind], epochs=3, device="cpu")
    full = tmp_path / "full.pt"
    train(TrainConfig(**common, out=str(full)), log=lambda line: None)
    cut = tmp_path / "cut.pt"
    with pytest.raises(Interrupted):  # epoch 2 has trained; its snapshot is never written
        train(TrainConfig(**common, out=str(cut)), log=_stop_at("epoch 2/3"))
    assert load_checkpoint(run_files(cut)["last"]).training_state["epoch"] == 1
    lines = []
    train(TrainConfig(**common, out=str(cut), resume=True), log=lines.append)
    assert "resuming after epoch 1/3" in lines

    a, b = load_checkpoint(run_files(full)["last"]), load_checkpoint(run_files(cut)["last"])
    for name, value in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[name], value, rtol=1e-6, atol=1e-7, msg=name)
    ma, mb = _lines(run_files(full)["metrics"]), _lines(run_files(cut)["metrics"])
    assert [m["epoch"] for m in mb] == [1, 2, 3]
    for x, y in zip(ma, mb):
        for key in x:
            if key != "train_time_s":
                assert y[key] == pytest.approx(x[key], rel=1e-6, abs=1e-7), key
    best_a, best_b = load_checkpoint(full).metrics, load_checkpoint(cut).metrics
    assert best_a["epoch"] == best_b["epoch"] and best_a["selected_by"] == best_b["selected_by"]
    for key in best_a:
        if key.startswith("test/"):
            assert best_b[key] == pytest.approx(best_a[key], abs=1e-6), key
    assert run_files(cut)["curves"].stat().st_size > 1000


def test_a_run_without_resume_starts_over_and_resume_needs_a_snapshot(tmp_path):
    out = tmp_path / "m.pt"
    cfg = dict(RUNS["objects"], device="cpu", out=str(out))
    train(TrainConfig(**cfg, epochs=2), log=lambda line: None)
    train(TrainConfig(**cfg, epochs=1), log=lambda line: None)
    assert [m["epoch"] for m in _lines(run_files(out)["metrics"])] == [1]  # not appended to the old run
    proc = run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "1", "--device", "cpu",
                    "--out", str(tmp_path / "new.pt"), "--resume", check=False)
    assert_one_line_error(proc, "--resume", "new.last.pt", "does not exist")
    with pytest.raises(KdpcError, match="--resume: .*m.last.pt is a pointnet-tiny run"):
        train(TrainConfig(**dict(cfg, model="dgcnn-tiny"), epochs=2, resume=True), log=lambda line: None)

"""`kdpc record`: replay exactness, resume after kill -9, backend parity, integrity and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_line_error, flip_a_bit, run_kdpc
from kdpc.augment import AugmentConfig, draw_params
from kdpc.checkpoint import load_checkpoint
from kdpc.data import create_dataset
from kdpc.recorder.views import RecordViews
from kdpc.store import RecordReader, get_codec
from kdpc.testing.stores import store_contents
from kdpc.store.codecs import decoded_error_bound
from kdpc.store.schema import StoreHeader

TINY = dict(samples_per_class=4, num_raw_points=64)


def tiny_train_set():
    return create_dataset("synthetic", split="train", num_points=32, **TINY)


def test_store_is_view_major_with_params_from_seed_sample_view(tiny_store):
    reader = RecordReader(str(tiny_store))
    data = tiny_train_set()
    S, V = len(data), 3
    assert (reader.num_samples, reader.num_views, reader.num_records) == (S, V, S * V)
    batch = reader.get(np.arange(S * V))
    np.testing.assert_array_equal(batch["sample"], np.tile(np.arange(S), V))
    np.testing.assert_array_equal(batch["view"], np.repeat(np.arange(V), S))
    expected = draw_params(AugmentConfig(), 0, batch["sample"], batch["view"], stream="record")
    for name, values in expected.items():
        np.testing.assert_array_equal(batch[name], values)  # quantised before use, stored exactly
    assert reader.header.dataset["fingerprint"] == data.fingerprint()


def test_replayed_views_reproduce_the_recorded_teacher_outputs(tiny_store, tiny_teacher):
    reader = RecordReader(str(tiny_store))
    teacher = load_checkpoint(tiny_teacher).build_model()
    views = RecordViews(tiny_train_set(), AugmentConfig.from_dict(reader.header.augment), reader.header.run_seed)
    records = np.arange(reader.num_records)
    with torch.inference_mode():
        points = torch.from_numpy(np.stack([views[int(r)]["points"] for r in records]))
        replayed = F.log_softmax(teacher(points), dim=-1).double().numpy()
    stored = reader.get(records)["logprobs"].astype(np.float64)
    bound = decoded_error_bound(get_codec(reader.header.codec, reader.header.num_classes), replayed, stored)
    assert np.all(np.abs(replayed - stored) <= bound + 1e-4)
    # the top class survives decoding wherever the teacher's top-2 margin exceeds the codec's error on both (this
    # one-epoch teacher is near-uniform, so ties within the codec's resolution may flip)
    top2 = np.sort(replayed, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * (bound.max(axis=1) + 1e-4)
    assert (replayed.argmax(1) == stored.argmax(1))[clear].all()
    proc = run_kdpc("records", "verify", str(tiny_store), "--teacher", str(tiny_teacher), "--check", "100", "--json")
    report = json.loads(proc.stdout)
    assert report["ok"] and report["replay"]["checked"] == 100


def test_info_reports_counts_size_and_provenance(tiny_store, tiny_teacher):
    info = json.loads(run_kdpc("records", "info", str(tiny_store), "--json").stdout)
    assert info["records"] == 72 * 3 and info["views"] == 3 and info["classes"] == 18 and info["complete"]
    assert info["bytes_per_record"] == pytest.approx(info["bytes_on_disk"] / info["records"], abs=0.01)
    assert info["teacher"]["arch"] == "pointnet-tiny" and len(info["teacher"]["sha256"]) == 64
    assert info["dataset"]["fingerprint"] == tiny_train_set().fingerprint()
    reader = RecordReader(str(tiny_store))
    assert abs(info["teacher_accuracy"] - reader.teacher_accuracy()) < 1e-12
    text = run_kdpc("records", "info", str(tiny_store)).stdout
    assert "216 = 72 samples x 3 views" in text and "pointnet-tiny" in text
    assert "not this store's split" not in text  # recorded on the teacher's own training split


def test_info_says_when_the_teachers_scores_are_on_other_data(tiny_teacher, tmp_path):
    """A teacher recorded on data it was not trained on: its checkpoint scores are on its own data's splits."""
    store = tmp_path / "other-data.zarr"
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "1", "--dataset-opt", "samples_per_class=5",
             "--device", "cpu", "--out", str(store))
    teacher_data = load_checkpoint(tiny_teacher).dataset["fingerprint"]
    line = next(x for x in run_kdpc("records", "info", str(store)).stdout.splitlines() if x.startswith("teacher"))
    assert "test/oa=" in line and f"trained on data {teacher_data[:16]}…, not this store's split" in line


KILL_AFTER_TWO_BLOCKS = """
import os, signal, sys
from kdpc.store import RecordWriter
original = RecordWriter.write_block
done = []
def write_block(self, block, columns):
    original(self, block, columns)
    done.append(block)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
RecordWriter.write_block = write_block
from kdpc.cli import main
main(sys.argv[1:])
"""


def test_resume_after_sigkill_gives_identical_store(tiny_teacher, tmp_path):
    args = ["--teacher", str(tiny_teacher), "--views", "4", "--chunk-records", "32", "--batch-size", "16",
            "--device", "cpu"]
    clean = tmp_path / "clean.zarr"
    run_kdpc("record", *args, "--out", str(clean))
    killed = tmp_path / "killed.zarr"
    env = {**os.environ, "KDPC_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_TWO_BLOCKS, "record", *args, "--out", str(killed)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    # the half-finished store is recognisably incomplete, never mistaken for a finished one
    refused = run_kdpc("records", "info", str(killed), "--json", check=False)
    assert refused.returncode == 0 and not json.loads(refused.stdout)["complete"]
    assert_one_line_error(run_kdpc("distill", "--records", str(killed), "--out", str(tmp_path / "r"), check=False),
                          "incomplete")
    assert_one_line_error(run_kdpc("record", *args, "--out", str(killed), check=False), "--resume")
    resumed = run_kdpc("record", *args, "--out", str(killed), "--resume")
    assert "already recorded" in resumed.stdout
    (header_a, a), (header_b, b) = store_contents(clean), store_contents(killed)
    assert header_a == header_b and a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_zarr_and_h5_hold_identical_records(tiny_teacher, tmp_path):
    args = ["--teacher", str(tiny_teacher), "--views", "2", "--chunk-records", "64", "--device", "cpu"]
    run_kdpc("record", *args, "--out", str(tmp_path / "a.zarr"))
    run_kdpc("record", *args, "--out", str(tmp_path / "a.h5"))
    assert not (tmp_path / "a.h5.parts").exists()
    za, ha = RecordReader(str(tmp_path / "a.zarr")), RecordReader(str(tmp_path / "a.h5"))
    everything = np.arange(za.num_records)
    x, y = za.get(everything), ha.get(everything)
    assert x.keys() == y.keys()
    for name in x:
        np.testing.assert_array_equal(x[name], y[name], err_msg=name)
    assert store_contents(tmp_path / "a.zarr")[0] == store_contents(tmp_path / "a.h5")[0]
    assert run_kdpc("records", "verify", str(tmp_path / "a.h5")).stdout.strip().endswith("OK")


def test_a_flipped_bit_is_an_error_not_wrong_values(tiny_teacher, tmp_path):
    store = tmp_path / "flip.zarr"
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "2", "--device", "cpu", "--out", str(store))
    flip_a_bit(store / "output" / "q")
    proc = run_kdpc("records", "verify", str(store), check=False)
    assert proc.returncode == 2 and "output/q" in proc.stdout + proc.stderr
    assert_one_line_error(run_kdpc("distill", "--records", str(store), "--out", str(tmp_path / "r"), check=False))


def test_codec_choice_is_recorded(tiny_teacher, tmp_path):
    run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "1", "--codec", "f16", "--device", "cpu",
             "--out", str(tmp_path / "f16.zarr"))
    assert RecordReader(str(tmp_path / "f16.zarr")).header.codec == "f16"
    proc = run_kdpc("record", "--teacher", str(tiny_teacher), "--codec", "bogus", "--out", str(tmp_path / "x.zarr"),
                    check=False)
    assert_one_line_error(proc, "bogus")
    assert not (tmp_path / "x.zarr").exists()


def test_bad_input_is_one_line_and_writes_nothing(tiny_teacher, tiny_store, tmp_path):
    out = str(tmp_path / "s.zarr")
    assert_one_line_error(run_kdpc("record", "--teacher", str(tmp_path / "missing.pt"), "--out", out, check=False),
                          "does not exist")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    assert_one_line_error(run_kdpc("record", "--teacher", str(junk), "--out", out, check=False), "not a kdpc checkpoint")
    # a dataset the teacher was not trained for
    assert_one_line_error(run_kdpc("record", "--teacher", str(tiny_teacher), "--dataset", "synthetic-parts",
                                   "--out", out, check=False))
    # an output folder that cannot be created (its parent is a file)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run_kdpc("record", "--teacher", str(tiny_teacher), "--out", str(blocker / "s.zarr"),
                                   check=False))
    # an existing store is never silently replaced
    assert_one_line_error(run_kdpc("record", "--teacher", str(tiny_teacher), "--views", "3", "--chunk-records", "64",
                                   "--out", str(tiny_store), check=False), "--resume", "--overwrite")
    assert_one_line_error(run_kdpc("record", "--teacher", str(tiny_teacher), "--resume", "--overwrite", "--out", out,
                                   check=False), "exclude")
    assert not Path(out).exists()

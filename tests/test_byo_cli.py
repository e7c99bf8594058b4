"""Issue 15, end to end from the CLI: record + verify + distill with teachers of an architecture kdpc does not know
(TorchScript, torch.export, ONNX, and a package.module:fn factory taking [B, 3, N] and returning a dict), over a
`folder` dataset of mixed .ply / .off / .npy files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from byo import FOLDER_OPTS, kdpc, make_folder_dataset, ok, save_teacher_formats, write_teacher_module
from conftest import assert_one_line_error
from kdpc.store import RecordReader

MODULE = "byo_cli_teachers"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    write_teacher_module(root, MODULE)
    make_folder_dataset(root / "data")
    files = save_teacher_formats(root, MODULE)
    yield root, files
    sys.modules.pop(MODULE, None)


@pytest.fixture()
def in_workdir(workdir, monkeypatch, tmp_path):
    root, files = workdir
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the factory import adds the cwd; undone after the test
    monkeypatch.setenv("KDPC_CACHE_DIR", str(tmp_path / "cache"))
    return root, files


TEACHERS = {
    "torchscript": ["--teacher", "teacher.ts"],
    "export": ["--teacher", "teacher.pt2"],
    "onnx": ["--teacher", "teacher.onnx"],
    "factory": ["--teacher", f"{MODULE}:build_conv", "--teacher-weights", "conv_weights.pt", "--teacher-opt",
                "width=16", "--adapter", "layout=BCN", "--adapter", "output=logits"],
}


@pytest.mark.parametrize("kind", sorted(TEACHERS))
def test_record_verify_distill_with_a_foreign_teacher(kind, in_workdir, tmp_path):
    if kind == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    root, files = in_workdir
    store = tmp_path / f"{kind}.zarr"
    teacher = TEACHERS[kind]
    proc = ok("record", *teacher, *FOLDER_OPTS, "--data-root", "data", "--views", "2", "--codec", "f32",
              "--device", "cpu", "--out", store)
    assert "store complete" in proc.stdout
    header = RecordReader(str(store)).header
    assert header.teacher["format"] == kind and header.num_classes == 2
    assert header.class_names == ["ball", "box"] and header.teacher["class_names_from"] == "dataset"
    assert header.dataset["name"] == "folder" and header.num_samples == 2 * 2 * 4  # 2 classes x 2 x 4 files
    if kind == "factory":
        assert header.teacher["adapter"]["layout"] == "BCN" and header.teacher["adapter"]["output"] == "logits"
        assert header.teacher["factory"] == f"{MODULE}:build_conv" and len(header.teacher["sha256"]) == 64
    # the stored outputs are the teacher's own log-probs on the replayed views (f32: exact up to float rounding)
    verify_args = [a for a in teacher if a not in ("--adapter", "layout=BCN", "output=logits")]
    report = json.loads(ok("records", "verify", store, *verify_args, "--check", "12", "--data-root", "data",
                           "--json").stdout)
    assert report["ok"] and report["replay"]["checked"] == 12 and report["replay"]["max_abs_error"] < 1e-4
    run = tmp_path / f"run-{kind}"
    ok("distill", "--records", store, "--data-root", "data", "--model", "pointnet-tiny", "--epochs", "1",
       "--batch-size", "4", "--device", "cpu", "--out", run)
    assert (run / "student.pt").is_file() and (run / "metrics.jsonl").is_file()


def test_torchscript_and_export_versions_record_the_same_outputs(in_workdir, tmp_path):
    """Fidelity: the same model as TorchScript and as torch.export gives the same teacher outputs (f32 codec:
    the stored log-probs are the teacher's before any lossy encoding)."""
    stores = {}
    for kind in ("torchscript", "export"):
        stores[kind] = tmp_path / f"{kind}.zarr"
        ok("record", *TEACHERS[kind], *FOLDER_OPTS, "--data-root", "data", "--views", "3", "--codec", "f32",
           "--device", "cpu", "--out", stores[kind])
    a, b = (RecordReader(str(stores[k])) for k in ("torchscript", "export"))
    records = np.arange(a.num_records)
    diff = np.abs(a.get(records)["logprobs"] - b.get(records)["logprobs"])
    assert diff.max() <= 1e-5
    # and both equal the eager model on the same views
    from kdpc.data import create_dataset
    from kdpc.recorder.views import RecordViews
    from kdpc.augment import AugmentConfig

    data = create_dataset("folder", root="data", num_raw_points=64, num_points=32)
    views = RecordViews(data, AugmentConfig(), 0)
    with torch.inference_mode():
        eager = torch.log_softmax(in_workdir[1]["module"](torch.from_numpy(np.stack(
            [views[int(r)]["points"] for r in records]))), -1).numpy()
    assert np.abs(eager - a.get(records)["logprobs"]).max() <= 1e-5


def test_online_distillation_with_a_foreign_teacher(in_workdir, tmp_path):
    run = tmp_path / "online"
    ok("distill", "--online-teacher", "teacher.ts", "--online-dataset", "folder", "--set",
       "online_dataset.config.num_raw_points=64", "--set", "online_dataset.num_points=32", "--data-root", "data",
       "--set", "online_views=2", "--model", "pointnet-tiny", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
       "--out", run)
    ckpt = torch.load(run / "student.pt", weights_only=True)
    assert ckpt["provenance"]["source"]["teacher_format"] == "torchscript"
    # a foreign online teacher without a dataset: one line, no run folder
    proc = kdpc("distill", "--online-teacher", "teacher.ts", "--data-root", "data", "--device", "cpu",
                "--out", tmp_path / "nodata")
    assert_one_line_error(proc, "--online-dataset")
    assert not (tmp_path / "nodata").exists()


def test_the_real_cli_finds_the_factory_in_the_current_folder(workdir, tmp_path):
    """A fresh interpreter that, like the installed `kdpc` script, does not put the working directory on sys.path
    (-P): package.module:fn still resolves from it."""
    root, _ = workdir
    store = tmp_path / "s.zarr"
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "KDPC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-P", "-m", "kdpc", "record", *TEACHERS["factory"], *FOLDER_OPTS,
                           "--data-root", "data", "--views", "1", "--device", "cpu", "--out", str(store)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert RecordReader(str(store)).header.teacher["format"] == "factory"

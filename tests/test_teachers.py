"""kdpc.teachers: formats recognised by content, the adapter (layout, channels, output, class order, normalisation),
and one clear line for every file kdpc cannot run as a teacher."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from torch import nn

from byo import FOLDER_OPTS, kdpc, make_folder_dataset, save_teacher_formats, write_teacher_module
from conftest import assert_one_line_error, run_kdpc
from kdpc.checkpoint import Checkpoint, save_checkpoint
from kdpc.data import PointCloudDataset, create_dataset
from kdpc.errors import KdpcError
from kdpc.models import create_model
from kdpc.teachers import TeacherAdapter, load_teacher

MODULE = "byo_teacher_zoo"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    write_teacher_module(root, MODULE)
    make_folder_dataset(root / "data", per_class={"train": 1, "test": 1})
    files = save_teacher_formats(root, MODULE)
    yield root, files
    sys.modules.pop(MODULE, None)


def small_data(n: int = 6, normals: bool = False, names=("ball", "box")) -> PointCloudDataset:
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((n, 40, 6 if normals else 3)).astype(np.float32)
    return PointCloudDataset(name="tiny", split="train", task="cls", class_names=list(names), points=pts,
                             labels=np.arange(n) % len(names), num_points=32)


def views(data: PointCloudDataset, n: int | None = None) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(data.points[: n or len(data), : data.num_points]))


@pytest.mark.parametrize("kind, disguise", [("torchscript", "model.bin"), ("export", "weights.pt"),
                                            ("onnx", "teacher.pt")])
def test_formats_are_recognised_by_content_and_match_the_eager_model(zoo, tmp_path, kind, disguise):
    if kind == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    _, files = zoo
    path = tmp_path / disguise
    shutil.copy(files[kind], path)
    data = small_data(5)
    teacher = load_teacher(str(path)).bind(data)
    assert teacher.format == kind and teacher.class_names == ["ball", "box"] and teacher.class_names_from == "dataset"
    with torch.inference_mode():
        got = teacher(views(data))
        expected = torch.log_softmax(files["module"](views(data)), -1)
    assert torch.allclose(got, expected, atol=1e-5)
    prov = teacher.provenance()
    assert prov["format"] == kind and prov["file"] == disguise and len(prov["sha256"]) == 64
    assert prov["adapter"] == TeacherAdapter().to_dict()


def test_layout_dict_output_and_missing_adapter(zoo):
    _, files = zoo
    conv, data = files["conv"], small_data()
    with pytest.raises(KdpcError, match=r"returns a dict \(keys logits, features\).*output=logits"):
        load_teacher(conv, adapter={"layout": "BCN"}).bind(data)
    with pytest.raises(KdpcError, match=r"failed on input \[2, 32, 3\].*layout BNC"):
        load_teacher(conv, adapter={"output": "logits"}).bind(data)  # [B, N, C] into a Conv1d over C
    teacher = load_teacher(conv, adapter={"layout": "bcn", "output": "logits"}).bind(data)
    with torch.inference_mode():
        expected = torch.log_softmax(conv(views(data).transpose(1, 2))["logits"], -1)
        assert torch.allclose(teacher(views(data)), expected, atol=1e-6)


class Recorder(nn.Module):
    """Returns fixed class scores; remembers what it was fed."""

    def __init__(self, scores: torch.Tensor, kind: str = "logits") -> None:
        super().__init__()
        self.scores, self.kind, self.seen = scores, kind, []

    def forward(self, x):
        self.seen.append(x.clone())
        s = self.scores[: x.shape[0]]
        return torch.softmax(s, -1) if self.kind == "probs" else torch.log_softmax(s, -1) if self.kind == "lp" else s


def test_output_types_class_order_channels_and_normalisation():
    scores = torch.tensor([[2.0, -1.0, 0.5]] * 6)
    data = small_data(6, normals=True, names=("a", "b", "c"))
    expected = torch.log_softmax(scores, -1)
    for kind, output_type in (("logits", "logits"), ("probs", "probs"), ("lp", "log_probs")):
        teacher = load_teacher(Recorder(scores, kind), adapter={"output_type": output_type}).bind(data)
        assert torch.allclose(teacher(views(data)), expected, atol=1e-5), kind
    # the teacher's classes in another order: reordered to the data's order
    teacher = load_teacher(Recorder(scores), adapter={"class_names": ["c", "a", "b"]}).bind(data)
    assert teacher.class_names == ["a", "b", "c"] and teacher.class_names_from == "adapter"
    assert torch.allclose(teacher(views(data)), expected[:, [1, 2, 0]], atol=1e-6)
    with pytest.raises(KdpcError, match="not the classes of dataset"):
        load_teacher(Recorder(scores), adapter={"class_names": ["a", "b", "z"]}).bind(data)
    with pytest.raises(KdpcError, match="3 class scores but dataset tiny has 2"):
        load_teacher(Recorder(scores)).bind(small_data(6))
    # channels: normals reach the teacher; a dataset without them is one line
    rec = Recorder(scores)
    teacher = load_teacher(rec, adapter={"channels": "xyz+normals", "layout": "BCN"}).bind(data)
    teacher(views(data))
    assert rec.seen[-1].shape == (6, 6, 32)
    assert torch.equal(rec.seen[-1][:, 3:], views(data)[..., 3:].transpose(1, 2))
    with pytest.raises(KdpcError, match="has channels xyz but normals is wanted"):
        load_teacher(rec, adapter={"channels": "xyz+normals"}).bind(small_data(6, names=("a", "b", "c")))
    # normalisation: unit sphere per view, then scale
    rec = Recorder(scores)
    teacher = load_teacher(rec, adapter={"normalize": "unit_sphere", "scale": 2.0}).bind(data)
    x = views(data) * 3.0 + 1.0
    teacher(x)
    fed = rec.seen[-1]
    assert torch.allclose(fed.mean(1), torch.zeros(6, 3), atol=1e-5)
    assert torch.allclose(fed.norm(dim=-1).amax(1), torch.full((6,), 2.0), atol=1e-5)


def test_a_fixed_batch_export_runs_in_padded_chunks(zoo, tmp_path):
    _, files = zoo
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(files["module"], (torch.randn(3, 32, 3),)), str(path))
    data = small_data(7)
    teacher = load_teacher(str(path)).bind(data)
    with torch.inference_mode():
        got = teacher(views(data))  # 7 views through a program made for exactly 3
        expected = torch.log_softmax(files["module"](views(data)), -1)
    assert got.shape == (7, 2) and torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(KdpcError, match="takes exactly 32 points per cloud; record with --num-points 32"):
        load_teacher(str(path)).bind(PointCloudDataset(
            name="tiny", split="train", task="cls", class_names=["a", "b"], points=np.zeros((4, 40, 3), np.float32),
            labels=np.zeros(4), num_points=20))


class _Exploit:
    def __reduce__(self):
        return (print, ("EXPLOIT RAN",))


class Whole(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)


def test_files_kdpc_cannot_run_get_one_line_naming_what_it_saw(zoo, tmp_path, monkeypatch):
    root, files = zoo
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("KDPC_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "never.zarr"
    args = [*FOLDER_OPTS, "--data-root", "data", "--device", "cpu", "--out", out]
    state = files["conv"].state_dict()
    cases = {
        "pointmlp.pth": ({"net": {f"module.{k}": v for k, v in state.items()}, "epoch": 3, "acc": np.float64(91.5),
                          "best_test_acc": np.float64(92.0)}, ["official PointMLP", "--teacher-weights", "'net'"]),
        "bare.pt": (state, ["bare state dict", "--teacher your_module:build_fn"]),
        "evil.pt": ({"payload": _Exploit()}, ["refused by a weights-only load", "builtins.print"]),
        "whole.pt": (Whole(), ["Whole", "state_dict()", "torch.jit.script"]),
    }
    for name, (payload, fragments) in cases.items():
        torch.save(payload, tmp_path / name)
        proc = kdpc("record", "--teacher", tmp_path / name, *args)
        assert_one_line_error(proc, *fragments)
        assert "EXPLOIT RAN" not in proc.stdout + proc.stderr
    (tmp_path / "notes.txt").write_text("my teacher is the best\n")
    assert_one_line_error(kdpc("record", "--teacher", tmp_path / "notes.txt", *args), "text file",
                          "not a kdpc checkpoint", "'my teacher is the best'")
    # factories: a missing module, a missing function, weights that do not fit, a result that is no module
    assert_one_line_error(kdpc("record", "--teacher", "no_such_pkg.models:build", *args),
                          "no module named 'no_such_pkg'")
    assert_one_line_error(kdpc("record", "--teacher", f"{MODULE}:nothing", *args), "has no function 'nothing'")
    assert_one_line_error(kdpc("record", "--teacher", f"{MODULE}:build_conv", "--teacher-weights", tmp_path / "bare.pt",
                               "--teacher-opt", "width=8", *args),
                          "do not fit", "conv.0.weight [16, 3, 1] in the weights vs [8, 3, 1] in the model", "--teacher-opt")
    assert_one_line_error(kdpc("record", "--teacher", f"{MODULE}:build_tiny", "--teacher-weights", tmp_path / "bare.pt",
                               *args), "do not fit", "4 missing (e.g. mlp.0.bias", "4 unexpected (e.g. conv.0.bias")
    assert_one_line_error(kdpc("record", "--teacher", "teacher.ts", "--teacher-weights", tmp_path / "bare.pt", *args),
                          "--teacher-weights goes with --teacher package.module:build_fn")
    # the PointMLP repo's checkpoint works as the weights of a factory (state dict under 'net', DataParallel prefix)
    proc = kdpc("record", "--teacher", f"{MODULE}:build_conv", "--teacher-weights", tmp_path / "pointmlp.pth",
                "--adapter", "layout=BCN", "--adapter", "output=logits", "--views", "1", *args)
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(out)
    # a teacher of another task, another width, and a foreign teacher for part segmentation
    assert_one_line_error(kdpc("record", "--teacher", "teacher.ts", "--dataset", "synthetic", "--dataset-opt",
                               "samples_per_class=1", "--device", "cpu", "--out", out), "2 class scores", "18 classes")
    assert_one_line_error(kdpc("record", "--teacher", "teacher.ts", "--dataset", "synthetic-parts", "--dataset-opt",
                               "samples_per_class=1", "--device", "cpu", "--out", out), "classification stores only")
    assert_one_line_error(kdpc("record", "--teacher", "teacher.ts", "--device", "cpu", "--out", out), "--dataset NAME")
    assert not out.exists()


def test_a_kdpc_checkpoint_is_still_a_teacher_and_takes_no_adapter(tmp_path):
    data = create_dataset("synthetic", samples_per_class=1, num_raw_points=64, num_points=32)
    model = create_model("pointnet-tiny", num_classes=data.num_classes)
    ckpt = save_checkpoint(tmp_path / "t.pt", Checkpoint(
        arch="pointnet-tiny", model_config={}, num_classes=data.num_classes, class_names=data.class_names,
        task="cls", dataset=data.describe(), state_dict=model.state_dict()))
    teacher = load_teacher(str(ckpt)).bind(data)
    assert teacher.format == "kdpc" and teacher.provenance()["arch"] == "pointnet-tiny"
    with pytest.raises(KdpcError, match="needs no adapter"):
        load_teacher(str(ckpt), adapter={"layout": "BCN"})


def test_the_real_cli_prints_one_line_for_an_official_pointmlp_checkpoint(tmp_path):
    path = tmp_path / "best_checkpoint.pth"
    torch.save({"net": {"module.classifier.weight": torch.zeros(2, 2)}, "epoch": 200,
                "acc": np.float64(94.1), "best_test_acc": np.float64(94.5)}, path)
    proc = run_kdpc("record", "--teacher", str(path), "--dataset", "synthetic", "--out", str(tmp_path / "s.zarr"),
                    check=False)
    assert_one_line_error(proc, "official PointMLP", "--teacher your_module:build_fn", "--teacher-weights")
    assert not (tmp_path / "s.zarr").exists()


def test_a_torch_export_archive_with_pickled_objects_is_refused_not_executed(zoo, tmp_path, capsys):
    """torch.export.load itself falls back to a full unpickle for some entries; kdpc loads .pt2 files weights-only."""
    import io
    import zipfile

    _, files = zoo
    payload = io.BytesIO()
    torch.save(((_Exploit(),), {}), payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(files["export"]) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else data)
    with pytest.raises(KdpcError, match="torch.export program holding pickled Python objects"):
        load_teacher(str(evil))
    assert "EXPLOIT RAN" not in capsys.readouterr().out
    assert load_teacher(str(files["export"])).format == "export"  # torch.load is itself again afterwards
    assert torch.load.__module__ == "torch.serialization"


def test_factory_weights_from_safetensors(zoo, tmp_path, monkeypatch):
    safetensors = pytest.importorskip("safetensors.torch")
    root, files = zoo
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "conv.safetensors"
    safetensors.save_file(files["conv"].state_dict(), str(path))
    data = small_data(4)
    teacher = load_teacher(f"{MODULE}:build_conv", weights=str(path), adapter={"layout": "BCN", "output": "logits"})
    teacher.bind(data)
    with torch.inference_mode():
        expected = torch.log_softmax(files["conv"](views(data).transpose(1, 2))["logits"], -1)
        assert torch.allclose(teacher(views(data)), expected, atol=1e-6)
    prov = teacher.provenance()
    assert prov["format"] == "factory" and prov["weights"] == "conv.safetensors" and prov["factory_args"] == {}

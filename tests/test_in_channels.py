"""Extra input channels end to end: models take `in_channels`; normals recorded with the views reach a kdpc teacher
that takes them; the distill data path carries every channel and each model takes the ones it was built for."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from byo import kdpc, make_folder_dataset, ok
from conftest import assert_one_line_error
from kdpc.augment import AugmentConfig, PointAugmentConfig
from kdpc.checkpoint import Checkpoint, save_checkpoint
from kdpc.data import create_dataset
from kdpc.distill.dataset import RecordedViews
from kdpc.errors import KdpcError
from kdpc.models import count_parameters, create_model, list_models, model_forward, model_task
from kdpc.recorder.views import RecordViews
from kdpc.store import RecordReader

TINY = [n for n in list_models() if n.endswith("-tiny")]


@pytest.mark.parametrize("name", TINY)
def test_every_family_takes_extra_channels(name):
    torch.manual_seed(0)
    seg = model_task(name) == "partseg"
    kw = {"num_categories": 2} if seg else {}
    base, wide = create_model(name, 4, **kw), create_model(name, 4, in_channels=6, **kw)
    assert wide.in_channels == 6 and base.in_channels == 3 and wide.config["in_channels"] == 6
    assert "in_channels" not in base.config  # checkpoints of xyz models are unchanged
    assert count_parameters(wide) > count_parameters(base)
    wide.eval()
    x = torch.randn(2, 48, 6)
    label = torch.tensor([0, 1])
    with torch.no_grad():
        y = model_forward(wide, x, label)
        x2 = x.clone()
        x2[..., 3:] = -x2[..., 3:]
        assert not torch.allclose(y, model_forward(wide, x2, label))  # the normals matter
        base.eval()
        # a dataset may carry more channels than a model takes: model_forward hands it the first in_channels
        assert torch.equal(model_forward(base, x, label), model_forward(base, x[..., :3].contiguous(), label))
    with pytest.raises(KdpcError, match=r"\[B, N, 6\].*in_channels"):
        wide(x[..., :3]) if not seg else wide(x[..., :3], label)
    with pytest.raises(KdpcError, match="in_channels must be an integer >= 3"):
        create_model(name, 4, in_channels=2, **kw)


def test_full_presets_with_transforms_take_extra_channels():
    for name in ("pointnet", "dgcnn-seg"):
        model = create_model(name, 3, in_channels=9).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 64, 9)).shape[-1] == 3


def test_normals_are_recorded_replayed_and_distilled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDPC_CACHE_DIR", str(tmp_path / "cache"))
    make_folder_dataset(tmp_path / "data", per_class={"train": 1, "test": 1}, normals=True)
    opts = dict(num_raw_points=64, channels="xyz+normals")
    data = create_dataset("folder", root="data", num_points=32, **opts)
    assert data.num_channels == 6
    torch.manual_seed(0)
    model = create_model("pointnet-tiny", 2, in_channels=6)
    teacher = save_checkpoint(tmp_path / "t.pt", Checkpoint(
        arch="pointnet-tiny", model_config={"in_channels": 6}, num_classes=2, class_names=data.class_names,
        task="cls", dataset=data.describe(), state_dict=model.state_dict()))
    store = tmp_path / "s.zarr"
    ok("record", "--teacher", teacher, "--data-root", "data", "--views", "2", "--codec", "f32", "--rotation", "so3",
       "--device", "cpu", "--out", store)
    reader = RecordReader(str(store))
    assert reader.header.dataset["channels"] == "xyz+normals"
    # the recorded views carry (rotated) normals, and the teacher's outputs depend on them
    views = RecordViews(data, AugmentConfig.from_dict(reader.header.augment), reader.header.run_seed)
    pts = torch.from_numpy(np.stack([views[r]["points"] for r in range(reader.num_records)]))
    assert pts.shape[-1] == 6 and np.allclose(np.linalg.norm(pts[..., 3:].numpy(), axis=-1), 1, atol=1e-5)
    model.eval()
    with torch.inference_mode():
        expected = torch.log_softmax(model(pts), -1).numpy()
        flipped = torch.log_softmax(model(torch.cat([pts[..., :3], -pts[..., 3:]], -1)), -1).numpy()
    stored = reader.get(np.arange(reader.num_records))["logprobs"]
    assert np.abs(stored - expected).max() <= 1e-5 and np.abs(stored - flipped).max() > 1e-4
    report = json.loads(ok("records", "verify", store, "--teacher", teacher, "--data-root", "data", "--check", "8",
                           "--json").stdout)
    assert report["ok"]
    # distill: the data path carries both channel groups; a student takes the ones it was built for
    item = RecordedViews(data, PointAugmentConfig(), 0, reader=reader)[0]
    assert item["points"].shape == (32, 6)
    ok("distill", "--records", store, "--data-root", "data", "--model", "pointnet-tiny", "--epochs", "1",
       "--batch-size", "4", "--device", "cpu", "--out", tmp_path / "run")


def test_rotating_colour_columns_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDPC_CACHE_DIR", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            cloud = np.concatenate([np.random.default_rng(1).random((40, 3)), np.full((40, 3), 0.5)], 1)
            np.savetxt(tmp_path / "data" / split / c / "x.txt", cloud)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 2))
    script = torch.jit.script(_Pool(model))
    script.save(str(tmp_path / "t.ts"))
    args = ["record", "--teacher", "t.ts", "--adapter", "channels=xyz+rgb", "--dataset", "folder", "--dataset-opt",
            "channels=xyz+rgb", "--dataset-opt", "num_raw_points=40", "--num-points", "32", "--data-root", "data",
            "--device", "cpu", "--out", tmp_path / "s.zarr"]
    assert_one_line_error(kdpc(*args, "--rotation", "up"), "would turn the rgb columns", "--rotation none")
    assert not (tmp_path / "s.zarr").exists()
    ok(*args, "--views", "1")


class _Pool(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).amax(1)


def test_a_model_with_normals_trains_and_is_scored_on_its_own_channels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDPC_CACHE_DIR", str(tmp_path / "cache"))
    make_folder_dataset(tmp_path / "data", per_class={"train": 2, "test": 1}, normals=True)
    data = create_dataset("folder", root="data", split="test", num_points=32, num_raw_points=64,
                          channels="xyz+normals")
    from kdpc.training.data import EvalViews

    assert EvalViews(data)[0]["points"].shape == (32, 6)  # validation and test views carry the normals too
    ok("train", "--model", "pointnet-tiny", "--model-opt", "in_channels=6", "--dataset", "folder", "--data-root",
       "data", "--dataset-opt", "channels=xyz+normals", "--dataset-opt", "num_raw_points=64", "--num-points", "32",
       "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", tmp_path / "n.pt")
    result = json.loads(ok("eval", "--checkpoint", tmp_path / "n.pt", "--data-root", "data", "--json").stdout)
    assert 0.0 <= result["oa"] <= 1.0

"""`kdpc train` / `kdpc eval` on scenes, end to end: synthetic-rooms and the S3DIS (both layouts) and ScanNet fixture
folders; whole-scene scores with every original point taking its voxel's prediction."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import run_kdpc
from kdpc.checkpoint import load_checkpoint
from kdpc.data import create_dataset
from kdpc.data.scenes import Scene, SceneDataset
from kdpc.training.evaluate import evaluate_checkpoint
from kdpc.training.scene_eval import evaluate_scenes
from kdpc.training.train import TrainConfig, train
from scene_fixture_writers import write_s3dis_pointcept, write_s3dis_txt, write_scannet

ROOMS = ["--dataset-opt", "rooms=2", "--dataset-opt", "density=40", "--num-points", "1000"]


def quiet(*_args, **_kwargs) -> None:
    pass


def test_synthetic_rooms_train_then_eval_from_the_cli(tmp_path):
    out = tmp_path / "rooms.pt"
    log = run_kdpc("train", "--model", "ptv3-nano", "--dataset", "synthetic-rooms", *ROOMS, "--epochs", "2",
                   "--batch-size", "2", "--device", "cpu", "--out", str(out)).stdout
    assert "best val/miou" in log and "test/miou=" in log and "test/iou/" not in log
    for sidecar in ("rooms.last.pt", "rooms.metrics.jsonl", "rooms.curves.png"):
        assert (tmp_path / sidecar).is_file(), sidecar
    ckpt = load_checkpoint(out)
    test = create_dataset("synthetic-rooms", split="test", rooms=2, density=40.0, num_points=1000)
    assert ckpt.task == "semseg" and ckpt.class_names == test.class_names and ckpt.num_classes == 14
    assert ckpt.model_config["in_channels"] == 6 and ckpt.model_config["grid_size"] == 0.05
    assert ckpt.dataset["num_points"] == 1000 and ckpt.dataset["channels"] == "xyz+rgb"
    assert ckpt.provenance["training_views"]["augment"]["crop"] == "sphere"
    result = json.loads(run_kdpc("eval", "--model", str(out), "--json", "--device", "cpu").stdout)
    assert result["num_samples"] == 2 and result["num_points"] == test.total_points
    assert abs(result["miou"] - ckpt.metrics["test/miou"]) < 1e-12
    assert abs(result["oa"] - ckpt.metrics["test/oa"]) < 1e-12
    ious = {k: v for k, v in result.items() if k.startswith("iou/")}
    assert {"iou/ceiling", "iou/floor", "iou/wall"} <= set(ious)
    assert abs(np.mean(list(ious.values())) - result["miou"]) < 1e-9
    from click.testing import CliRunner

    from kdpc.cli import cli

    text = CliRunner().invoke(cli, ["eval", "--model", str(out), "--device", "cpu", "--split", "val"]).output
    assert "(2 samples): miou=" in text and "IoU per class: ceiling=" in text


class _ColourOracle(torch.nn.Module):
    """Predicts the class written into the red channel of each point (colour = 10 * class / 255)."""

    task = "semseg"

    def forward(self, coord, feat, offset):
        return torch.nn.functional.one_hot((feat[:, 3] * 25.5).round().long(), 3).float()


def _oracle_scene(labels_a: np.ndarray, labels_b: np.ndarray, voxels: np.ndarray, extra: int = 0) -> SceneDataset:
    """Two points in each voxel (classes ``labels_a`` / ``labels_b``) and ``extra`` unlabelled points coloured like
    the first point of their voxel; the red channel holds each point's class for the oracle."""
    coord = np.concatenate([voxels + 0.25, voxels + 0.75, voxels[:extra] + 0.3]).astype(np.float32)
    segment = np.concatenate([labels_a, labels_b, np.full(extra, -1)])
    color = np.zeros((len(coord), 3), dtype=np.uint8)
    color[:, 0] = 10 * np.concatenate([labels_a, labels_b, labels_a[:extra]])
    return SceneDataset(name="oracle", split="test", class_names=["a", "b", "c"],
                        scenes=[Scene("s", coord, segment, color)], num_points=100, grid_size=1.0,
                        channels=("xyz", "rgb"))


def test_whole_scene_scores_carry_voxel_predictions_back_to_every_point():
    rng = np.random.default_rng(0)
    voxels = rng.permutation(np.array(np.meshgrid(range(10), range(10), range(4))).reshape(3, -1).T)[:60]
    labels_a = np.arange(60) % 3
    labels_b = np.where(np.arange(60) < 20, (labels_a + 1) % 3, labels_a)  # 20 voxels mix two classes
    metrics = evaluate_scenes(_ColourOracle(), _oracle_scene(labels_a, labels_b, voxels, extra=5),
                              torch.device("cpu"))
    # the view has one point per voxel; every scene point takes its voxel's prediction, so in each mixed voxel
    # exactly one of the two labelled points is right whichever point was kept; unlabelled points are not counted
    assert metrics["oa"] == (2 * 40 + 20) / 120
    assert 0 < metrics["miou"] < 1 and set(metrics) == {"miou", "oa", "macc", "iou/a", "iou/b", "iou/c"}
    pure = evaluate_scenes(_ColourOracle(), _oracle_scene(labels_a, labels_a, voxels), torch.device("cpu"))
    assert pure["miou"] == pure["oa"] == 1.0


def test_s3dis_text_layout_from_the_cli(tmp_path):
    root = write_s3dis_txt(tmp_path / "Stanford3dDataset_v1.2_Aligned_Version", rooms_per_area=2)
    out = tmp_path / "s3dis.pt"
    run_kdpc("train", "--model", "pointunet-tiny", "--dataset", "s3dis", "--data-root", str(tmp_path), "--epochs",
             "1", "--batch-size", "2", "--num-points", "200", "--dataset-opt", "grid_size=0.1", "--device", "cpu",
             "--out", str(out))
    ckpt = load_checkpoint(out)
    assert ckpt.dataset["config"]["layout"] == "txt" and ckpt.metrics["selected_by"] == "last epoch"
    result = json.loads(run_kdpc("eval", "--model", str(out), "--data-root", str(tmp_path), "--json").stdout)
    assert result["num_points"] == 2 * 5 * 60 and result["miou"] == ckpt.metrics["test/miou"]


def test_s3dis_pointcept_and_scannet_layouts(tmp_path):
    s3dis = write_s3dis_pointcept(tmp_path / "s3dis", areas=(1, 2, 5), rooms_per_area=2)
    cfg = TrainConfig(model="ptv3-nano", dataset="s3dis", data_root=str(s3dis), dataset_cfg={"holdout": 0.25,
                      "grid_size": 0.1, "channels": "xyz+rgb+normals"}, num_points=300, epochs=1, batch_size=2,
                      device="cpu", out=str(tmp_path / "s3dis.pt"))
    state, path = train(cfg, log=quiet)
    assert state.best_metrics["selected_by"] == "best val/miou" and "test/miou" in state.best_metrics
    assert load_checkpoint(path).model_config["in_channels"] == 9
    result = evaluate_checkpoint(str(path), data_root=str(s3dis), device="cpu")
    assert result["num_samples"] == 2 and abs(result["miou"] - state.best_metrics["test/miou"]) < 1e-12

    scannet = write_scannet(tmp_path / "scannet")
    cfg = TrainConfig(model="pointunet-tiny", dataset="scannet", data_root=str(scannet),
                      dataset_cfg={"grid_size": 0.1}, num_points=300, epochs=1, batch_size=3, device="cpu",
                      out=str(tmp_path / "scannet.pt"))
    state, path = train(cfg, log=quiet)
    result = evaluate_checkpoint(str(path), data_root=str(scannet), device="cpu")
    labelled = sum(int((np.load(p) >= 0).sum()) for p in sorted((scannet / "val").glob("*/segment20.npy")))
    assert result["num_points"] == 800 and labelled < 800  # scored on the labelled points of ScanNet's val scenes
    assert abs(result["oa"] - state.best_metrics["test/oa"]) < 1e-12

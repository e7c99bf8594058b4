"""Plugins the CLI can see: --plugin, `plugins:` in a config file and the `kdpc.plugins` entry point group register
user models and datasets before the command runs; stores record which plugin made their data."""

from __future__ import annotations

import sys

import pytest

from byo import kdpc, ok
from conftest import assert_one_line_error, run_kdpc
from kdpc.data import DATASETS
from kdpc.plugins import plugin_of
from kdpc.store import RecordReader

PLUGIN = '''
import numpy as np
from kdpc.data import PointCloudDataset, register_dataset
from kdpc.models import register_model
from kdpc.models.pointnet import PointNetCls
from kdpc.models.registry import build


@register_dataset("{name}-blobs", "two kinds of random blobs (plugin test data)")
def blobs(root=None, split="train", num_points=None, per_class=None):
    rng = np.random.default_rng(0 if split == "train" else 1)
    n = per_class or 3
    points = np.concatenate([rng.standard_normal((n, 48, 3)) * [1.0, 1.0, 0.2],
                             rng.standard_normal((n, 48, 3)) * [0.2, 0.2, 1.0]]).astype(np.float32)
    return PointCloudDataset(name="{name}-blobs", split=split, task="cls", class_names=["flat", "tall"],
                             points=points, labels=np.repeat([0, 1], n), num_points=num_points or 32,
                             config={{"per_class": n}})


@register_model
def {name}_net(num_classes, **cfg):
    """A plugin model."""
    return build(PointNetCls, num_classes, cfg, stem=(8,), widths=(16,), head=(), input_transform=False,
                 feature_transform=False)
'''


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def write_plugin(folder, module: str, name: str) -> None:
    (folder / f"{module}.py").write_text(PLUGIN.format(name=name))


def test_a_plugin_registers_what_train_record_and_distill_use(plugin_dir, tmp_path):
    write_plugin(plugin_dir, "plug_one", "one")
    assert "one-blobs" not in DATASETS
    ok("--plugin", "plug_one", "datasets")
    assert "one-blobs" in DATASETS and plugin_of("dataset", "one-blobs") == "plug_one"
    assert plugin_of("model", "one-net") == "plug_one" and plugin_of("model", "pointnet") is None
    teacher = tmp_path / "t.pt"
    ok("--plugin", "plug_one", "train", "--model", "one-net", "--dataset", "one-blobs", "--epochs", "1",
       "--batch-size", "4", "--select", "last", "--device", "cpu", "--out", teacher)
    store = tmp_path / "s.zarr"
    ok("--plugin", "plug_one", "record", "--teacher", teacher, "--views", "2", "--device", "cpu", "--out", store)
    header = RecordReader(str(store)).header
    assert header.dataset["plugin"] == "plug_one" and header.teacher["plugin"] == "plug_one"
    ok("--plugin", "plug_one", "distill", "--records", store, "--model", "one-net", "--epochs", "1",
       "--batch-size", "4", "--device", "cpu", "--out", tmp_path / "run")
    # a fresh process without the plugin: one line naming the plugin to pass, and no run folder
    proc = run_kdpc("distill", "--records", str(store), "--out", str(tmp_path / "run2"), cwd=plugin_dir,
                    check=False)
    assert_one_line_error(proc, "dataset 'one-blobs' comes from plugin 'plug_one'", "--plugin plug_one")
    assert not (tmp_path / "run2").exists()


def test_plugins_from_a_config_file_and_bad_plugins(plugin_dir, tmp_path):
    write_plugin(plugin_dir, "plug_two", "two")
    (tmp_path / "train.yaml").write_text("plugins: [plug_two]\nmodel: two-net\ndataset: two-blobs\nepochs: 1\n"
                                         "batch_size: 4\nselect: last\ndevice: cpu\n")
    ok("train", "--config", tmp_path / "train.yaml", "--out", tmp_path / "t.pt")
    assert plugin_of("dataset", "two-blobs") == "plug_two"
    assert_one_line_error(kdpc("--plugin", "no_such_plugin_mod", "datasets"), "plugin no_such_plugin_mod",
                          "no module named 'no_such_plugin_mod'")
    (plugin_dir / "plug_broken.py").write_text("raise RuntimeError('boom')\n")
    assert_one_line_error(kdpc("--plugin", "plug_broken", "datasets"), "plugin plug_broken failed to import",
                          "RuntimeError: boom")
    assert_one_line_error(kdpc("--plugin", "not a module", "datasets"), "is not a Python module name")


def test_installed_packages_register_through_the_entry_point_group(plugin_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "kdpc_ep_demo-0.1.dist-info").mkdir(parents=True)
    (site / "kdpc_ep_demo-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kdpc-ep-demo\n"
                                                                 "Version: 0.1\n")
    (site / "kdpc_ep_demo-0.1.dist-info" / "entry_points.txt").write_text("[kdpc.plugins]\ndemo = plug_ep\n")
    write_plugin(site, "plug_ep", "ep")
    monkeypatch.syspath_prepend(str(site))
    listed = ok("datasets").stdout
    assert "ep-blobs" in listed and plugin_of("dataset", "ep-blobs") == "plug_ep"

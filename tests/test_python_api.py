"""The Python API: docs/python-api.md's example runs as written; RecordsDataset replays records exactly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kdpc
from kdpc.errors import KdpcError

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDPC_CACHE_DIR", str(tmp_path / "cache"))
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {"__name__": "python_api_example"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "48 records" in out and "48 records per epoch" in out  # 12 clouds x 4 views
    header = namespace["result"].header
    assert header.teacher["format"] == "module" and header.teacher["arch"].endswith("MyTeacher")
    assert header.class_names == ["flat", "tall"] and header.dataset["name"] == "folder"
    assert np.isfinite(namespace["loss"].item())


class Teacher(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.lin(x)).amax(1))


def test_records_dataset_replays_the_recorded_views_exactly(tmp_path):
    data = kdpc.create_dataset("synthetic", samples_per_class=2, num_raw_points=64, num_points=32)
    torch.manual_seed(0)
    teacher = Teacher(data.num_classes).eval()
    store = tmp_path / "s.zarr"
    result = kdpc.record(teacher, data, out=str(store), views=3, codec="f32", device="cpu",
                         augment={"rotation": "so3"})
    assert result.records_total == len(data) * 3
    records = kdpc.RecordsDataset(str(store))  # the dataset re-created from the store's provenance
    assert len(records) == len(data) * 3 and records.class_names == data.class_names
    points = torch.stack([records[i][0] for i in range(len(records))])
    stored = torch.stack([records[i][2] for i in range(len(records))])
    labels = torch.stack([records[i][1] for i in range(len(records))])
    assert labels.tolist() == [int(data.labels[i % len(data)]) for i in range(len(records))]
    with torch.inference_mode():
        again = torch.log_softmax(teacher(points), -1)
    assert (again - stored).abs().max() <= 1e-5
    # the first K views only; point-level augmentation moves points, never the targets
    two = kdpc.RecordsDataset(str(store), data, views=2, point_augment=True)
    assert len(two) == 2 * len(data)
    p, label, lp = two[7]
    assert torch.equal(lp, records[7][2]) and int(label) == int(records[7][1]) and not torch.equal(p, records[7][0])
    with pytest.raises(KdpcError, match="views=4"):
        kdpc.RecordsDataset(str(store), data, views=4)
    other = kdpc.create_dataset("synthetic", samples_per_class=2, num_raw_points=64, num_points=32, seed=1)
    with pytest.raises(KdpcError, match="not made from this data"):
        kdpc.RecordsDataset(str(store), other)

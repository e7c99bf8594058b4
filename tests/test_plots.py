"""Training-curve plot: writes a real PNG, tolerates missing keys and a partial last line."""

import json

import pytest

from kdpc.distill.plots import plot_curves, read_metrics
from kdpc.errors import KdpcError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_curves_writes_png(tmp_path):
    rows = [
        {"epoch": 0, "loss/ce": 2.0, "loss/kd": 1.0, "loss/nwsd": 0.1, "loss/total": 2.9, "lr": 0.1},
        {"epoch": 0, "oa": 0.5, "macc": 0.4},  # eval row for the same epoch
        {"epoch": 1, "loss/ce": 1.5, "loss/total": 2.0, "oa": 0.6, "lr": 0.05},  # some terms missing
        {"epoch": 2, "loss/ce": 1.2, "loss/kd": 0.5, "val/oa": 0.7, "note": "text is ignored"},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n\n{"epoch": 3, "loss/ce"')  # partial last line
    assert len(read_metrics(path)) == 4
    out = plot_curves(path, tmp_path / "plots" / "curves.png", title="run")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_plot_curves_losses_only_and_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"loss/ce": 1.0}) + "\n" + json.dumps({"loss/ce": 0.5}) + "\n")
    out = plot_curves(path, tmp_path / "c.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(KdpcError):
        plot_curves(tmp_path / "missing.jsonl", tmp_path / "x.png")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(KdpcError):
        plot_curves(tmp_path / "empty.jsonl", tmp_path / "y.png")

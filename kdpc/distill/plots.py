"""Training curves from a metrics JSONL file (one JSON object per line), drawn with matplotlib's Agg canvas.

The figure is built on a ``matplotlib.figure.Figure`` with an explicit ``FigureCanvasAgg``: no pyplot, no global
backend switch, so it works headless and never disturbs a caller's interactive backend.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import KdpcError

__all__ = ["plot_curves", "read_metrics"]

# Accuracy-like keys drawn on the second panel (also matched as the last component of "split/key", e.g. "val/oa").
ACCURACY_KEYS = ("oa", "macc", "miou", "ins_miou", "cls_miou", "acc")
LOSS_PREFIX = "loss/"


def read_metrics(metrics_jsonl_path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects in ``metrics_jsonl_path``, one per non-blank line.

    Lines that are not a JSON object are skipped (a run still writing may leave a partial last line). Raises
    ``KdpcError`` when the file is missing or holds no object at all.
    """
    path = Path(metrics_jsonl_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KdpcError(f"metrics file not found: {path}") from None
    except OSError as e:
        raise KdpcError(f"cannot read metrics file {path}: {e}") from e
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    if not rows:
        raise KdpcError(f"no metrics in {path}: expected one JSON object per line")
    return rows


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(x, y)`` for ``key``: x is the row's ``epoch`` (the row index when a row has none); non-numbers skipped."""
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(rows):
        y = _number(row.get(key))
        if y is None:
            continue
        x = _number(row.get("epoch"))
        xs.append(float(i) if x is None else x)
        ys.append(y)
    return xs, ys


def _is_accuracy(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in ACCURACY_KEYS and not key.startswith(LOSS_PREFIX)


def plot_curves(metrics_jsonl_path: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """Draw a 2-panel PNG of a run's metrics and return its path.

    Left panel: every ``loss/*`` key (plus a plain ``loss``) per epoch, ``loss/total`` drawn thicker. Right panel:
    accuracy keys (``oa``, ``macc``, ``miou``, ... also as ``val/oa`` etc.) per epoch, and ``lr`` on a secondary
    log-scale axis when present. Missing keys are simply not drawn; a panel with nothing to draw says so. Rows
    without ``epoch`` are placed at their line index. Parent folders of ``out_png`` are created.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(metrics_jsonl_path)
    keys: list[str] = []
    for row in rows:
        for k in row:
            if k not in keys:
                keys.append(k)
    loss_keys = [k for k in keys if k.startswith(LOSS_PREFIX) or k == "loss"]
    loss_keys.sort(key=lambda k: (k in ("loss/total", "loss"), k))  # total last, so it is drawn on top
    acc_keys = [k for k in keys if _is_accuracy(k)]

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)

    drawn = 0
    for k in loss_keys:
        xs, ys = _series(rows, k)
        if xs:
            total = k in ("loss/total", "loss")
            ax_loss.plot(xs, ys, marker="." if len(xs) < 50 else None, lw=2.2 if total else 1.2, label=k)
            drawn += 1
    ax_loss.set_title("loss terms")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    if drawn:
        ax_loss.legend(fontsize="small")
    else:
        ax_loss.text(0.5, 0.5, "no loss values", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.grid(alpha=0.3)

    drawn = 0
    for k in acc_keys:
        xs, ys = _series(rows, k)
        if xs:
            ax_acc.plot(xs, ys, marker="." if len(xs) < 50 else None, label=k)
            drawn += 1
    ax_acc.set_title("accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    handles, labels = ax_acc.get_legend_handles_labels()
    xs, ys = _series(rows, "lr")
    if xs:
        ax_lr = ax_acc.twinx()
        (line,) = ax_lr.plot(xs, ys, color="gray", ls="--", lw=1.0, label="lr")
        if all(y > 0 for y in ys):
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("lr")
        handles.append(line)
        labels.append("lr")
    if handles:
        ax_acc.legend(handles, labels, fontsize="small", loc="best")
    if not drawn:
        ax_acc.text(0.5, 0.5, "no accuracy values", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.grid(alpha=0.3)

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out

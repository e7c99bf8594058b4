"""Small helpers the bench scripts share: markdown tables, the machine line, and plots."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Sequence

import torch


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{_cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{datetime.date.today().isoformat()}, {what}, torch {torch.__version__}, python {platform.python_version()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def save_bar_plot(path: Path, labels: Sequence[str], values: Sequence[float], ylabel: str, title: str,
                  errors: Sequence[float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(labels)), 3.2))
    ax.bar(range(len(labels)), values, yerr=errors, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

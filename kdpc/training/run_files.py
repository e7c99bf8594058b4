"""The files ``kdpc train --out X.pt`` writes next to the chosen checkpoint, and resuming from them.

``X.pt`` is the chosen epoch (as it always was); beside it ``X.last.pt`` (the last epoch with the optimiser, schedule
and RNG state), ``X.metrics.jsonl`` (one line per epoch) and ``X.curves.png``. ``--resume`` continues from
``X.last.pt``; a run without it starts over and replaces all four."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..errors import KdpcError


def sidecar(out: Path, what: str) -> Path:
    """``runs/teacher.pt`` + ``last.pt`` -> ``runs/teacher.last.pt`` (a name without ``.pt`` keeps its whole name)."""
    stem = out.name[: -len(".pt")] if out.name.endswith(".pt") else out.name
    return out.with_name(f"{stem}.{what}")


def run_files(out: Path) -> dict[str, Path]:
    return {"best": out, "last": sidecar(out, "last.pt"), "metrics": sidecar(out, "metrics.jsonl"),
            "curves": sidecar(out, "curves.png")}


def start_fresh(files: dict[str, Path]) -> None:
    """A run without --resume: the previous run's epoch log and snapshot must not mix into this one."""
    for key in ("metrics", "last", "curves"):
        files[key].unlink(missing_ok=True)


def check_resumable(files: dict[str, Path]) -> None:
    if not files["last"].is_file():
        raise KdpcError(f"--resume: {files['last']} does not exist (kdpc train writes it after every epoch); "
                        "start without --resume")


def resume_state(files: dict[str, Path], model: torch.nn.Module, arch: str, fingerprint: str, device: torch.device,
                 is_main: bool) -> dict[str, Any]:
    """Load ``X.last.pt`` into ``model`` and return its training state; on rank 0 cut ``X.metrics.jsonl`` back to
    the epochs the snapshot has, so resumed epochs are not logged twice."""
    ckpt = load_checkpoint(files["last"])
    if ckpt.training_state is None:
        raise KdpcError(f"{files['last']} holds no training state to resume from")
    if ckpt.arch != arch or ckpt.dataset.get("fingerprint") != fingerprint:
        raise KdpcError(f"--resume: {files['last']} is a {ckpt.arch} run on other data or another model than this "
                        f"one ({arch}); start without --resume or use another --out")
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise KdpcError(f"--resume: {files['last']} does not fit this model ({str(exc).splitlines()[0]}); the model "
                        "options differ from the interrupted run's") from None
    model.to(device)
    metrics = files["metrics"]
    if is_main and metrics.exists():
        done = int(ckpt.training_state["epoch"])
        lines = [line for line in metrics.read_text().splitlines() if line.strip()][:done]
        metrics.write_text("".join(line + "\n" for line in lines))
    return ckpt.training_state

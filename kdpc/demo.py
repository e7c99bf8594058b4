"""``kdpc demo``: the whole product on the embedded dataset, sized for a 2-core CPU.

train teacher -> record its views -> train a CE-only student -> distill a student offline -> compare.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .checkpoint import load_checkpoint
from .distill.trainer import DistillConfig, distill
from .training.evaluate import evaluate_checkpoint
from .recorder import RecordConfig, record
from .training.train import TrainConfig, train


@dataclass
class DemoConfig:
    dataset: str = "synthetic"
    teacher: str = "pointmlp-tiny"
    student: str = "pointnet-tiny"
    teacher_epochs: int = 20
    student_epochs: int = 20
    views: int = 10
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    dataset_cfg: dict[str, Any] = field(default_factory=dict)
    num_points: int | None = None
    distill_overrides: dict[str, Any] = field(default_factory=dict)


def run_demo(out: str | Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    teacher_path = out / "teacher.pt"
    store = out / "records" / f"{cfg.dataset}.zarr"

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        log(f"\n== {name}")
        started = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - started
        return result

    common = dict(dataset=cfg.dataset, dataset_cfg=cfg.dataset_cfg, num_points=cfg.num_points,
                  batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device)
    if not teacher_path.exists():
        stage("1/4 train the teacher", lambda: train(TrainConfig(model=cfg.teacher, epochs=cfg.teacher_epochs,
                                                                 out=str(teacher_path), **common), log=log))
    stage("2/4 record the teacher's views", lambda: record(RecordConfig(
        teacher=str(teacher_path), views=cfg.views, out=str(store), seed=cfg.seed, device=cfg.device,
        resume=store.exists()), log=log))
    ce_path = out / "student-ce.pt"
    if not ce_path.exists():
        stage("3/4 train the student with CE only", lambda: train(TrainConfig(
            model=cfg.student, epochs=cfg.student_epochs, out=str(ce_path), **common), log=log))
    kd_dir = out / "student-kd"
    if not (kd_dir / "student.pt").exists() or not (kd_dir / "last.pt").exists():
        resume = (kd_dir / "last.pt").exists()
        stage("4/4 distill the student offline from the records (KD + NWSD)", lambda: distill(DistillConfig(
            records=str(store), student=cfg.student, epochs=cfg.student_epochs, batch_size=cfg.batch_size,
            seed=cfg.seed, device=cfg.device, out=str(kd_dir), resume=resume, **cfg.distill_overrides), log=log))

    rows = []
    for label, path in (("teacher", teacher_path), ("student, CE only", ce_path),
                        ("student, offline KD + NWSD", kd_dir / "student.pt")):
        result = evaluate_checkpoint(str(path), device=cfg.device)
        rows.append({"model": label, "arch": load_checkpoint(path).arch, "params": result["params"],
                     "oa": result["oa"], "macc": result["macc"]})
    (out / "results.json").write_text(json.dumps({"rows": rows, "timings_s": timings}, indent=2))
    log("\n" + format_table(rows))
    log("wall time: " + ", ".join(f"{k.split(' ', 1)[0]} {v:.0f}s" for k, v in timings.items())
        + f"; total {sum(timings.values()):.0f}s")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | arch | params | OA | mAcc |", "|---|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['arch']} | {row['params']:,} | {100 * row['oa']:.2f} | {100 * row['macc']:.2f} |")
    return "\n".join(lines)

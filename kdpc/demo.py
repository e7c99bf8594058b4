"""``kdpc demo``: the whole product on the embedded dataset, sized for a 2-core CPU.

train teacher -> record its views -> train a CE-only student and distill the same student offline (side by side,
one torch thread each, when the CPU has two cores) -> compare on the test split.

Both students start from the same seed; every checkpoint is the epoch chosen on the validation split and the test
split is scored once at the end, so the printed gain is an honest single-seed figure (docs/benchmarks.md has the
paired-seed one).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from .checkpoint import load_checkpoint
from .distill.trainer import DistillConfig, distill
from .recorder import RecordConfig, record
from .training.evaluate import evaluate_checkpoint
from .training.train import TrainConfig, train

STAGES = ("1/3 train the teacher", "2/3 record the teacher's views",
          "3/3 train the student with CE only and distill it offline from the records")


@dataclass
class DemoConfig:
    dataset: str = "synthetic"
    teacher: str = "pointmlp-tiny"
    student: str = "pointnet2-tiny"  # a student with local features: the kind distillation helps (docs/benchmarks.md)
    teacher_epochs: int = 40  # the benchmark's teacher trains 60; 40 keeps the demo within 15 minutes on 2 cores
    student_epochs: int = 40  # kdpc distill's default
    views: int = 40  # kdpc record's default: one recorded view per student epoch
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    parallel: bool | None = None  # the two students side by side; default: on a CPU with >= 2 cores
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

    if not teacher_path.exists():
        stage(STAGES[0], lambda: train(_teacher_config(cfg, teacher_path), log=log))
    stage(STAGES[1], lambda: record(RecordConfig(
        teacher=str(teacher_path), views=cfg.views, out=str(store), seed=cfg.seed, device=cfg.device,
        resume=store.exists()), log=log))
    ce_path, kd_dir = out / "student-ce.pt", out / "student-kd"
    jobs = []
    if not ce_path.exists():
        jobs.append(("CE", "train", asdict(_student_config(cfg, ce_path))))
    if not (kd_dir / "student.pt").exists() or not (kd_dir / "last.pt").exists():
        jobs.append(("KD", "distill", asdict(_distill_config(cfg, store, kd_dir))))
    if jobs:
        stage(STAGES[2], lambda: _run_students(jobs, _side_by_side(cfg), log))

    rows = []
    for label, path in (("teacher", teacher_path), ("student, CE only", ce_path),
                        ("student, offline KD", kd_dir / "student.pt")):
        result = evaluate_checkpoint(str(path), device=cfg.device)
        checkpoint = load_checkpoint(path)
        rows.append({"model": label, "arch": checkpoint.arch, "params": result["params"],
                     "epoch": checkpoint.metrics.get("epoch"), "oa": result["oa"], "macc": result["macc"]})
    (out / "results.json").write_text(json.dumps({"rows": rows, "timings_s": timings}, indent=2))
    log("\n" + format_table(rows))
    gain = 100 * (rows[2]["oa"] - rows[1]["oa"])
    log(f"offline KD - CE only: {gain:+.2f} test OA points (seed {cfg.seed}; epochs chosen on the validation split)")
    log("wall time: " + ", ".join(f"{k.split(' ', 1)[0]} {v:.0f}s" for k, v in timings.items())
        + f"; total {sum(timings.values()):.0f}s")
    return rows


def _teacher_config(cfg: DemoConfig, path: Path) -> TrainConfig:
    return TrainConfig(model=cfg.teacher, epochs=cfg.teacher_epochs, out=str(path), **_common(cfg))


def _student_config(cfg: DemoConfig, path: Path) -> TrainConfig:
    return TrainConfig(model=cfg.student, epochs=cfg.student_epochs, out=str(path), **_common(cfg))


def _distill_config(cfg: DemoConfig, store: Path, run_dir: Path) -> DistillConfig:
    return DistillConfig(records=str(store), student=cfg.student, epochs=cfg.student_epochs,
                         batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, out=str(run_dir),
                         resume=(run_dir / "last.pt").exists(), **cfg.distill_overrides)


def _common(cfg: DemoConfig) -> dict[str, Any]:
    return dict(dataset=cfg.dataset, dataset_cfg=cfg.dataset_cfg, num_points=cfg.num_points,
                batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device)


def _side_by_side(cfg: DemoConfig) -> bool:
    if cfg.parallel is not None:
        return cfg.parallel
    import torch

    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    return on_cpu and (os.cpu_count() or 1) >= 2


def _run_students(jobs: list[tuple[str, str, dict[str, Any]]], parallel: bool, log: Callable[[str], None]) -> None:
    if not parallel or len(jobs) == 1:
        for tag, kind, config in jobs:
            _student_job(tag, kind, config, log)
        return
    # two 1-thread processes: on 2 cores that is ~2x faster than one after the other
    log("the two students train side by side, one torch thread each")
    with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(_student_job, tag, kind, config, None, 1) for tag, kind, config in jobs]:
            future.result()


def _student_job(tag: str, kind: str, config: dict[str, Any], log: Callable[[str], None] | None,
                 threads: int | None = None) -> None:
    if threads is not None:  # a worker process
        import torch

        os.environ["KDPC_NO_PROGRESS"] = "1"
        torch.set_num_threads(threads)
    say = log or (lambda line: print(line, flush=True))
    prefixed = lambda line: say(f"[{tag}] {line}")  # noqa: E731
    if kind == "train":
        train(TrainConfig(**config), log=prefixed)
    else:
        distill(DistillConfig(**config), log=prefixed)


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | arch | params | epoch | test OA | test mAcc |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['arch']} | {row['params']:,} | {row['epoch']} | "
                     f"{100 * row['oa']:.2f} | {100 * row['macc']:.2f} |")
    return "\n".join(lines)

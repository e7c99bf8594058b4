"""``kdpc demo``: the whole product on an embedded dataset, sized for a 2-core CPU.

train teacher -> record its views -> train a CE-only student and distill the same student offline (side by side,
one torch thread each, when the CPU has two cores) -> compare on the test split.

Two tasks, each the setting of its paired-seed benchmark (docs/benchmarks.md):

* ``partseg`` (the default): part segmentation on ``synthetic-parts``, teacher ``pointmlp-seg-tiny``, a half-width
  ``dgcnn-seg-tiny`` student, offline SRKD; the CE-only student learns from the same recorded views with the SRKD
  weights at 0 (``bench/seg_accuracy.py``: +2.19 ± 0.18 mIoU over 10 paired seeds).
* ``classification``: ``synthetic``, teacher ``pointmlp-tiny``, student ``pointnet2-tiny``; the CE-only student is
  ``kdpc train`` (``bench/accuracy.py``: +0.03 ± 0.18 to +1.39 ± 0.27 OA, depending on the machine).

Both students start from the same seed; every checkpoint is the epoch chosen on the validation split and the test
split is scored once at the end, so the printed gain is an honest single-seed figure. Every stage leaves a marker
when it finishes: a rerun skips finished stages and resumes an interrupted one.
"""

from __future__ import annotations

import copy
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from .checkpoint import load_checkpoint
from .config import deep_merge
from .distill.seg import CE_ONLY_WEIGHTS
from .distill.trainer import DistillConfig, distill
from .errors import KdpcError
from .recorder import RecordConfig, record
from .training.evaluate import evaluate_checkpoint
from .training.run_files import sidecar
from .training.train import TrainConfig, train

STAGES = ("1/3 train the teacher", "2/3 record the teacher's views",
          "3/3 train the student with CE only and distill it offline from the records")


@dataclass(frozen=True)
class TaskPreset:
    """What a demo task trains: the settings of that task's paired-seed benchmark."""

    dataset: str
    teacher: str
    student: str
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    metrics: tuple[tuple[str, str], ...]  # (evaluate key, column name) of the table; the first is the gain's
    dataset_cfg: dict[str, Any] = field(default_factory=dict)
    student_cfg: dict[str, Any] = field(default_factory=dict)
    record_cfg: dict[str, Any] = field(default_factory=dict)
    ce_by_distill: bool = False  # the CE-only student: kdpc distill with the KD terms off (else kdpc train)


PRESETS: dict[str, TaskPreset] = {
    # bench/seg_accuracy.py's defaults: a student the teacher is > 8 mIoU above, where offline SRKD pays
    "partseg": TaskPreset(
        dataset="synthetic-parts", teacher="pointmlp-seg-tiny", student="dgcnn-seg-tiny", teacher_epochs=40,
        student_epochs=20, batch_size=16,
        metrics=(("inst_miou", "test instance mIoU"), ("cls_miou", "test class mIoU")),
        dataset_cfg={"samples_per_class": 24},
        student_cfg={"edge_widths": [[16, 16], [16], [16]], "emb_dims": 64},
        record_cfg={"anchors": 64, "feature_dim": 32}, ce_by_distill=True),
    # bench/accuracy.py's students with a 40-epoch teacher (the benchmark's trains 60)
    "classification": TaskPreset(
        dataset="synthetic", teacher="pointmlp-tiny", student="pointnet2-tiny", teacher_epochs=40,
        student_epochs=40, batch_size=32, metrics=(("oa", "test OA"), ("macc", "test mAcc"))),
}


@dataclass
class DemoConfig:
    """``task`` picks a preset; every field left at None takes that preset's value."""

    task: str = "partseg"
    dataset: str | None = None
    teacher: str | None = None
    student: str | None = None
    teacher_epochs: int | None = None
    student_epochs: int | None = None
    views: int | None = None  # recorded views per sample; default: one per student epoch
    batch_size: int | None = None
    dataset_cfg: dict[str, Any] | None = None
    student_cfg: dict[str, Any] | None = None
    record_cfg: dict[str, Any] | None = None
    seed: int = 0
    device: str = "auto"
    parallel: bool | None = None  # the two students side by side; default: on a CPU with >= 2 cores
    num_points: int | None = None
    distill_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in PRESETS:
            raise KdpcError(f"demo task must be one of {', '.join(PRESETS)}, got {self.task!r}")
        preset = PRESETS[self.task]
        for f in fields(TaskPreset):
            if not hasattr(self, f.name):
                continue
            given, default = getattr(self, f.name), copy.deepcopy(getattr(preset, f.name))
            if given is None:
                setattr(self, f.name, default)
            elif isinstance(given, dict):  # option by option over the preset's
                setattr(self, f.name, deep_merge(default, given))
        if self.views is None:
            self.views = self.student_epochs
        for name in ("teacher_epochs", "student_epochs", "views", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KdpcError(f"demo {name} must be an integer >= 1, got {value!r}")

    @property
    def preset(self) -> TaskPreset:
        return PRESETS[self.task]


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

    teacher_cfg = _teacher_config(cfg, teacher_path)
    if not _finished(teacher_path, teacher_cfg):
        stage(STAGES[0], lambda: train(teacher_cfg, log=log))
        _mark_finished(teacher_path, teacher_cfg)
    stage(STAGES[1], lambda: record(RecordConfig(
        teacher=str(teacher_path), views=cfg.views, out=str(store), seed=cfg.seed, device=cfg.device,
        resume=store.exists(), **cfg.record_cfg), log=log))
    students = _students(cfg, out, store)
    jobs = [(tag, kind, asdict(config)) for tag, kind, config, path in students if not _finished(path, config)]
    if jobs:
        stage(STAGES[2], lambda: _run_students(jobs, _side_by_side(cfg), log))
        for _tag, _kind, config, path in students:
            _mark_finished(path, config)

    metric, metric_name = cfg.preset.metrics[0]
    rows = []
    for label, path in (("teacher", teacher_path), ("student, CE only", students[0][3]),
                        ("student, offline KD", students[1][3])):
        result = evaluate_checkpoint(str(path), device=cfg.device)
        checkpoint = load_checkpoint(path)
        rows.append({"model": label, "arch": checkpoint.arch, "params": result["params"],
                     "epoch": checkpoint.metrics.get("epoch"), **{key: result[key] for key, _ in cfg.preset.metrics}})
    (out / "results.json").write_text(json.dumps({"task": cfg.task, "rows": rows, "timings_s": timings}, indent=2))
    log("\n" + format_table(rows, cfg.task))
    gain = 100 * (rows[2][metric] - rows[1][metric])
    log(f"offline KD - CE only: {gain:+.2f} {metric_name} points (seed {cfg.seed}; epochs chosen on the "
        "validation split)")
    log("wall time: " + ", ".join(f"{k.split(' ', 1)[0]} {v:.0f}s" for k, v in timings.items())
        + f"; total {sum(timings.values()):.0f}s")
    return rows


def _finished(checkpoint: Path, config: TrainConfig | DistillConfig) -> bool:
    """A checkpoint exists from a run's first epoch on: only the marker written after the run finished means done.
    The marker holds the run's settings, so a folder left by another demo configuration is never reused."""
    marker = checkpoint.with_suffix(".done")
    if not (marker.exists() and checkpoint.exists()):
        return False
    try:
        settings = json.loads(marker.read_text())
    except ValueError:  # an unreadable marker: run the stage again (it resumes)
        return False
    if settings != _settings(config):
        raise KdpcError(f"{checkpoint} was made by a demo with other settings; give another --out or delete "
                        f"{checkpoint.parent}")
    return True


def _mark_finished(checkpoint: Path, config: TrainConfig | DistillConfig) -> None:
    checkpoint.with_suffix(".done").write_text(json.dumps(_settings(config)))


def _settings(config: TrainConfig | DistillConfig) -> Any:
    """What a finished run was made with (its paths left out: a moved demo folder is still the same run)."""
    return json.loads(json.dumps({k: v for k, v in asdict(config).items() if k not in ("resume", "out", "records")}))


def _students(cfg: DemoConfig, out: Path, store: Path) -> list[tuple[str, str, Any, Path]]:
    """(tag, kind, config, chosen checkpoint) of the CE-only student, then the distilled one."""
    kd_dir = out / "student-kd"
    kd = ("KD", "distill", _distill_config(cfg, store, kd_dir, cfg.distill_overrides), kd_dir / "student.pt")
    if cfg.preset.ce_by_distill:
        ce_dir = out / "student-ce"
        overrides = {**cfg.distill_overrides, "srkd": {**cfg.distill_overrides.get("srkd", {}), **CE_ONLY_WEIGHTS}}
        return [("CE", "distill", _distill_config(cfg, store, ce_dir, overrides), ce_dir / "student.pt"), kd]
    ce_path = out / "student-ce.pt"
    return [("CE", "train", _student_config(cfg, ce_path), ce_path), kd]


def _teacher_config(cfg: DemoConfig, path: Path) -> TrainConfig:
    return TrainConfig(model=cfg.teacher, epochs=cfg.teacher_epochs, out=str(path),
                       resume=sidecar(path, "last.pt").exists(), **_common(cfg))


def _student_config(cfg: DemoConfig, path: Path) -> TrainConfig:
    return TrainConfig(model=cfg.student, model_cfg=cfg.student_cfg, epochs=cfg.student_epochs, out=str(path),
                       resume=sidecar(path, "last.pt").exists(), **_common(cfg))


def _distill_config(cfg: DemoConfig, store: Path, run_dir: Path, overrides: dict[str, Any]) -> DistillConfig:
    return DistillConfig(records=str(store), student=cfg.student, student_cfg=cfg.student_cfg,
                         epochs=cfg.student_epochs, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                         out=str(run_dir), resume=(run_dir / "last.pt").exists(), **overrides)


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


def format_table(rows: list[dict[str, Any]], task: str) -> str:
    metrics = PRESETS[task].metrics
    lines = ["| model | arch | params | epoch | " + " | ".join(name for _, name in metrics) + " |",
             "|---|---|---:|---:|" + "---:|" * len(metrics)]
    for row in rows:
        lines.append(f"| {row['model']} | {row['arch']} | {row['params']:,} | {row['epoch']} | "
                     + " | ".join(f"{100 * row[key]:.2f}" for key, _ in metrics) + " |")
    return "\n".join(lines)

"""Scenes on synthetic-rooms: a point-transformer teacher and a CE-only student, mean +- std over seeds, with their
parameters and training step time.

    .venv/bin/python bench/scene_accuracy.py                  # CPU-sized defaults: 3 seeds (see docs/benchmarks.md)
    .venv/bin/python bench/scene_accuracy.py --quick          # smoke run: 1 seed, 1 epoch each, 2 small rooms
    .venv/bin/python bench/scene_accuracy.py --seeds 0,1,2,3,4 --device cuda --teacher ptv3 --student ptv3-small \\
        --teacher-epochs 300 --student-epochs 300 --batch-size 8 --num-points 40000

Everything goes through the CLI, as a user would run it (one fresh process per step):

1. ``kdpc train`` the teacher and, with the same data, schedule and seed, each student (CE only) on
   ``synthetic-rooms`` (the epoch with the best validation mIoU is kept; the validation rooms are the dataset's
   ``val`` split, never the test rooms);
2. ``kdpc eval --json`` every checkpoint on the test rooms: mIoU, OA and per-class IoU over every point of the
   whole rooms;
3. the step time is the mean training time of an epoch (data, forward, backward, optimiser) over its steps, from
   the run's ``X.metrics.jsonl`` (validation not included).

Prints a markdown table (mean +- sample std over seeds, and each seed's mIoU) and writes ``scene_accuracy.json``
to ``--out``. Finished steps are skipped when rerun with the same ``--out`` and an interrupted training continues
(``kdpc train --resume``); delete the folder to start over. ``--dry-run`` prints the commands only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], log: Path, dry: bool) -> str:
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {line}", flush=True)
    if dry:
        return ""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "KDPC_NO_PROGRESS": "1"}, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {line}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        raise SystemExit(f"step failed ({proc.returncode}) after {time.perf_counter() - t0:.0f}s; see {log}:\n"
                         f"{proc.stderr.strip()[-2000:]}")
    print(f"  ({time.perf_counter() - t0:.0f}s)", flush=True)
    return proc.stdout


def kdpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdpc", *args]


def data_opts(args: argparse.Namespace) -> list[str]:
    opts = ["--num-points", str(args.num_points)]
    for key in ("rooms", "density"):
        if getattr(args, key) is not None:
            opts += ["--dataset-opt", f"{key}={getattr(args, key)}"]
    return opts


def train_and_eval(args: argparse.Namespace, role: str, model: str, epochs: int, seed: int, d: Path
                   ) -> dict[str, float]:
    log = d / "log.txt"
    ckpt = d / f"{role}.pt"
    cache = d / f"{role}.json"
    if not (d / f"{role}.done").exists():  # a checkpoint exists from the first epoch on: only the marker means done
        cache.unlink(missing_ok=True)
        cfg = d / "run.yaml"
        cfg.write_text(yaml.safe_dump({"eval_every": args.eval_every}))
        resume = ["--resume"] if (d / f"{role}.last.pt").exists() else []
        run(kdpc("train", "--config", str(cfg), "--model", model, "--dataset", "synthetic-rooms", *data_opts(args),
                 "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                 "--device", args.device, "--seed", str(seed), "--out", str(ckpt), *resume), log, args.dry_run)
        if not args.dry_run:
            (d / f"{role}.done").touch()
    if cache.exists():
        return json.loads(cache.read_text())
    out = run(kdpc("eval", "--model", str(ckpt), "--device", args.device, "--json"), log, args.dry_run)
    if args.dry_run:
        return {"miou": float("nan"), "oa": float("nan"), "params": 0, "step_s": float("nan"), "train_min": 0.0}
    result = json.loads(out.strip().splitlines()[-1])
    epochs_log = [json.loads(x) for x in (d / f"{role}.metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = max(1, result_steps(args, seed))
    train_s = [e["train_time_s"] for e in epochs_log]
    metrics = {"miou": result["miou"], "oa": result["oa"], "macc": result["macc"], "params": result["params"],
               "step_s": statistics.fmean(train_s) / steps, "train_min": sum(train_s) / 60.0,
               "iou": {k[4:]: v for k, v in result.items() if k.startswith("iou/")}}
    cache.write_text(json.dumps(metrics))
    return metrics


def result_steps(args: argparse.Namespace, seed: int) -> int:
    """Steps per epoch: training rooms // batch size (the loader drops the last partial batch)."""
    from kdpc.data import create_dataset

    opts = {k: getattr(args, k) for k in ("rooms", "density") if getattr(args, k) is not None}
    return len(create_dataset("synthetic-rooms", split="train", **opts)) // args.batch_size


def one_seed(args: argparse.Namespace, seed: int, out: Path) -> dict[str, dict]:
    d = out / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    rows = {"teacher": train_and_eval(args, "teacher", args.teacher, args.teacher_epochs, seed, d)}
    for student in args.students:
        rows[student] = train_and_eval(args, f"student-{student}", student, args.student_epochs, seed, d)
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(per_seed: dict[int, dict[str, dict]], args: argparse.Namespace) -> str:
    seeds = sorted(per_seed)
    rows = [("teacher", f"teacher ({args.teacher})", args.teacher_epochs)]
    rows += [(s, f"student, CE only ({s})", args.student_epochs) for s in args.students]
    lines = ["| model | params | epochs | test mIoU | test OA | step time (s) | train time (min) | mIoU per seed |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, label, epochs in rows:
        res = [per_seed[s][key] for s in seeds]
        miou, miou_sd = mean_std([100 * r["miou"] for r in res])
        oa, oa_sd = mean_std([100 * r["oa"] for r in res])
        step = statistics.fmean([r["step_s"] for r in res])
        minutes = statistics.fmean([r["train_min"] for r in res])
        each = ", ".join(f"{100 * r['miou']:.2f}" for r in res)
        lines.append(f"| {label} | {res[0]['params']:,} | {epochs} | {miou:.2f} +- {miou_sd:.2f} | "
                     f"{oa:.2f} +- {oa_sd:.2f} | {step:.2f} | {minutes:.1f} | {each} |")
    return "\n".join(lines)


def class_table(per_seed: dict[int, dict[str, dict]], args: argparse.Namespace) -> str:
    seeds = sorted(per_seed)
    keys = ["teacher", *args.students]
    classes = list(per_seed[seeds[0]]["teacher"]["iou"])
    lines = ["| class | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for c in classes:
        cells = [f"{statistics.fmean([100 * per_seed[s][k]['iou'].get(c, 0.0) for s in seeds]):.1f}" for k in keys]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-out/scene_accuracy", help="work folder (steps found there are reused)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--teacher", default="ptv3-tiny")
    ap.add_argument("--students", default="ptv3-nano", help="comma-separated student models (CE only)")
    ap.add_argument("--teacher-epochs", type=int, default=100)
    ap.add_argument("--student-epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=2, help="rooms per step")
    ap.add_argument("--num-points", type=int, default=6000, help="most points of a training view (a seeded crop)")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--eval-every", type=int, default=10, help="validate every N epochs (and at the last)")
    ap.add_argument("--rooms", type=int, default=None, help="rooms per split (default: the dataset's 24/6/8)")
    ap.add_argument("--density", type=float, default=None, help="surface points per m^2 (default: the dataset's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1 epoch each, 2 small rooms per split")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.teacher_epochs, args.student_epochs = "0", 1, 1
        args.rooms, args.density, args.num_points, args.eval_every = 2, 40.0, 1500, 1
        if args.out == ap.get_default("out"):
            args.out = "bench-out/scene_accuracy-quick"
    args.students = [s.strip() for s in args.students.split(",") if s.strip()]
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {seed: one_seed(args, seed, out) for seed in seeds}
    if args.dry_run:
        return 0
    from common import machine_line  # bench/common.py

    text = (f"synthetic-rooms, {len(seeds)} seed(s); {machine_line(args.device)}\n\n" + table(per_seed, args)
            + "\n\nTest IoU per class (mean over seeds, %):\n\n" + class_table(per_seed, args))
    print(text)
    (out / "scene_accuracy.json").write_text(json.dumps({"args": vars(args), "per_seed": per_seed}, indent=1))
    (out / "scene_accuracy.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

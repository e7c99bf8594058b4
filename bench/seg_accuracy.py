"""Offline SRKD on synthetic-parts: teacher, student CE-only, + per-point KD, + relation terms; mean +- std over seeds.

    .venv/bin/python bench/seg_accuracy.py                          # CPU-sized defaults (3 seeds, ~30 min on 2 cores)
    .venv/bin/python bench/seg_accuracy.py --quick                  # smoke run: 1 seed, 1 epoch each, tiny data
    .venv/bin/python bench/seg_accuracy.py --seeds 0,1,2,3,4 --device cuda --teacher pointmlp-seg \\
        --student pointnet2-seg --teacher-epochs 100 --student-epochs 100 --samples-per-class 100

Everything goes through the CLI, as a user would run it (one fresh process per step):

1. ``kdpc train`` the teacher on synthetic-parts (per seed);
2. ``kdpc record`` it over ``--views`` views per sample into a partseg store (per-point outputs + anchor features);
3. ``kdpc distill --config run.yaml`` the student from that store, once per row, all with the same views, schedule,
   optimiser and epochs; only the ``srkd:`` weights differ (NWSD off):

   ============================  =================================================================
   row                            srkd weights
   ============================  =================================================================
   student CE-only               pointwise 0, affinity 0, cross 0
   + per-point KL                 pointwise 0.3 (T = 2), affinity 0, cross 0
   + relation terms (SRKD)        pointwise 0.3, affinity 1.0 (mse), cross 1e-3 (T = 2): the defaults
   ============================  =================================================================

4. ``kdpc eval --json`` every checkpoint on the test split: instance mIoU and class mIoU.

Prints a markdown table (mean +- sample std over seeds, and each seed's value) and writes ``seg_accuracy.png``
and ``seg_accuracy.json`` to ``--out``. Finished steps are skipped when rerun with the same ``--out`` (delete
the folder to start over). ``--dry-run`` prints the commands only.

Assumes the distill YAML key ``srkd:`` maps to ``kdpc.distill.seg.SrkdConfig`` and the record YAML keys
``anchors`` / ``feature_dim`` to the partseg store's M / D (``kdpc.recorder.seg.make_seg_header_fields``).
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

ROWS = [  # (key, label, srkd weights)
    ("ce", "student CE-only", {"pointwise_weight": 0.0, "affinity_weight": 0.0, "cross_weight": 0.0}),
    ("kd", "student + per-point KL", {"pointwise_weight": 0.3, "affinity_weight": 0.0, "cross_weight": 0.0}),
    ("srkd", "student + per-point KL + relations (SRKD)", {"pointwise_weight": 0.3, "affinity_weight": 1.0,
                                                            "cross_weight": 1e-3}),
]
METRICS = ("inst_miou", "cls_miou")


def run(cmd: list[str], log: Path, dry: bool) -> str:
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {line}", flush=True)
    if dry:
        return ""
    env = {**os.environ, "KDPC_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
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


def evaluate(ckpt: Path, device: str, cache: Path, log: Path, dry: bool) -> dict[str, float]:
    if cache.exists():
        return json.loads(cache.read_text())
    out = run(kdpc("eval", "--model", str(ckpt), "--device", device, "--json"), log, dry)
    if dry:
        return {m: float("nan") for m in METRICS}
    result = json.loads(out.strip().splitlines()[-1])
    metrics = {m: float(result[m]) for m in METRICS}
    cache.write_text(json.dumps(metrics))
    return metrics


def one_seed(args: argparse.Namespace, seed: int, out: Path) -> dict[str, dict[str, float]]:
    d = out / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    log = d / "log.txt"
    data_opts = ["--dataset-opt", f"samples_per_class={args.samples_per_class}",
                 "--dataset-opt", f"num_raw_points={args.raw_points}", "--num-points", str(args.points)]
    teacher = d / "teacher.pt"
    # a checkpoint exists from the first epoch on: only a marker written after the command succeeded means "done"
    if not (d / "teacher.done").exists():
        (d / "teacher.json").unlink(missing_ok=True)  # a result cached from an unfinished run is stale
        run(kdpc("train", "--model", args.teacher, "--dataset", "synthetic-parts", *data_opts,
                 "--epochs", str(args.teacher_epochs), "--batch-size", str(args.batch_size), "--device", args.device,
                 "--seed", str(seed), "--out", str(teacher)), log, args.dry_run)
        if not args.dry_run:
            (d / "teacher.done").touch()
    results = {"teacher": evaluate(teacher, args.device, d / "teacher.json", log, args.dry_run)}
    store = d / "records.zarr"
    if not (d / "records.done").exists():
        rec_cfg = d / "record.yaml"
        rec_cfg.write_text(yaml.safe_dump({"anchors": args.anchors, "feature_dim": args.feature_dim}))
        run(kdpc("record", "--teacher", str(teacher), "--views", str(args.views), "--device", args.device,
                 "--seed", str(seed), "--overwrite", "--config", str(rec_cfg), "--out", str(store)), log, args.dry_run)
        if not args.dry_run:
            (d / "records.done").touch()
    for key, _label, weights in ROWS:
        run_dir = d / key
        if not (d / f"{key}.done").exists():
            (d / f"{key}.json").unlink(missing_ok=True)
            cfg = {"records": str(store), "student": args.student, "epochs": args.student_epochs,
                   "batch_size": args.batch_size, "lr": args.lr, "nwsd_weight": 0.0, "device": args.device,
                   "seed": seed, "out": str(run_dir), "srkd": dict(weights)}
            if args.student_opt:
                cfg["student_cfg"] = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.student_opt)}
            cfg_path = d / f"{key}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            if (run_dir / "metrics.jsonl").exists():  # an interrupted run: continue it
                run(kdpc("distill", "--config", str(cfg_path), "--resume"), log, args.dry_run)
            else:
                run(kdpc("distill", "--config", str(cfg_path)), log, args.dry_run)
            if not args.dry_run:
                (d / f"{key}.done").touch()
        results[key] = evaluate(run_dir / "student.pt", args.device, d / f"{key}.json", log, args.dry_run)
    return results


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(per_seed: dict[int, dict[str, dict[str, float]]], args: argparse.Namespace) -> str:
    seeds = sorted(per_seed)
    labels = [("teacher", f"teacher ({args.teacher})")] + [(k, f"{label} ({args.student})") for k, label, _ in ROWS]
    lines = ["| model | instance mIoU | class mIoU | per seed (instance mIoU) |", "|---|---:|---:|---|"]
    for key, label in labels:
        cells = []
        for m in METRICS:
            mu, sd = mean_std([100 * per_seed[s][key][m] for s in seeds])
            cells.append(f"{mu:.2f} +- {sd:.2f}")
        each = ", ".join(f"{100 * per_seed[s][key]['inst_miou']:.2f}" for s in seeds)
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {each} |")
    return "\n".join(lines)


def plot(per_seed: dict[int, dict[str, dict[str, float]]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted(per_seed)
    keys = ["teacher"] + [k for k, _, _ in ROWS]
    names = ["teacher", "CE only", "+ point KL", "+ relations"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for j, m in enumerate(METRICS):
        stats = [mean_std([100 * per_seed[s][k][m] for s in seeds]) for k in keys]
        xs = [i + (j - 0.5) * width for i in range(len(keys))]
        ax.bar(xs, [mu for mu, _ in stats], width, yerr=[sd for _, sd in stats], capsize=4,
               label=m.replace("_", " "))
        for i, k in enumerate(keys):
            ax.scatter([xs[i]] * len(seeds), [100 * per_seed[s][k][m] for s in seeds], s=8, color="k", zorder=3)
    ax.set_xticks(range(len(keys)), names)
    ax.set_ylabel("mIoU (%)")
    lo = min(100 * per_seed[s][k][m] for s in seeds for k in keys for m in METRICS)
    ax.set_ylim(max(0.0, lo - 10), None)
    ax.set_title(f"synthetic-parts: {args.teacher} -> {args.student}, {len(seeds)} seeds (mean +- std)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-out/seg_accuracy", help="work folder (steps found there are reused)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--teacher", default="pointnet2-seg-tiny")
    ap.add_argument("--student", default="dgcnn-seg-tiny")
    ap.add_argument("--student-opt", action="append", default=[], help="student option KEY=VALUE (repeatable)")
    ap.add_argument("--teacher-epochs", type=int, default=12)
    ap.add_argument("--student-epochs", type=int, default=12)
    ap.add_argument("--samples-per-class", type=int, default=24, help="synthetic-parts train size (x 11 categories)")
    ap.add_argument("--raw-points", type=int, default=512)
    ap.add_argument("--points", type=int, default=256)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--anchors", type=int, default=64)
    ap.add_argument("--feature-dim", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch each, 4 samples per class: a smoke run")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.teacher_epochs, args.student_epochs = "0", 1, 1
        args.samples_per_class, args.views, args.anchors = 4, 2, 32
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed = {s: one_seed(args, s, out) for s in seeds}
    if args.dry_run:
        return 0
    text = table(per_seed, args)
    print(f"\nsynthetic-parts ({args.samples_per_class} samples/class, {args.points} points), {args.views} views, "
          f"anchors {args.anchors} x {args.feature_dim}; {args.teacher_epochs} teacher / {args.student_epochs} student "
          f"epochs; seeds {seeds}\n")
    print(text)
    (out / "seg_accuracy.json").write_text(json.dumps({"args": vars(args), "results": per_seed}, indent=1))
    plot(per_seed, out / "seg_accuracy.png", args)
    print(f"\nwrote {out / 'seg_accuracy.png'} and {out / 'seg_accuracy.json'} ({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

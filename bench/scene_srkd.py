"""Offline SRKD on scenes (synthetic-rooms): teacher vs CE-only student vs offline-SRKD student over paired seeds,
the cost of recording, the step cost of offline SRKD vs CE vs online SRKD, and bytes per point per codec.

    .venv/bin/python bench/scene_srkd.py                 # CPU-sized defaults (docs/benchmarks.md)
    .venv/bin/python bench/scene_srkd.py --quick         # smoke run: 2 small rooms, 1 seed, 1 epoch
    .venv/bin/python bench/scene_srkd.py --device cuda --teacher ptv3 --student ptv3-small --teacher-epochs 300 \\
        --student-epochs 300 --num-points 40000 --views 100

Everything goes through the CLI, one fresh process per step, in ``--jobs`` parallel 1-thread processes:

1. ``kdpc train`` the teacher once (seed 0; the epoch with the best validation mIoU is kept), then
   ``kdpc record`` it over ``--views`` views per training room (timed: the record cost);
2. per seed, with the same data, schedule and seed: the CE-only student (``kdpc train``) and the offline SRKD student
   (``kdpc distill --records`` with kdpc's scene defaults, plus any ``--srkd KEY=VALUE``); both keep the epoch with the best
   validation mIoU; ``kdpc eval --json`` scores each once on the test rooms (every point of the whole rooms);
3. step cost, measured side by side in this run: ``--cost-rounds`` rounds of (CE, offline SRKD, online SRKD with the
   teacher beside the student), ``--cost-epochs`` epochs each, one process at a time; the per-step time is an
   epoch's training time (data, forward, backward, optimiser) over its steps, first epoch dropped; ratios of medians;
4. bytes per point: the teacher recorded again over 2 views per room with each ``--codecs`` codec; output bytes on
   disk per recorded point (``records info``) and the mean per-point KL(T=2) of the decoded outputs against f32.

Prints markdown tables and writes ``scene_srkd.json`` / ``scene_srkd.md`` to ``--out``; finished steps are reused
when rerun with the same ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene_accuracy import ROOT, kdpc, run  # noqa: E402  (bench/scene_accuracy.py)

DEFAULT_CODECS = "f32,f16,u8log,u8log:15,u8log:8,u8log:6,ptopk:2,ptopk:4"


def data_opts(args: argparse.Namespace) -> list[str]:
    opts = ["--dataset", "synthetic-rooms", "--num-points", str(args.num_points)]
    for key in ("rooms", "density"):
        if getattr(args, key) is not None:
            opts += ["--dataset-opt", f"{key}={getattr(args, key)}"]
    return opts


def fit_opts(args: argparse.Namespace, d: Path, epochs: int, seed: int) -> list[str]:
    cfg = d / "run.yaml"
    cfg.write_text(yaml.safe_dump({"eval_every": args.eval_every}))
    return ["--config", str(cfg), "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
            "--device", args.device, "--seed", str(seed)]


def done(marker: Path, cmd: list[str], log: Path, dry: bool) -> None:
    """Run ``cmd`` unless ``marker`` says it finished; a checkpoint exists from epoch 1 on, so only the marker counts."""
    if marker.exists():
        return
    run(cmd, log, dry)
    if not dry:
        marker.touch()


def scored(ckpt: Path, log: Path, args: argparse.Namespace) -> dict:
    cache = ckpt.with_suffix(".eval.json")
    if not cache.exists():
        out = run(kdpc("eval", "--model", str(ckpt), "--device", args.device, "--json"), log, args.dry_run)
        if args.dry_run:
            return {"miou": math.nan, "oa": math.nan}
        cache.write_text(out.strip().splitlines()[-1])
    return json.loads(cache.read_text())


def teacher_and_store(args: argparse.Namespace, out: Path) -> tuple[Path, Path, dict]:
    d = out / "teacher"
    d.mkdir(parents=True, exist_ok=True)
    teacher = d / "teacher.pt"
    done(d / "teacher.done", kdpc("train", "--model", args.teacher, *data_opts(args),
                                  *fit_opts(args, d, args.teacher_epochs, 0), "--out", str(teacher)),
         d / "log.txt", args.dry_run)
    store = out / "rooms.zarr"
    cost_file = out / "record_cost.json"
    if not cost_file.exists():
        t0 = time.perf_counter()
        run(kdpc("record", "--teacher", str(teacher), "--views", str(args.views), "--device", args.device,
                 "--out", str(store)), out / "record.log", args.dry_run)
        if args.dry_run:
            return teacher, store, {}
        info = json.loads(run(kdpc("records", "info", str(store), "--json"), out / "record.log", False))
        cost_file.write_text(json.dumps({"seconds": time.perf_counter() - t0, "records": info["records"],
                                         "points": info["points"], "bytes": info["bytes_on_disk"],
                                         "output_bytes_per_point": info["output_bytes_per_point"],
                                         "feature_bytes_per_record": info["feature_bytes_per_record"]}))
    return teacher, store, json.loads(cost_file.read_text())


def srkd_opts(args: argparse.Namespace) -> list[str]:
    return [x for kv in args.srkd for x in ("--set", f"srkd.{kv}")]


def student_arm(args: argparse.Namespace, out: Path, arm: str, seed: int, store: Path | None) -> dict:
    d = out / f"seed{seed}" / arm
    d.mkdir(parents=True, exist_ok=True)
    fit = fit_opts(args, d, args.student_epochs, seed)
    if arm == "ce":
        ckpt = d / "student.pt"
        cmd = kdpc("train", "--model", args.student, *data_opts(args), *fit, "--out", str(ckpt))
    else:
        ckpt = d / "run" / "student.pt"
        cmd = kdpc("distill", "--records", str(store), "--student", args.student, *fit, *srkd_opts(args),
                   "--out", str(d / "run"))
    done(d / "done", cmd, d / "log.txt", args.dry_run)
    return scored(ckpt, d / "log.txt", args)


def step_cost(args: argparse.Namespace, out: Path, teacher: Path, store: Path) -> dict:
    """Seconds per training step of CE, offline SRKD and online SRKD, rounds interleaved, one process at a time."""
    cache = out / "step_cost.json"
    if cache.exists():
        return json.loads(cache.read_text())
    times: dict[str, list[float]] = {"ce": [], "offline": [], "online": []}
    for r in range(args.cost_rounds):
        for arm in times:
            d = out / "cost" / f"{arm}{r}"
            d.mkdir(parents=True, exist_ok=True)
            fit = fit_opts(args, d, args.cost_epochs, 0) + ["--select", "last"]
            if arm == "ce":
                cmd = kdpc("train", "--model", args.student, *data_opts(args), *fit, "--out", str(d / "s.pt"))
                metrics = d / "s.metrics.jsonl"
            elif arm == "offline":
                cmd = kdpc("distill", "--records", str(store), "--student", args.student, *fit, *srkd_opts(args),
                           "--out", str(d / "r"))
                metrics = d / "r" / "metrics.jsonl"
            else:
                cmd = kdpc("distill", "--online-teacher", str(teacher), "--student", args.student, *fit,
                           *srkd_opts(args), "--set", f"online_views={args.views}", "--out", str(d / "r"))
                metrics = d / "r" / "metrics.jsonl"
            run(cmd, d / "log.txt", args.dry_run)
            if args.dry_run:
                continue
            epochs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            times[arm] += [e["train_time_s"] / steps_per_epoch(args) for e in epochs[1:] or epochs]
    result = {arm: statistics.median(v) if v else math.nan for arm, v in times.items()}
    if not args.dry_run:
        cache.write_text(json.dumps(result))
    return result


def steps_per_epoch(args: argparse.Namespace) -> int:
    from kdpc.data import create_dataset

    opts = {k: getattr(args, k) for k in ("rooms", "density") if getattr(args, k) is not None}
    return max(1, len(create_dataset("synthetic-rooms", split="train", **opts)) // args.batch_size)


def codec_sizes(args: argparse.Namespace, out: Path, teacher: Path) -> list[dict]:
    cache = out / "codecs.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from kdpc.store import RecordReader

    rows, reference = [], None
    for codec in args.codecs:
        store = out / "codecs" / f"{codec.replace(':', '')}.zarr"
        if not store.exists():
            run(kdpc("record", "--teacher", str(teacher), "--views", "2", "--codec", codec, "--device", args.device,
                     "--out", str(store)), out / "codecs" / "log.txt", args.dry_run)
        if args.dry_run:
            continue
        info = json.loads(run(kdpc("records", "info", str(store), "--json"), out / "codecs" / "log.txt", False))
        reader = RecordReader(str(store))
        views = [reader.get_view(r)["logprobs"].astype(np.float64) for r in range(reader.num_records)]
        if reference is None:  # the first codec (f32) is the reference
            reference = views
        kl = float(np.mean(np.concatenate([point_kl(a, b, 2.0) for a, b in zip(reference, views)])))
        rows.append({"codec": codec, "bytes_per_point": info["output_bytes_per_point"], "kl_t2": kl,
                     "points": info["points"], "classes": info["classes"]})
    if not args.dry_run:
        cache.write_text(json.dumps(rows))
    return rows


def point_kl(reference: np.ndarray, decoded: np.ndarray, t: float) -> np.ndarray:
    """KL(softmax(ref / T) || softmax(dec / T)) per point."""
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x / t
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p, q = log_softmax(reference), log_softmax(decoded)
    return (np.exp(p) * (p - q)).sum(-1)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(args, seeds, teacher_score, per_seed, record_cost, cost, codecs) -> str:
    t = 100 * teacher_score["miou"]
    ce = [100 * per_seed[s]["ce"]["miou"] for s in seeds]
    kd = [100 * per_seed[s]["srkd"]["miou"] for s in seeds]
    diff = [b - a for a, b in zip(ce, kd)]
    d_mean, d_sd = mean_std(diff)
    se = d_sd / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
    gap = [(b - a) / (t - a) for a, b in zip(ce, kd) if t != a]
    g_mean, g_sd = mean_std(gap) if gap else (math.nan, 0.0)
    lines = [f"synthetic-rooms, teacher {args.teacher} ({args.teacher_epochs} epochs, seed 0), student {args.student} "
             f"({args.student_epochs} epochs), {len(seeds)} paired seeds, {args.views} recorded views per room, "
             f"SRKD {' '.join(args.srkd) or 'defaults'}; "
             "checkpoints chosen by validation mIoU, test scored once", "",
             "| model | test mIoU (%) | per seed |", "|---|---:|---|",
             f"| teacher ({args.teacher}) | {t:.2f} | seed 0 |",
             "| student, CE only | {:.2f} +- {:.2f} | {} |".format(*mean_std(ce), ", ".join(f"{x:.2f}" for x in ce)),
             "| student, offline SRKD | {:.2f} +- {:.2f} | {} |".format(*mean_std(kd), ", ".join(f"{x:.2f}" for x in kd)),
             "", f"offline SRKD - CE: {d_mean:+.2f} +- {se:.2f} mIoU (paired mean +- s.e., {len(diff)} seeds; per seed "
             + ", ".join(f"{x:+.2f}" for x in diff) + f"); teacher - CE gap closed: {100 * g_mean:.1f}% +- "
             f"{100 * g_sd / math.sqrt(max(len(gap), 1)):.1f}%"]
    if record_cost:
        lines += ["", f"record: {record_cost['records']} views ({record_cost['points']:,} points) in "
                  f"{record_cost['seconds']:.0f} s ({record_cost['records'] / record_cost['seconds']:.2f} views/s, "
                  "process start included); store "
                  f"{record_cost['bytes']:,} bytes, outputs {record_cost['output_bytes_per_point']:.2f} B/point, "
                  f"anchor features {record_cost['feature_bytes_per_record']:,.0f} B/view"]
    if cost:
        lines += ["", "| step | s/step | vs CE |", "|---|---:|---:|"]
        for arm, label in (("ce", "CE only"), ("offline", "offline SRKD (store)"), ("online", "online SRKD (teacher)")):
            lines.append(f"| {label} | {cost[arm]:.3f} | {cost[arm] / cost['ce']:.3f} |")
        lines.append(f"\noffline / CE = {cost['offline'] / cost['ce']:.3f}; offline / online = "
                     f"{cost['offline'] / cost['online']:.3f}")
    if codecs:
        lines += ["", f"| codec | output bytes / point | mean per-point KL(T=2) vs f32 |", "|---|---:|---:|"]
        for row in codecs:
            lines.append(f"| {row['codec']} | {row['bytes_per_point']:.2f} | {row['kl_t2']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-out/scene_srkd", help="work folder (steps found there are reused)")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--teacher", default="ptv3-tiny")
    ap.add_argument("--student", default="ptv3-nano")
    ap.add_argument("--teacher-epochs", type=int, default=50)
    ap.add_argument("--student-epochs", type=int, default=30)
    ap.add_argument("--views", type=int, default=30, help="recorded views per room (one per student epoch)")
    ap.add_argument("--batch-size", type=int, default=2, help="rooms per step")
    ap.add_argument("--num-points", type=int, default=6000, help="most points of a training view (a seeded crop)")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--eval-every", type=int, default=5, help="validate every N epochs (and at the last)")
    ap.add_argument("--rooms", type=int, default=None, help="rooms per split (default: the dataset's 24/6/8)")
    ap.add_argument("--density", type=float, default=None, help="surface points per m^2 (default: the dataset's)")
    ap.add_argument("--srkd", action="append", default=[], metavar="KEY=VALUE",
                    help="an SRKD option of the distilled student (repeatable), e.g. pointwise_weight=1.0")
    ap.add_argument("--codecs", default=DEFAULT_CODECS, help="comma-separated; the first is the KL reference")
    ap.add_argument("--cost-rounds", type=int, default=2)
    ap.add_argument("--cost-epochs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="parallel 1-thread processes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 small rooms, 1 seed, 1 epoch each")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.teacher_epochs, args.student_epochs, args.views = "0", 1, 1, 2
        args.rooms, args.density, args.num_points, args.eval_every = 2, 40.0, 1500, 1
        args.cost_rounds, args.cost_epochs = 1, 2
        if args.out == ap.get_default("out"):
            args.out = "bench-out/scene_srkd-quick"
    if args.jobs > 1:  # parallel torch processes of 2 threads each on 2 cores slow each other ~10x
        import os

        os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        ce = {s: pool.submit(student_arm, args, out, "ce", s, None) for s in seeds}  # needs no teacher: runs meanwhile
        teacher, store, record_cost = teacher_and_store(args, out)
        srkd = {s: pool.submit(student_arm, args, out, "srkd", s, store) for s in seeds}
        per_seed = {s: {"ce": ce[s].result(), "srkd": srkd[s].result()} for s in seeds}
    teacher_score = scored(teacher, out / "teacher" / "log.txt", args)
    cost = step_cost(args, out, teacher, store)
    codecs = codec_sizes(args, out, teacher)
    if args.dry_run:
        return 0
    from common import machine_line  # bench/common.py

    text = machine_line(args.device) + "\n\n" + report(args, seeds, teacher_score, per_seed, record_cost, cost, codecs)
    print(text)
    (out / "scene_srkd.json").write_text(json.dumps({"args": vars(args), "teacher": teacher_score, "per_seed": per_seed,
                                                     "record_cost": record_cost, "step_cost": cost, "codecs": codecs},
                                                    indent=1, default=str))
    (out / "scene_srkd.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

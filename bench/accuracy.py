"""Accuracy evidence on the embedded dataset: does offline distillation (and NWSD) make the small student better?

One teacher; for every student variant several seeds (mean +- std of test OA / mAcc):
  CE only | online KD | offline KD | offline KD + NWSD (default source) ; then the NWSD ablation (source x beta)
  and OA vs the number of recorded views. Runs are spread over --jobs processes (1 torch thread each).

    python bench/accuracy.py                          # CPU defaults: ~25 min on 2 quiet cores
    python bench/accuracy.py --quick                  # smoke run (1 seed, few epochs): checks the pipeline only
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, markdown_table  # noqa: E402


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run in a worker process; returns its test metrics."""
    import os

    os.environ["KDPC_NO_PROGRESS"] = "1"
    import torch

    torch.set_num_threads(1)
    from kdpc.distill.trainer import DistillConfig, distill
    from kdpc.training.evaluate import evaluate_checkpoint
    from kdpc.training.train import TrainConfig, train

    quiet = lambda line: None  # noqa: E731
    started = time.perf_counter()
    if spec["kind"] == "train":
        _, path = train(TrainConfig(**spec["cfg"]), log=quiet)
    else:
        _, run = distill(DistillConfig(**spec["cfg"]), log=quiet)
        path = run / "student.pt"
    result = evaluate_checkpoint(str(path), device="cpu")
    return {**spec, "oa": result["oa"], "macc": result["macc"], "params": result["params"],
            "seconds": time.perf_counter() - started}


def run_all(specs: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    todo = [s for s in specs if not Path(s["done_file"]).exists()]
    results = [json.loads(Path(s["done_file"]).read_text()) for s in specs if Path(s["done_file"]).exists()]
    with mp.get_context("spawn").Pool(jobs) as pool:
        for result in pool.imap_unordered(_job, todo):
            Path(result["done_file"]).write_text(json.dumps(result))  # finished runs survive an interrupted bench
            print(f"  {result['name']:<28s} seed {result['seed']}: OA {100 * result['oa']:.2f} "
                  f"({result['seconds']:.0f}s)", flush=True)
            results.append(result)
    return results


def summarise(results: list[dict[str, Any]], names: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        runs = [r for r in results if r["name"] == name]
        if not runs:
            continue
        oa = [100 * r["oa"] for r in runs]
        macc = [100 * r["macc"] for r in runs]
        std = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
        rows.append([name, f"{statistics.mean(oa):.2f} ± {std(oa):.2f}", f"{statistics.mean(macc):.2f} ± {std(macc):.2f}",
                     str(len(runs)), f"{runs[0]['params']:,}"])
    return rows


def mean_oa(results, name) -> float:
    runs = [100 * r["oa"] for r in results if r["name"] == name]
    return statistics.mean(runs) if runs else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="pointmlp-tiny")
    p.add_argument("--student", default="pointnet-tiny")
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sweep-seeds", type=int, default=1, help="seeds for the OA-vs-views sweep")
    p.add_argument("--views", type=int, default=10, help="recorded views the main comparison distills from")
    p.add_argument("--view-sweep", default="1,2,5,10,20")
    p.add_argument("--nwsd-sources", default="ema,past,sharpen")
    p.add_argument("--nwsd-weights", default="-0.05,-0.2")
    p.add_argument("--default-source", default=None, help="NWSD source of the main table (default: kdpc's default)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--workdir", default="bench-out/accuracy")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, 2 views: a smoke run of the pipeline")
    args = p.parse_args()
    if args.quick:
        args.teacher_epochs, args.epochs, args.seeds, args.sweep_seeds, args.view_sweep = 2, 2, 1, 1, "1,2"
        args.views, args.nwsd_weights = 2, "-0.05"
    from kdpc.distill.trainer import DistillConfig
    from kdpc.recorder import RecordConfig, record

    default = DistillConfig(records="x")
    source = args.default_source or default.nwsd_source
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sweep = [int(v) for v in args.view_sweep.split(",")]
    max_views = max(sweep + [args.views])
    started = time.perf_counter()

    print(f"== teacher {args.teacher}")
    teacher = work / "teacher.pt"
    teacher_spec = {"kind": "train", "name": f"teacher ({args.teacher})", "seed": 0, "done_file": str(work / "teacher.json"),
                    "cfg": {"model": args.teacher, "epochs": args.teacher_epochs, "out": str(teacher), "seed": 0,
                            "device": "cpu"}}
    results = run_all([teacher_spec], 1)
    store = work / f"records-{max_views}v.zarr"
    print(f"== record {max_views} views")
    record(RecordConfig(teacher=str(teacher), views=max_views, out=str(store), device="cpu", resume=store.exists()),
           log=lambda line: None, show_progress=False)

    seeds = range(args.seeds)
    specs = []

    def distill_spec(name: str, seed: int, **cfg) -> dict[str, Any]:
        tag = name.replace(" ", "_").replace("/", "_").replace("(", "").replace(")", "").replace(",", "")
        return {"kind": "distill", "name": name, "seed": seed, "done_file": str(work / f"{tag}-s{seed}.json"),
                "cfg": {"records": str(store), "student": args.student, "epochs": args.epochs, "seed": seed,
                        "device": "cpu", "out": str(work / f"{tag}-s{seed}"), **cfg}}

    for seed in seeds:
        specs.append({"kind": "train", "name": "student CE only", "seed": seed, "done_file": str(work / f"ce-s{seed}.json"),
                      "cfg": {"model": args.student, "epochs": args.epochs, "out": str(work / f"ce-s{seed}.pt"),
                              "seed": seed, "device": "cpu"}})
        specs.append(distill_spec("student online KD", seed, records=None, online_teacher=str(teacher), nwsd_weight=0.0,
                                  online_views=args.views))
        specs.append(distill_spec("student offline KD", seed, nwsd_weight=0.0, views=args.views))
        specs.append(distill_spec(f"student offline KD + NWSD ({source})", seed, nwsd_source=source,
                                  nwsd_weight=default.nwsd_weight, views=args.views))
        for src, beta in itertools.product(args.nwsd_sources.split(","), [float(b) for b in args.nwsd_weights.split(",")]):
            if src == source and beta == default.nwsd_weight:
                continue  # the main table's run
            specs.append(distill_spec(f"NWSD {src} beta={beta}", seed, nwsd_source=src, nwsd_weight=beta,
                                      views=args.views))
        for k in sweep:
            if k != args.views and seed < args.sweep_seeds:
                specs.append(distill_spec(f"offline KD + NWSD, {k} views", seed, nwsd_source=source,
                                          nwsd_weight=default.nwsd_weight, views=k))
    print(f"== {len(specs)} student runs on {args.jobs} processes")
    results += run_all(specs, args.jobs)

    main_names = [f"teacher ({args.teacher})", "student CE only", "student online KD", "student offline KD",
                  f"student offline KD + NWSD ({source})"]
    ablation_names = ["student offline KD", f"student offline KD + NWSD ({source})"] + sorted(
        {r["name"] for r in results if r["name"].startswith("NWSD ")})
    view_names = {k: (f"student offline KD + NWSD ({source})" if k == args.views else f"offline KD + NWSD, {k} views")
                  for k in sweep}
    header = ["run", "OA % (mean ± std)", "mAcc %", "seeds", "params"]
    lines = [f"Machine: {machine_line('cpu')}", f"Command: `python bench/accuracy.py {' '.join(sys.argv[1:])}`",
             f"Teacher {args.teacher} ({args.teacher_epochs} epochs, 1 seed); students {args.student}, {args.epochs} "
             f"epochs; KD from {args.views} recorded views; total {(time.perf_counter() - started) / 60:.0f} min.", "",
             markdown_table(header, summarise(results, main_names)), "",
             "NWSD ablation (beta = signed weight; `offline KD` is beta = 0):", "",
             markdown_table(header, summarise(results, ablation_names)), "", "OA vs number of recorded views:", "",
             markdown_table(["views", "OA % (mean ± std)", "mAcc %", "seeds", "params"],
                            [[str(k)] + row[1:] for k in sweep for row in summarise(results, [view_names[k]])])]
    gains = {"offline KD - CE only": mean_oa(results, "student offline KD") - mean_oa(results, "student CE only"),
             "offline KD - online KD": mean_oa(results, "student offline KD") - mean_oa(results, "student online KD"),
             "NWSD - offline KD": mean_oa(results, main_names[-1]) - mean_oa(results, "student offline KD")}
    goals = {"offline KD - CE only": 1.5, "offline KD - online KD": -0.3, "NWSD - offline KD": 0.0}
    lines += ["", markdown_table(["difference (OA points)", "measured", "goal", "met"],
                                 [[k, f"{v:+.2f}", f">= {goals[k]:+.1f}", "yes" if v >= goals[k] else "NO"]
                                  for k, v in gains.items()])]
    report = "\n".join(lines)
    print("\n" + report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.md").write_text(report + "\n")
    (out / "accuracy.json").write_text(json.dumps(results, indent=1))
    _plot(out / "accuracy.png", results, main_names, sweep, view_names)


def _plot(path: Path, results, main_names, sweep, view_names) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def stats(name):
        xs = [100 * r["oa"] for r in results if r["name"] == name]
        return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (float("nan"), 0.0)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    means, stds = zip(*(stats(n) for n in main_names))
    left.bar(range(len(main_names)), means, yerr=stds, capsize=4, color="#4c72b0")
    left.set_xticks(range(len(main_names)), [n.replace("student ", "") for n in main_names], rotation=20, ha="right",
                    fontsize=8)
    left.set_ylabel("test OA (%)")
    left.set_ylim(max(0, min(means) - 10), 100)
    sweep_stats = [stats(view_names[k]) for k in sweep]
    right.errorbar(sweep, [m for m, _ in sweep_stats], yerr=[s for _, s in sweep_stats], marker="o", capsize=4)
    right.set_xscale("log")
    right.set_xticks(sweep, [str(k) for k in sweep])
    right.set_xlabel("recorded views per sample")
    right.set_ylabel("student test OA (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Does offline distillation make the small student better?  The paired-seed benchmark of docs/benchmarks.md.

One teacher (the shipped recipe: pointmlp-tiny, 60 epochs, no label smoothing), recorded once (50 views, the
recorder's own view stream, with the teacher's 256-dim embedding of every view: --feature-dim, kdpc record's
default); then for every student and every seed the arms below, each seed's arms sharing the
student's initialisation seed and data order where the code allows. Every run keeps the epoch chosen on the
validation split; the test split is scored once at the end and never chooses anything.

  ce       the student trained alone (kdpc train)
  kd       offline KD from the records with kdpc distill's defaults (DIST relations at T 2, and for a student
           whose embedding is at least as wide as the recorded one the embedding matching of kdpc.distill.embedding)
  dist     kd without the embedding matching (--feature-weight 0: the default before 2026-12-03)
  emb      kd with the embedding matching for every student (--feature-weight 10)
  kdlin    kd with the KD weight falling linearly from 1 to 0 over the run (--kd-schedule linear)
  kl       offline KD with Hinton's KL at T 2 instead (the default before DIST)
  nwsd     kd + negative-weight self-distillation (sharpen, -0.2)
  online   the classic online KD baseline: the teacher runs every step on the trainer's views
  nokd     CE on the recorded views, no KD or embedding term (the finite-view penalty)
  zkl      offline KD with logit-standardised KL at T 2 (Sun et al., 2024)
  zkl9     the same with that paper's weights: KD 9, CE 0.1
  rel      kd + the teacher's answer relations asked of the student's embedding (--relation-weight 10)

--teacher-seeds 100,101,102 makes the teacher an equal-weight ensemble of the recipe trained with those seeds
(kdpc's other route to a strong teacher): each member is trained and recorded on the same views, the stores are
merged (``kdpc records merge --embedding-from`` the first member's, so the students keep the embedding term) and the
students distil from the merged store; the teacher row scores the ensemble the way ``kdpc eval`` does (the mean of the
members' probabilities), each member beneath it. The online arm needs one live teacher and is refused with it.

--teacher-samples-per-class N trains the teacher on a larger synthetic set: N new shapes a class from the same
generator and settings (its own, larger val chooses its epoch). It is recorded on the students' train split and its
row is scored on the students' val and test, so the table compares it with them on the same shapes: a teacher that
has seen data the students never see, the usual case of a teacher trained elsewhere. The online arm is refused.

--augment KEY=VALUE (kdpc.augment.AugmentConfig keys, e.g. scale_low=0.9 scale_high=1.1111) sets the shape-level
augmentation of every run: the teacher's training views, the recorded views (which the offline arms replay), the CE
students' training views and the online arm's views, so every arm still sees views of one distribution.

--selection last reports every run (the teacher's included) at its last epoch instead, from the runs' last.pt
(scored once on val and test and cached next to the run's JSON): the same runs under the protocol's other honest
rule, to show whether a conclusion depends on the rule.

Per arm: val and test OA mean +- std; against CE the paired difference +- standard error, and the fraction of the
teacher - CE gap closed (paired mean +- s.e.). Runs go to --jobs 1-thread processes and survive interruption
(each finished run is a JSON file in --workdir; rerunning skips them). A workdir holds one teacher: asking it for
another (model, options, epochs, seed or data) is refused in one line, so no student is ever reported as another
teacher's.

    python bench/accuracy.py                                     # ~6 CPU-hours: run it on a quiet box
    python bench/accuracy.py --students pointnet-tiny --arms ce,kd --seeds 1,2,3
    python bench/accuracy.py --teacher-opt embed_dim=64 --workdir bench-out/wide   # a twice-wider teacher
    python bench/accuracy.py --teacher-seeds 100,101,102,103,104 --workdir bench-out/ens5   # a 5-seed ensemble
    python bench/accuracy.py --teacher-points 512 --workdir bench-out/res512   # a teacher reading every raw point
    python bench/accuracy.py --teacher-samples-per-class 400 --students dgcnn-tiny --arms ce,kd --workdir bench-out/data4x
    python bench/accuracy.py --augment scale_low=0.9 --augment scale_high=1.1111111111111112 --students dgcnn-tiny \
        --arms ce,kd --workdir bench-out/scale09     # the milder-scale runs of docs/benchmarks.md
    python bench/accuracy.py --quick                             # a 2-minute smoke run of the pipeline
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, markdown_table  # noqa: E402

from kdpc.augment import AugmentConfig  # noqa: E402
from kdpc.cli.common import parse_kv  # noqa: E402
from kdpc.data.synthetic import DEFAULT_NUM_POINTS as SYNTHETIC_POINTS  # noqa: E402
from kdpc.data.synthetic import DEFAULT_SAMPLES_PER_CLASS  # noqa: E402
from kdpc.errors import KdpcError  # noqa: E402

ARMS = {"ce": "CE only", "kd": "offline KD", "dist": "offline KD, logits only", "kl": "offline KD, KL", "nwsd": "offline KD + NWSD",
        "online": "online KD", "nokd": "recorded views, no KD",
        "zkl": "offline KD, z-scored KL", "zkl9": "offline KD, z-scored KL (KD 9, CE 0.1)",
        "rel": "offline KD + answer relations", "kdlin": "offline KD, KD weight 1 -> 0",
        "emb": "offline KD + embedding matching"}


TEACHER_KEYS = ("model", "epochs", "seed", "model_cfg", "dataset_cfg", "num_points", "augment")  # what makes a workdir's teacher


def val_and_test(score) -> dict[str, float]:
    """``{"val/oa": .., "test/oa": ..}`` from ``score(split)``, an evaluate_* call's result for that split."""
    return {f"{split}/oa": score(split)["oa"] for split in ("val", "test")}


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker process (1 torch thread); returns the chosen checkpoint's metrics."""
    import os

    os.environ["KDPC_NO_PROGRESS"] = "1"
    import torch

    torch.set_num_threads(1)
    from kdpc.checkpoint import load_checkpoint
    from kdpc.distill.trainer import DistillConfig, distill
    from kdpc.recorder import RecordConfig, record
    from kdpc.training.train import TrainConfig, train

    quiet = lambda line: None  # noqa: E731
    started = time.perf_counter()
    if spec["kind"] == "record":
        record(RecordConfig(**spec["cfg"]), log=quiet, show_progress=False)
        return {**spec, "metrics": {}, "seconds": time.perf_counter() - started}
    if spec["kind"] == "merge":
        from kdpc.store.share import merge_stores

        merge_stores(**spec["cfg"], show_progress=False)
        return {**spec, "metrics": {}, "seconds": time.perf_counter() - started}
    if spec["kind"] == "ensemble":
        from kdpc.training.evaluate import evaluate_ensemble

        scores = val_and_test(lambda split: evaluate_ensemble(spec["cfg"]["checkpoints"], split=split, device="cpu",
                                                              dataset_options=spec.get("score_options")))
        return {**spec, "metrics": scores, "seconds": time.perf_counter() - started}
    if spec["kind"] == "score":  # a teacher trained on other data, scored on the students' val and test
        from kdpc.training.evaluate import evaluate_checkpoint

        chosen = load_checkpoint(spec["cfg"]["checkpoint"]).metrics
        scores = val_and_test(lambda split: evaluate_checkpoint(spec["cfg"]["checkpoint"], split=split, device="cpu",
                                                                dataset_options=spec["score_options"]))
        return {**spec, "metrics": {"epoch": chosen.get("epoch"), "selected_by": chosen.get("selected_by"), **scores},
                "seconds": time.perf_counter() - started}
    if spec["kind"] == "train":
        _, path = train(TrainConfig(**spec["cfg"]), log=quiet)
    else:
        _, run = distill(DistillConfig(**spec["cfg"]), log=quiet)
        path = run / "student.pt"
    return {**spec, "metrics": load_checkpoint(path).metrics, "seconds": time.perf_counter() - started}


def run_all(specs: list[dict[str, Any]], jobs: int, report_only: bool = False) -> list[dict[str, Any]]:
    done = [s for s in specs if Path(s["done_file"]).exists()]
    results = [json.loads(Path(s["done_file"]).read_text()) for s in done]
    todo = [s for s in specs if s not in done]
    if not todo or report_only:
        return results
    with mp.get_context("spawn").Pool(min(jobs, len(todo))) as pool:
        for result in pool.imap_unordered(_job, todo):
            Path(result["done_file"]).write_text(json.dumps(result))  # finished runs survive an interrupted bench
            metrics = result["metrics"]
            scored = f"test OA {100 * metrics['test/oa']:6.2f}" if "test/oa" in metrics else "done          "
            print(f"  {result['name']:<40s} {scored} ({result['seconds'] / 60:.1f} min)", flush=True)
            results.append(result)
        pool.close()
        pool.join()
    return results


def at_last_epoch(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` with its val and test OA taken from its last epoch's checkpoint (scored once, then cached)."""
    import torch

    from kdpc.training.evaluate import evaluate_checkpoint
    from kdpc.training.run_files import sidecar

    torch.set_num_threads(1)  # scored like the runs: one thread

    cache = Path(run["done_file"]).with_suffix(".last-epoch.json")
    if cache.exists():
        scores = json.loads(cache.read_text())
    elif run["kind"] == "ensemble":  # the members' last epochs, mixed as kdpc eval mixes them
        from kdpc.training.evaluate import evaluate_ensemble

        lasts = [str(sidecar(Path(c), "last.pt")) for c in run["cfg"]["checkpoints"]]
        scores = val_and_test(lambda split: evaluate_ensemble(lasts, split=split, device="cpu",
                                                              dataset_options=run.get("score_options")))
        cache.write_text(json.dumps(scores))
    else:
        if run["kind"] == "score":
            last = sidecar(Path(run["cfg"]["checkpoint"]), "last.pt")
        else:
            out = Path(run["cfg"]["out"])
            last = sidecar(out, "last.pt") if run["kind"] == "train" else out / "last.pt"
        scores = val_and_test(lambda split: evaluate_checkpoint(str(last), split=split, device="cpu",
                                                                dataset_options=run.get("score_options")))
        cache.write_text(json.dumps(scores))
    chosen = {k: v for k, v in run["metrics"].items() if k != "epoch"}  # the chosen epoch's number no longer applies
    return {**run, "metrics": {**chosen, **scores, "selected_by": "last epoch"}}


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}" if xs else "-"


def mean_se(xs: list[float], scale: float = 1.0, unit: str = "") -> str:
    if not xs:
        return "-"
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return f"{scale * statistics.mean(xs):+.2f}{unit} ± {scale * se:.2f}{unit}"


def test_oa(run: dict[str, Any]) -> float:
    return 100 * run["metrics"]["test/oa"]


def student_rows(results: list[dict[str, Any]], student: str, arms: list[str], teacher_oa: float) -> list[list[str]]:
    runs = {arm: {r["seed"]: r for r in results if r.get("student") == student and r.get("arm") == arm} for arm in arms}
    rows = []
    for arm in arms:
        by_seed = runs[arm]
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        test = [test_oa(by_seed[s]) for s in seeds]
        val = [100 * by_seed[s]["metrics"]["val/oa"] for s in seeds]
        diff = paired(results, student, arm, "ce") if arm != "ce" else []
        gap = gap_closed(results, student, arm, teacher_oa) if arm != "ce" else []
        rows.append([student, ARMS[arm], mean_std(val), mean_std(test), mean_se(diff), mean_se(gap, 100, " %"),
                     ", ".join(f"{x:.2f}" for x in test), str(len(seeds))])
    return rows


def gap_closed(results, student: str, arm: str, teacher_oa: float) -> list[float]:
    ce = {r["seed"]: test_oa(r) for r in results if r.get("student") == student and r.get("arm") == "ce"}
    runs = {r["seed"]: test_oa(r) for r in results if r.get("student") == student and r.get("arm") == arm}
    return [(runs[s] - ce[s]) / (teacher_oa - ce[s]) for s in sorted(runs) if s in ce and teacher_oa > ce[s]]


def paired(results, student: str, arm: str, base: str) -> list[float]:
    a = {r["seed"]: test_oa(r) for r in results if r.get("student") == student and r.get("arm") == arm}
    b = {r["seed"]: test_oa(r) for r in results if r.get("student") == student and r.get("arm") == base}
    return [a[s] - b[s] for s in sorted(a) if s in b]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="pointmlp-tiny")
    p.add_argument("--teacher-epochs", type=int, default=60)
    p.add_argument("--teacher-seed", type=int, default=100)
    p.add_argument("--teacher-seeds", default=None, metavar="S1,S2,...",
                   help="an ensemble teacher: the recipe trained with each of these seeds, recorded and merged "
                        "(replaces --teacher-seed)")
    p.add_argument("--teacher-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a teacher model option, e.g. embed_dim=64 for a twice-wider pointmlp-tiny; repeatable")
    p.add_argument("--teacher-points", type=int, default=None, metavar="N",
                   help="the teacher trains on and records N points of each view; the students read the first of "
                        "them at their own (the data's) resolution, kdpc distill --num-points")
    p.add_argument("--teacher-samples-per-class", type=int, default=None, metavar="N",
                   help="the teacher trains on a larger synthetic set, N new shapes a class from the same generator "
                        "(its own val chooses its epoch); it is recorded on the students' train split and scored on "
                        "their val and test: a teacher with data the students never see")
    p.add_argument("--augment", action="append", default=[], metavar="KEY=VALUE",
                   help="the shape-level augmentation of every run (teacher, records, CE and online students), e.g. "
                        "scale_low=0.9; repeatable")
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--feature-dim", type=int, default=256,
                   help="record the teacher's embedding of each view this wide (0: logits only)")
    p.add_argument("--students", default="pointnet-tiny,pointnet2-tiny")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--arms", default="ce,kd,kl,nwsd,online,nokd")
    p.add_argument("--online-seeds", default=None, help="seeds of the online arm (default: --seeds)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--workdir", default="bench-out/accuracy")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--report", action="store_true", help="only summarise the runs already finished in --workdir")
    p.add_argument("--selection", choices=["val", "last"], default="val",
                   help="report each run's epoch chosen on val (the runs' own choice) or its last epoch")
    p.add_argument("--quick", action="store_true", help="tiny data, 2 epochs, 1 seed: checks the pipeline only")
    args = p.parse_args()
    try:
        teacher_opts = {"model_cfg": parse_kv(tuple(args.teacher_opt), "--teacher-opt")} if args.teacher_opt else {}
        augment = parse_kv(tuple(args.augment), "--augment")
        if augment and AugmentConfig.from_dict(augment).mix:
            raise KdpcError("--augment mix: kdpc train draws plain views, so the CE students could not see them")
    except KdpcError as err:
        p.error(str(err))
    data: dict[str, Any] = {}
    if args.quick:
        args.teacher_epochs, args.epochs, args.views, args.seeds = 2, 2, 2, "1"
        data = {"dataset_cfg": {"samples_per_class": 4, "num_raw_points": 256}, "num_points": 128}
    seeds = [int(s) for s in args.seeds.split(",")]
    online_seeds = [int(s) for s in (args.online_seeds or args.seeds).split(",")]
    students, arms = args.students.split(","), args.arms.split(",")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    try:
        teacher_seeds = [int(x) for x in args.teacher_seeds.split(",")] if args.teacher_seeds else [args.teacher_seed]
    except ValueError:
        p.error(f"--teacher-seeds takes comma-separated integers, got {args.teacher_seeds!r}")
    if len(set(teacher_seeds)) != len(teacher_seeds):
        p.error(f"--teacher-seeds names a seed twice: {args.teacher_seeds}")
    ensemble = len(teacher_seeds) > 1
    if ensemble and "online" in arms:
        p.error("the online arm runs one live teacher: leave it out of --arms with --teacher-seeds")
    if args.teacher_points is not None and "online" in arms:
        p.error("the online teacher reads the student's own points: leave the online arm out of --arms with "
                "--teacher-points")
    bigger_data = args.teacher_samples_per_class is not None
    if bigger_data and "online" in arms:
        p.error("the online arm trains on the teacher's own data: leave it out of --arms with "
                "--teacher-samples-per-class")
    student_spc = data.get("dataset_cfg", {}).get("samples_per_class")
    student_train_spc = student_spc or DEFAULT_SAMPLES_PER_CLASS["train"]
    if bigger_data and args.teacher_samples_per_class <= student_train_spc:
        p.error(f"--teacher-samples-per-class {args.teacher_samples_per_class}: the students' train split has "
                f"{student_train_spc} shapes a class, so the teacher needs more")
    # the teacher's data; the students' data is where it is recorded and scored (None: the split's default size)
    teacher_data = {"dataset_cfg": {**data.get("dataset_cfg", {}), "samples_per_class": args.teacher_samples_per_class}} \
        if bigger_data else {}
    student_data = {"samples_per_class": student_spc}
    student_points = data.get("num_points", SYNTHETIC_POINTS)
    if args.teacher_points is not None and args.teacher_points < student_points:
        p.error(f"--teacher-points {args.teacher_points}: the students read {student_points} points of each view, "
                "so the teacher needs at least as many")
    teacher_points = {"num_points": args.teacher_points} if args.teacher_points is not None else {}
    fewer_points = {"num_points": student_points} if args.teacher_points not in (None, student_points) else {}
    features = f"-f{args.feature_dim}" if args.feature_dim else ""
    views_augment = {"augment": augment} if augment else {}  # absent when not given: workdirs made before it stay valid
    # member 0 keeps the single-teacher names, so a workdir's single teacher is its ensemble's first member
    members = [("" if k == 0 else f"-s{seed}", seed) for k, seed in enumerate(teacher_seeds)]
    teacher = work / "teacher.pt"
    member_stores = [work / f"records-{args.views}v{features if k == 0 else ''}{tag}.zarr"
                     for k, (tag, _) in enumerate(members)]
    store = work / f"records-{args.views}v{features}-ens{len(members)}.zarr" if ensemble else member_stores[0]
    print(f"== teacher {args.teacher}, {args.teacher_epochs} epochs"
          f"{', seeds ' + args.teacher_seeds if ensemble else ''}; then {args.views} recorded views")
    asked = [{"model": args.teacher, "epochs": args.teacher_epochs, "seed": seed, "device": "cpu",
              "out": str(work / f"teacher{tag}.pt"), **teacher_opts, **data, **teacher_data, **teacher_points,
              **views_augment}
             for tag, seed in members]
    results = run_all([{"kind": "train", "name": f"teacher{tag}", "arm": "teacher", "seed": seed,
                        "done_file": str(work / f"teacher{tag}.json"), "cfg": cfg}
                       for (tag, seed), cfg in zip(members, asked)], args.jobs)
    results.sort(key=lambda r: teacher_seeds.index(r["seed"]))
    for done, cfg in zip(results, asked):
        trained = done["cfg"]  # what the workdir's teacher was trained with: a reused workdir may hold another
        differs = [f"{key} {trained.get(key)!r} (asked {cfg.get(key)!r})" for key in TEACHER_KEYS
                   if trained.get(key) != cfg.get(key)]
        if differs:  # students distilled from one teacher must never be reported as another's
            p.error(f"{work} holds a teacher trained with {', '.join(differs)}: use another --workdir for this teacher")
    trained = results[0]["cfg"]
    run_all([{"kind": "record", "name": f"record{tag}", "seed": 0, "done_file": str(work / f"record{tag}.json"),
              "cfg": {"teacher": str(work / f"teacher{tag}.pt"), "views": args.views, "out": str(path),
                      "device": "cpu", "seed": 0, "feature_dim": args.feature_dim if k == 0 else 0, "workers": 0,
                      "resume": path.exists(), **({"dataset_cfg": student_data} if bigger_data else {}),
                      **views_augment}}
             for k, ((tag, _), path) in enumerate(zip(members, member_stores))], args.jobs)
    if ensemble:
        run_all([{"kind": "merge", "name": "merge", "seed": 0, "done_file": str(work / f"merge-ens{len(members)}.json"),
                  "cfg": {"inputs": [str(x) for x in member_stores], "out": str(store), "overwrite": True,
                          "embedding_from": str(member_stores[0]) if args.feature_dim else None}}], 1)
        scored = run_all([{"kind": "ensemble", "name": "ensemble", "arm": "teacher", "seed": teacher_seeds[0],
                           "done_file": str(work / f"ensemble{len(members)}.json"),
                           "cfg": {"checkpoints": [c["out"] for c in asked]},
                           **({"score_options": student_data} if bigger_data else {})}], 1)
        results = scored + results
    if bigger_data:  # every teacher row is scored on the students' val and test, not on the teacher's own
        scores = run_all([
            {"kind": "score", "name": f"score{tag}", "arm": "teacher", "seed": seed, "score_options": student_data,
             "done_file": str(work / f"score{tag}.json"), "cfg": {"checkpoint": str(work / f"teacher{tag}.pt")}}
            for tag, seed in members], 1)
        scores.sort(key=lambda r: teacher_seeds.index(r["seed"]))
        results = (results[:1] if ensemble else []) + scores  # the ensemble's row stays first
    if args.selection == "last":
        results = [at_last_epoch(r) for r in results]
    teacher_oa = test_oa(results[0])
    teacher_label = " ".join([trained["model"], *(f"{k}={v}" for k, v in trained.get("model_cfg", {}).items()),
                              *([f"at {args.teacher_points} points"] if fewer_points else []),
                              *([f"trained on {args.teacher_samples_per_class} shapes a class"] if bigger_data else [])])
    teacher_rows = [["teacher " + teacher_label, "-", f"{100 * results[0]['metrics']['val/oa']:.2f}",
                     f"{teacher_oa:.2f}", "-", "-", "-", "1"]]
    if ensemble:
        teacher_rows = [[f"teacher: ensemble of {len(members)} {teacher_label}", "-",
                         f"{100 * results[0]['metrics']['val/oa']:.2f}", f"{teacher_oa:.2f}", "-", "-", "-", "1"]]
        teacher_rows += [[f"member seed {r['seed']}", "-", f"{100 * r['metrics']['val/oa']:.2f}",
                          f"{test_oa(r):.2f}", "-", "-", "-", "1"] for r in results[1:]]

    arm_cfg = {"kd": {}, "dist": {"feature_weight": 0.0}, "kl": {"kd_objective": "kl", "temperature": 2.0},
               "nwsd": {"nwsd_weight": -0.2, "nwsd_source": "sharpen"}, "nokd": {"kd_weight": 0.0, "feature_weight": 0.0},
               "zkl": {"kd_objective": "zkl"}, "zkl9": {"kd_objective": "zkl", "kd_weight": 9.0, "ce_weight": 0.1},
               "rel": {"relation_weight": 10.0}, "kdlin": {"kd_schedule": "linear"}, "emb": {"feature_weight": 10.0},
               "online": {"records": None, "online_teacher": str(teacher), "online_views": args.views,
                          **({"online_augment": augment} if augment else {})}}
    specs = []
    for student in students:
        for seed in seeds:
            for arm in arms:
                if arm == "online" and seed not in online_seeds:
                    continue
                name = f"{student}-{arm}-s{seed}"
                spec = {"name": name, "student": student, "arm": arm, "seed": seed,
                        "done_file": str(work / f"{name}.json")}
                if arm == "ce":
                    spec.update(kind="train", cfg={"model": student, "epochs": args.epochs, "seed": seed,
                                                   "device": "cpu", "out": str(work / f"{name}.pt"), **data,
                                                   **views_augment})
                else:
                    spec.update(kind="distill", cfg={"records": str(store), "student": student, "epochs": args.epochs,
                                                     "seed": seed, "device": "cpu", "out": str(work / name),
                                                     **fewer_points, **arm_cfg[arm]})
                specs.append(spec)
    print(f"== {len(specs)} student runs on {args.jobs} processes")
    students_done = run_all(specs, args.jobs, args.report)
    if args.selection == "last":
        students_done = [at_last_epoch(r) for r in students_done]
    results += students_done

    header = ["student", "arm", "val OA %", "test OA % (mean ± std)", "test − CE (paired ± s.e.)",
              "teacher − CE gap closed", "test OA per seed", "seeds"]
    rows = list(teacher_rows)
    for student in students:
        rows += student_rows(results, student, arms, teacher_oa)
    checks = []
    for student in students:
        for arm, base, goal in (("kd", "ce", 0.0), ("kd", "dist", 0.0), ("kd", "kl", 0.0), ("kd", "online", -0.3), ("kd", "nokd", 0.0), ("emb", "ce", 0.0),
                                ("nwsd", "kd", 0.0), ("kdlin", "kd", 0.0)):
            diff = paired(results, student, arm, base)
            if diff:
                checks.append([student, f"{ARMS[arm]} − {ARMS[base]}", mean_se(diff), f">= {goal:+.1f}",
                               "yes" if statistics.mean(diff) >= goal else
                               f"NO (by {goal - statistics.mean(diff):.2f})"])
        gap = gap_closed(results, student, "kd", teacher_oa)
        if gap:
            checks.append([student, "offline KD: teacher − CE gap closed", mean_se(gap, 100, " %"),
                           ">= 30 % (one student)", "yes" if statistics.mean(gap) >= 0.3 else "no"])
    report = "\n".join([
        f"Machine: {machine_line('cpu')} (runs: 1-thread processes, {args.jobs} at a time)",
        f"Command: `python bench/accuracy.py {' '.join(sys.argv[1:])}`",
        f"Teacher {teacher_label}: {trained['epochs']} epochs, "
        f"{'seeds ' + ', '.join(map(str, teacher_seeds)) + ' (an equal-weight ensemble)' if ensemble else 'seed ' + str(trained['seed'])}; "
        f"{args.views} recorded views; "
        f"{'every run shape-level augmented with ' + ', '.join(f'{k}={v}' for k, v in augment.items()) + '; ' if augment else ''}"
        f"students {args.epochs} epochs; "
        f"{'epochs chosen on val, test scored once' if args.selection == 'val' else 'every run at its last epoch'}; this run "
        f"{(time.perf_counter() - started) / 60:.0f} min.", "",
        markdown_table(header, rows), "", markdown_table(["student", "paired difference", "measured", "goal", "met"],
                                                         checks)])
    print("\n" + report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.md").write_text(report + "\n")
    (out / "accuracy.json").write_text(json.dumps(results, indent=1))
    _plot(out / "accuracy.png", results, students, arms, teacher_oa)


def _plot(path: Path, results, students, arms, teacher_oa) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(students), figsize=(5 * len(students), 3.6), squeeze=False)
    for ax, student in zip(axes[0], students):
        shown = [a for a in arms if any(r.get("student") == student and r.get("arm") == a for r in results)]
        for k, arm in enumerate(shown):
            xs = [test_oa(r) for r in results if r.get("student") == student and r.get("arm") == arm]
            ax.scatter([k] * len(xs), xs, color="#4c72b0", s=14, alpha=0.7)
            ax.errorbar(k + 0.15, statistics.mean(xs), yerr=statistics.stdev(xs) if len(xs) > 1 else 0, fmt="o",
                        color="#c44e52", capsize=4)
        ax.axhline(teacher_oa, color="gray", linestyle="--", label="teacher")
        ax.set_xticks(range(len(shown)), [ARMS[a] for a in shown], rotation=20, ha="right", fontsize=8)
        ax.set_title(student, fontsize=10)
        ax.set_ylabel("test OA (%), one dot per seed")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Training-step cost: plain CE vs offline KD (records) vs online KD (teacher forward in the step).

Each variant is `kdpc distill`'s default step: CE, plus DIST at the default temperature (offline and online), plus
for the offline step the matching of the teacher's recorded 256-dim embedding when the student's embedding is at
least as wide (the store keeps a random one, as `kdpc record` keeps the teacher's by default); NWSD only when asked
(`--nwsd-source`).

Interleaved A/B/C timing in one process (only ratios measured side by side are stable on shared machines), and
peak memory of each variant in a fresh process (CUDA max allocated on GPU, peak RSS on CPU).

    python bench/step_cost.py                       # CPU-sized defaults, a few minutes
    python bench/step_cost.py --device cuda --teacher pointmlp --student pointmlp-elite --num-points 1024 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, machine_line, save_bar_plot  # noqa: E402

from kdpc.augment import AugmentConfig, PointAugmentConfig  # noqa: E402
from kdpc.data import create_dataset  # noqa: E402
from kdpc.distill.dataset import RecordedViews  # noqa: E402
from kdpc.distill.embedding import EmbeddingProjector, embedding_contrast_loss  # noqa: E402
from kdpc.distill.losses import dist_loss, label_smoothing_ce, nwsd_loss  # noqa: E402
from kdpc.distill.trainer import DistillConfig, resolve_feature_weight  # noqa: E402
from kdpc.recorder.seg import DEFAULT_CLASSIFIER_FEATURE_DIM  # noqa: E402
from kdpc.distill.self_targets import make_self_target  # noqa: E402
from kdpc.training.data import EpochViews  # noqa: E402
from kdpc.training.runtime import resolve_device  # noqa: E402
from kdpc.models import create_model, model_features_and_logits, model_inputs  # noqa: E402
from kdpc.store import RecordReader  # noqa: E402
from bench_store import write_bench_store  # noqa: E402

VARIANTS = ("ce", "offline", "online")


def build(args, device):
    dataset = create_dataset("synthetic", split="train", num_points=args.num_points,
                             num_raw_points=max(512, 2 * args.num_points), samples_per_class=args.samples_per_class)
    num_classes = dataset.num_classes
    store = Path(args.workdir) / f"bench-f{DEFAULT_CLASSIFIER_FEATURE_DIM}.zarr"  # older runs' stores lack embeddings
    if not store.exists():
        write_bench_store(store, dataset, views=2, feature_dim=DEFAULT_CLASSIFIER_FEATURE_DIM)
    reader = RecordReader(str(store))
    reader.load_all()
    point_aug = PointAugmentConfig()
    loaders = {
        "ce": DataLoader(EpochViews(dataset, AugmentConfig(), point_aug, 0), batch_size=args.batch_size, shuffle=True,
                         drop_last=True),
        "offline": DataLoader(RecordedViews(dataset, point_aug, 0, reader=reader), batch_size=args.batch_size,
                              shuffle=True, drop_last=True),
        "online": DataLoader(RecordedViews(dataset, point_aug, 0, augment=AugmentConfig(), num_views=2),
                             batch_size=args.batch_size, shuffle=True, drop_last=True),
    }
    return dataset, num_classes, loaders


def make_step(variant, args, device, num_classes):
    """One training step of ``variant`` as a closure over its own student, optimiser (and teacher)."""
    torch.manual_seed(0)
    student = create_model(args.student, num_classes=num_classes).to(device).train()
    projector = None  # the offline step's embedding matching, where kdpc distill's width rule turns it on
    feature_weight = resolve_feature_weight(None, DEFAULT_CLASSIFIER_FEATURE_DIM, variant != "offline",
                                            getattr(student, "num_features", 0))
    if feature_weight:
        projector = EmbeddingProjector(student.num_features, DEFAULT_CLASSIFIER_FEATURE_DIM).to(device)
    trained = list(student.parameters()) + (list(projector.parameters()) if projector is not None else [])
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    teacher = None
    self_target = None
    if variant == "online":
        teacher = create_model(args.teacher, num_classes=num_classes).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if variant == "offline" and args.nwsd_source:
        self_target = make_self_target(args.nwsd_source, model=student, num_records=10**6, num_classes=num_classes)
        if args.nwsd_source == "ema":
            self_target.ema.to(device)
    t = DistillConfig.temperature  # the shipped defaults (dataclass field defaults)

    def step(batch):
        points = batch["points"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        if projector is not None:
            features, logits = model_features_and_logits(student, model_inputs(student, points))
            logits = logits.float()
        else:
            logits = student(points).float()
        loss = label_smoothing_ce(logits, label, DistillConfig.label_smoothing)
        if variant == "offline":
            loss = loss + dist_loss(logits, batch["teacher_logprobs"].to(device).float(), t)
            if projector is not None:
                teacher_features = batch["teacher_features"].to(device, non_blocking=True).float()
                loss = loss + feature_weight * embedding_contrast_loss(projector(features), teacher_features)
            if self_target is not None:
                q, mask = self_target.targets(logits, inputs=points, record_ids=batch["record"].to(device))
                loss = loss - 0.2 * nwsd_loss(logits, q, t, 0.5, mask=mask)[0]
        elif variant == "online":
            with torch.inference_mode():
                teacher_logprobs = F.log_softmax(teacher(points).float(), dim=-1)
            loss = loss + dist_loss(logits, teacher_logprobs.clone(), t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if self_target is not None:
            self_target.update(model=student, student_logits=logits.detach(), record_ids=batch["record"].to(device))

    teacher_params = sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0  # frozen, still resident
    trained_params = sum(p.numel() for p in trained)  # the student, and the offline step's projector
    return step, trained_params + teacher_params, teacher_params


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(args, device):
    _, num_classes, loaders = build(args, device)
    steps = {v: make_step(v, args, device, num_classes)[0] for v in VARIANTS}
    iters = {v: iter(loaders[v]) for v in VARIANTS}

    def next_batch(v):
        try:
            return next(iters[v])
        except StopIteration:
            iters[v] = iter(loaders[v])
            return next(iters[v])

    times = {v: [] for v in VARIANTS}
    for round_index in range(args.warmup + args.rounds):
        order = VARIANTS if round_index % 2 == 0 else tuple(reversed(VARIANTS))  # A/B/C then C/B/A
        for v in order:
            sync(device)
            started = time.perf_counter()
            steps[v](next_batch(v))  # the data path is part of the step: replay vs augment vs teacher
            sync(device)
            if round_index >= args.warmup:
                times[v].append(time.perf_counter() - started)
    return {v: statistics.median(t) for v, t in times.items()}


def peak_memory(args, variant) -> float:
    """Peak memory (MiB) of ``variant`` in a fresh process: its model(s), optimiser, data path and a few steps."""
    cmd = [sys.executable, __file__, "--_memory-of", variant] + [a for a in sys.argv[1:] if a != "--plot"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return float(out)


class RssSampler:
    """Peak resident memory while training, sampled from /proc: ru_maxrss would be set by the dataset generator."""

    def __init__(self, interval: float = 0.002) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._page = resource.getpagesize()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __enter__(self):
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def memory_child(args, variant):
    """Everything a variant keeps resident — its model(s), optimiser, data path — built from scratch, then steps."""
    import gc

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    _, num_classes, loaders = build(args, device)
    gc.collect()
    with RssSampler() as rss:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = make_step(variant, args, device, num_classes)[0]
        for k, batch in enumerate(loaders[variant]):
            step(batch)
            if k + 1 >= 3:
                break
    if device.type == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(rss.peak / 2**20)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="pointmlp")
    p.add_argument("--student", default="pointmlp-elite")
    p.add_argument("--num-points", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples-per-class", type=int, default=8)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--nwsd-source", default="", help="add NWSD to the offline step from this source (ema, past, "
                   "sharpen; off by default, as in kdpc distill)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "kdpc-bench-step"))
    p.add_argument("--out", default="bench-out")
    p.add_argument("--_memory-of", dest="memory_of", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.memory_of:
        return memory_child(args, args.memory_of)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    timing = time_interleaved(args, device)
    memory = {v: peak_memory(args, v) for v in VARIANTS}
    _, num_classes, _ = build(args, device)
    params = {v: make_step(v, args, device, num_classes)[1] for v in VARIANTS}
    rows = [[v, f"{1000 * timing[v]:.1f}", f"{timing[v] / timing['ce']:.3f}", f"{memory[v]:.0f}",
             f"{memory[v] / memory['ce']:.3f}", f"{params[v]:,}"] for v in VARIANTS]
    mem_kind = "CUDA max allocated" if device.type == "cuda" else "peak RSS while training, fresh process"
    print(f"\n{machine_line(device)}; teacher {args.teacher}, student {args.student}, batch {args.batch_size} x "
          f"{args.num_points} points, NWSD source {args.nwsd_source or 'off'}\n")
    print(markdown_table(["variant", "step ms (median)", "x CE", f"memory MiB ({mem_kind})", "memory x CE",
                          "params in memory"], rows))
    ratios = {"offline/ce step": timing["offline"] / timing["ce"], "offline/online step": timing["offline"] / timing["online"],
              "offline/ce memory": memory["offline"] / memory["ce"]}
    goals = {"offline/ce step": 1.05, "offline/online step": 0.35, "offline/ce memory": 1.05}
    print()
    print(markdown_table(["ratio", "measured", "goal", "met"],
                         [[k, f"{v:.3f}", f"<= {goals[k]}", "yes" if v <= goals[k] else "NO"] for k, v in ratios.items()]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps({"timing_s": timing, "memory_mib": memory, "ratios": ratios,
                                                    "args": vars(args)}, indent=2))
    save_bar_plot(out / "step_cost.png", list(VARIANTS), [1000 * timing[v] for v in VARIANTS], "step time (ms)",
                  f"train step: {args.student} (teacher {args.teacher})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

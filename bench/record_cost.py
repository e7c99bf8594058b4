"""Recording cost: `kdpc record` against the bare teacher forward, measured the honest way, and where its time goes.

Both paths use the same teacher object (one module, built once) and the same views: the bare forward runs over
batches prepared in memory beforehand (exactly the batches `kdpc record` feeds its teacher, in the same order),
`kdpc record` prepares them itself (augmentation), runs the teacher, encodes and writes. The two alternate round by
round and the ratio (record throughput / bare throughput) is taken per round, so a machine that slows down mid-run
slows both. A recorder can at best match its teacher's forward: a ratio above 1 would mean the measurement is wrong.

The breakdown times each stage of the recorder on its own (augment, host-to-device, forward, encode + compress +
write): `kdpc record` overlaps writing with the forward (a writer thread) and, with --workers, augmentation too.

    python bench/record_cost.py                                   # CPU-sized defaults (~1 min)
    python bench/record_cost.py --device cuda --teacher pointmlp --num-points 1024 --batch-size 64 --workers 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, markdown_table, save_bar_plot  # noqa: E402

from kdpc.augment import AugmentConfig  # noqa: E402
from kdpc.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from kdpc.data import create_dataset  # noqa: E402
from kdpc.models import create_model  # noqa: E402
from kdpc.recorder import RecordConfig, record  # noqa: E402
from kdpc.recorder.precision import teacher_precision  # noqa: E402
from kdpc.recorder.views import BlockBatches, RecordViews  # noqa: E402
from kdpc.store import RecordReader, RecordWriter  # noqa: E402
from kdpc.store.schema import FEATURES  # noqa: E402
from kdpc.teachers import load_teacher  # noqa: E402
from kdpc.testing.stores import reader_throughput  # noqa: E402
from kdpc.training.runtime import resolve_device  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


def record_batches(dataset, cfg: RecordConfig, block_ranges, workers: int) -> DataLoader:
    """The loader `kdpc record` builds (kdpc.recorder.run): the same views, batches and order."""
    return DataLoader(RecordViews(dataset, AugmentConfig.from_dict(cfg.augment), cfg.seed),
                      batch_sampler=BlockBatches(block_ranges, cfg.batch_size), num_workers=workers)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="pointmlp-tiny")
    p.add_argument("--num-points", type=int, default=256)
    p.add_argument("--samples-per-class", type=int, default=16)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--feature-dim", type=int, default=None,
                   help="the teacher's embedding recorded per view (default: kdpc record's, 256; 0: class scores only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "kdpc-bench-record"))
    p.add_argument("--out", default="bench-out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    dataset = create_dataset("synthetic", split="train", num_points=args.num_points,
                             num_raw_points=max(512, 2 * args.num_points), samples_per_class=args.samples_per_class)
    torch.manual_seed(0)  # an untrained teacher: its cost is measured, not its accuracy
    module = create_model(args.teacher, num_classes=dataset.num_classes)
    # saved and loaded as a kdpc checkpoint, as `kdpc record --teacher ckpt.pt` would: that path also records the
    # teacher's embedding of each view by default (--feature-dim, 0 for class scores only)
    checkpoint = save_checkpoint(work / "teacher.pt", Checkpoint(
        arch=args.teacher, model_config={}, num_classes=dataset.num_classes, class_names=list(dataset.class_names),
        task="cls", dataset=dataset.describe(), state_dict=module.state_dict()))
    teacher = load_teacher(str(checkpoint), device=device)
    teacher.bind(dataset, device)
    store = work / "store.zarr"
    cfg = RecordConfig(views=args.views, out=str(store), batch_size=args.batch_size, workers=args.workers,
                       device=str(device), precision=args.precision, overwrite=True, feature_dim=args.feature_dim)

    def run_record() -> int:
        return record(cfg, log=lambda line: None, show_progress=False, teacher=teacher, dataset=dataset).records_written

    run_record()  # warm-up; also gives the block layout of the store
    reader = RecordReader(str(store))
    header = reader.header
    ranges = [header.block_range(b) for b in range(header.num_blocks)]
    augment_s, batches = timed(lambda: [(b["points"], b["label"]) for b in record_batches(dataset, cfg, ranges,
                                                                                          args.workers)], device)
    h2d_s, on_device = timed(lambda: [(x.to(device), y.to(device)) for x, y in batches], device)
    n_records = sum(len(y) for _, y in batches)

    def bare() -> list[np.ndarray]:
        with torch.inference_mode(), teacher_precision(device, args.precision):
            return [teacher(x, y).cpu().numpy() for x, y in on_device]

    bare_s, rates = [], {"bare": [], "record": []}
    for round_ in range(args.rounds):
        for path in (("bare", "record") if round_ % 2 == 0 else ("record", "bare")):  # neither always goes first
            if path == "bare":
                seconds, outputs = timed(bare, device)
                bare_s.append(seconds)
            else:
                seconds, written = timed(run_record, device)
                assert written == n_records, (written, n_records)
            rates[path].append(n_records / seconds)
    ratios = [r / b for r, b in zip(rates["record"], rates["bare"])]
    best_ratio = max(rates["record"]) / max(rates["bare"])  # the fastest round of each: the least disturbed

    # encode + compress + write alone: the blocks of the last bare run, written into a fresh store
    logprobs = np.concatenate(outputs).astype(np.float32)
    reader = RecordReader(str(store))  # the rounds replaced the store (a new generation each time)
    stored = reader.get(np.arange(n_records))
    kept = ["sample", "view", *[s.name for s in header.params]] + ([FEATURES] if header.feature_dim else [])
    columns = {k: stored[k] for k in kept}  # the embeddings as stored: their encoding is part of the write

    def write_all() -> None:
        with RecordWriter.open(work / "write-only.zarr", header.derive(), mode="overwrite",
                               labels=np.asarray(dataset.labels)) as writer:
            for block, (start, stop) in enumerate(ranges):
                writer.write_block(block, {**{k: v[start:stop] for k, v in columns.items()},
                                           "logprobs": logprobs[start:stop]})
            writer.finalize()

    write_s, _ = timed(write_all, device)
    read = reader_throughput(str(store), batch_size=64, seconds=1.0)
    read_rate = read["records_per_s"] if isinstance(read, dict) else float(read)

    median = statistics.median
    print(f"\n{machine_line(device)}; teacher {args.teacher} ({args.precision}), {len(dataset)} samples x {args.views} "
          f"views = {n_records} records per round, batch {args.batch_size} x {args.num_points} points, "
          f"{args.workers} loader workers, {args.rounds} rounds\n")
    rows = [["bare teacher forward (same teacher object, batches prepared in memory)", f"{median(rates['bare']):,.0f}",
             ", ".join(f"{r:,.0f}" for r in rates["bare"]), "1.000", ""],
            ["kdpc record (augment + forward + encode + write)", f"{median(rates['record']):,.0f}",
             ", ".join(f"{r:,.0f}" for r in rates["record"]), f"{median(ratios):.3f} (rounds: "
             + ", ".join(f"{r:.2f}" for r in ratios) + f"; fastest rounds: {best_ratio:.3f})",
             ">= 0.9: " + ("met" if median(ratios) >= 0.9 else "MISSED")]]
    print(markdown_table(["path", "records/s (median)", "per round", "record / bare (per round)", "goal"], rows))
    total = augment_s + h2d_s + median(bare_s) + write_s
    stages = [("augment (views, in the loader)", augment_s), ("host-to-device", h2d_s),
              ("teacher forward", median(bare_s)), ("encode + compress + write", write_s)]
    print("\nWhere the recorder's time goes (each stage timed alone over the same records):\n")
    print(markdown_table(["stage", "seconds", "ms / record", "share of the sum"],
                         [[name, f"{s:.3f}", f"{1000 * s / n_records:.3f}", f"{100 * s / total:.1f} %"]
                          for name, s in stages]
                         + [["sum (no overlap)", f"{total:.3f}", f"{1000 * total / n_records:.3f}", "100 %"],
                            ["kdpc record, measured", f"{n_records / median(rates['record']):.3f}",
                             f"{1000 / median(rates['record']):.3f}", ""]]))
    print(f"\nRecordReader, random batches of 64: {read_rate:,.0f} records/s (goal >= 200k: "
          f"{'met' if read_rate >= 2e5 else 'MISSED'})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "record_cost.json").write_text(json.dumps({"rates": rates, "ratios": ratios, "best_ratio": best_ratio,
                                                      "stages_s": dict(stages),
                                                      "reader": read_rate, "args": vars(args)}, indent=2))
    save_bar_plot(out / "record_cost.png", [name for name, _ in stages], [1000 * s / n_records for _, s in stages],
                  "ms per record", f"recording {args.teacher}: time per stage")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

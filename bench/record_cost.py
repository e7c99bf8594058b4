"""Recording cost: `kdpc record` throughput vs the bare teacher forward on the same batches, and how fast the
RecordReader serves records to a training loop.

Interleaved: bare forward, record, bare forward, record ... (ratios measured side by side in one run).

    python bench/record_cost.py                                  # CPU-sized defaults
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

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, machine_line, save_bar_plot  # noqa: E402

from kdpc.augment import AugmentConfig  # noqa: E402
from kdpc.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from kdpc.data import create_dataset  # noqa: E402
from kdpc.training.runtime import autocast, resolve_device  # noqa: E402
from kdpc.models import create_model  # noqa: E402
from kdpc.recorder import RecordConfig, record  # noqa: E402
from kdpc.recorder.views import RecordViews  # noqa: E402
from kdpc.testing.stores import reader_throughput  # noqa: E402


def make_teacher(args, dataset, path: Path) -> None:
    """An untrained teacher of the chosen architecture: its cost is what is measured, not its accuracy."""
    torch.manual_seed(0)
    model = create_model(args.teacher, num_classes=dataset.num_classes)
    save_checkpoint(path, Checkpoint(arch=args.teacher, model_config={}, num_classes=dataset.num_classes,
                                     class_names=list(dataset.class_names), task="cls", dataset=dataset.describe(),
                                     state_dict=model.state_dict()))


def bare_forward(args, dataset, device) -> float:
    """records/s of the teacher alone over the same (pre-built, in-memory) batches the recorder feeds it."""
    torch.manual_seed(0)
    model = create_model(args.teacher, num_classes=dataset.num_classes).to(device).eval()
    views = RecordViews(dataset, AugmentConfig(), 0)
    loader = DataLoader(views, batch_size=args.batch_size, sampler=range(args.views * len(dataset)))
    batches = [b["points"].to(device) for b in loader]  # prepared outside the timed region
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        for points in batches:
            with autocast(device, True):
                model(points).float().log_softmax(-1).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def recording(args, teacher: Path, store: Path) -> float:
    result = record(RecordConfig(teacher=str(teacher), views=args.views, out=str(store), batch_size=args.batch_size,
                                 workers=args.workers, device=args.device, overwrite=True),
                    log=lambda line: None, show_progress=False)
    return result.records_written / result.seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="pointmlp-tiny")
    p.add_argument("--num-points", type=int, default=256)
    p.add_argument("--samples-per-class", type=int, default=16)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
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
    teacher = work / "teacher.pt"
    make_teacher(args, dataset, teacher)
    bare, rec = [], []
    for _ in range(args.rounds):
        bare.append(bare_forward(args, dataset, device))
        rec.append(recording(args, teacher, work / "store.zarr"))
    bare_rate, rec_rate = statistics.median(bare), statistics.median(rec)
    read_rate = reader_throughput(str(work / "store.zarr"), batch_size=64, seconds=1.0)
    read_rate = read_rate["records_per_s"] if isinstance(read_rate, dict) else float(read_rate)
    print(f"\n{machine_line(device)}; teacher {args.teacher}, {len(dataset)} samples x {args.views} views, "
          f"batch {args.batch_size} x {args.num_points} points, {args.workers} loader workers\n")
    rows = [["bare teacher forward (in-memory batches)", f"{bare_rate:,.0f}", "1.000", ""],
            ["kdpc record (augment + teacher + encode + write)", f"{rec_rate:,.0f}", f"{rec_rate / bare_rate:.3f}",
             ">= 0.9 " + ("met" if rec_rate / bare_rate >= 0.9 else "MISSED")],
            ["RecordReader, random batches of 64", f"{read_rate:,.0f}", "", ">= 200k " + ("met" if read_rate >= 2e5 else "MISSED")]]
    print(markdown_table(["path", "records/s (median)", "x bare forward", "goal"], rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "record_cost.json").write_text(json.dumps({"bare": bare, "record": rec, "reader": read_rate,
                                                      "ratio": rec_rate / bare_rate, "args": vars(args)}, indent=2))
    save_bar_plot(out / "record_cost.png", ["bare forward", "kdpc record"], [bare_rate, rec_rate], "records/s",
                  f"recording {args.teacher}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

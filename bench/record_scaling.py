"""Record throughput with 1 vs N torchrun ranks on this machine: `kdpc record` under `torchrun --nproc-per-node`.

    .venv/bin/python bench/record_scaling.py                          # dgcnn-tiny teacher, 1 vs 2 ranks
    .venv/bin/python bench/record_scaling.py --ranks 1 2 4 --views 20 --teacher-model pointmlp-tiny

A teacher is trained for one epoch on a small synthetic split (its accuracy does not matter here), then the same
store is recorded once per rank count, each time with `torchrun --standalone --nproc-per-node N -m kdpc record`.
"record s" is the recorder's own time on rank 0 (first batch to the store being complete, across all ranks);
"wall s" includes start-up (torch import and process-group set-up in every rank). By default each rank count is
run with cores/ranks intra-op threads per rank (the whole machine) and with 1 thread per rank (``--threads``).
The speed-up column is relative to the first row.
Every store is checked to be identical to the 1-rank store (arrays and header, `created` aside).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kdpc.testing.stores import store_contents  # noqa: E402

LINE = re.compile(r"recorded (\d+) records in ([0-9.]+)s")


def kdpc_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(threads)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def store_signature(path: Path) -> tuple[dict, dict]:
    header, arrays = store_contents(path)
    return arrays, header


def same_store(a: Path, b: Path) -> bool:
    (arr_a, head_a), (arr_b, head_b) = store_signature(a), store_signature(b)
    return head_a == head_b and arr_a.keys() == arr_b.keys() and all(
        arr_a[k].dtype == arr_b[k].dtype and np.array_equal(arr_a[k], arr_b[k]) for k in arr_a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--teacher-model", default="dgcnn-tiny")
    ap.add_argument("--samples-per-class", type=int, default=8, help="18 classes: 144 samples by default")
    ap.add_argument("--num-points", type=int, default=256)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--chunk-records", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", nargs="+", default=["auto", "1"],
                    help="intra-op threads per rank, one row each: 'auto' (cores / ranks) and/or numbers")
    ap.add_argument("--repeats", type=int, default=1, help="best of N recordings per rank count")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="kdpc-record-scaling-") as tmp:
        work = Path(tmp)
        teacher = work / "teacher.pt"
        subprocess.run([sys.executable, "-m", "kdpc", "train", "--model", args.teacher_model, "--dataset-opt",
                        f"samples_per_class={args.samples_per_class}", "--num-points", str(args.num_points),
                        "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", str(teacher)],
                       cwd=work, env=kdpc_env(cores), check=True, capture_output=True, text=True)
        rows = []
        first_store: Path | None = None
        configs = []
        for ranks in args.ranks:
            for spec in args.threads:
                threads = max(1, cores // ranks) if spec == "auto" else int(spec)
                if (ranks, threads) not in configs:
                    configs.append((ranks, threads))
        for ranks, threads in configs:
            best = None
            for rep in range(args.repeats):
                out = work / f"r{ranks}-t{threads}-{rep}.zarr"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                       "-m", "kdpc", "record", "--teacher", str(teacher), "--views", str(args.views),
                       "--chunk-records", str(args.chunk_records), "--batch-size", str(args.batch_size),
                       "--device", "cpu", "--out", str(out)]
                started = time.perf_counter()
                proc = subprocess.run(cmd, cwd=work, env=kdpc_env(threads), capture_output=True, text=True)
                wall = time.perf_counter() - started
                if proc.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
                match = LINE.search(proc.stdout)
                assert match, proc.stdout
                records, seconds = int(match.group(1)), float(match.group(2))
                if first_store is None:
                    first_store = out
                identical = same_store(first_store, out)
                if best is None or seconds < best["record_s"]:
                    best = {"ranks": ranks, "threads_per_rank": threads, "records": records, "record_s": seconds,
                            "rec_per_s": records / seconds, "wall_s": wall, "identical": identical}
            rows.append(best)
        base = rows[0]["rec_per_s"]
        print(f"kdpc record scaling: {args.teacher_model} teacher, {rows[0]['records']} records "
              f"({args.views} views, {args.num_points} points), {cores} CPU cores, batch {args.batch_size}, "
              f"blocks of {args.chunk_records}")
        print(f"{'ranks':>5} {'thr/rank':>8} {'record s':>9} {'rec/s':>8} {'wall s':>7} {'speed-up':>8} identical")
        for row in rows:
            print(f"{row['ranks']:>5} {row['threads_per_rank']:>8} {row['record_s']:>9.2f} {row['rec_per_s']:>8.0f} "
                  f"{row['wall_s']:>7.1f} {row['rec_per_s'] / base:>7.2f}x {row['identical']}")
        if args.json:
            print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""Record-store size / fidelity benchmark: bytes per record on disk (zarr and HDF5) and KL to float32 per codec.

    .venv/bin/python bench/record_size.py                       # synthetic realistic 40-class teacher, 100k records
    .venv/bin/python bench/record_size.py --logits out.npy      # your teacher's log-probs/logits [R, C] (view-major)
    .venv/bin/python bench/record_size.py --store run.zarr      # re-encode an existing store's decoded outputs

Every number comes from real stores written with ``RecordWriter`` (all arrays: teacher output, augmentation params,
sample/view ids, labels, flags, metadata) and read back with ``RecordReader``; bytes are the sum of file sizes.
KL(T) = mean over records of KL(softmax(l_f32 / T) || softmax(l_decoded / T)). The synthetic teacher is
``kdpc.testing.teachers.realistic_logprobs`` (class-embedding cosine logits, per-sample sharpness, p_top median
~0.95). Runs on CPU in well under a minute with the defaults. Also prints reader throughput for random batches.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdpc.augment import AugmentConfig, draw_params  # noqa: E402
from kdpc.store import DEFAULT_CODEC, RecordReader, RecordWriter, StoreHeader, get_codec, store_info
from kdpc.store.codecs import kl_divergence, log_softmax
from kdpc.testing.stores import reader_throughput
from kdpc.testing.teachers import realistic_logprobs

DEFAULT_CODECS = ["f32", "f16", "u8", "u8log", "topk:10", "topk:5"]


def write_store(path: Path, logprobs: np.ndarray, labels: np.ndarray, num_samples: int, codec: str,
                cfg: AugmentConfig, chunk_records: int, run_seed: int = 1) -> None:
    num_views = len(logprobs) // num_samples
    header = StoreHeader(num_samples=num_samples, num_views=num_views, num_classes=logprobs.shape[1], codec=codec,
                         chunk_records=chunk_records, augment=cfg.to_dict(), run_seed=run_seed,
                         dataset={"name": "bench"}, teacher={"arch": "synthetic"})
    with RecordWriter.open(path, header, mode="overwrite", labels=labels) as w:
        for b in w.pending_blocks():
            s0, s1 = w.block_range(b)
            r = np.arange(s0, s1)
            cols = {"sample": r % num_samples, "view": r // num_samples,
                    **draw_params(cfg, run_seed, r % num_samples, r // num_samples, stream="record"), "logprobs": logprobs[s0:s1]}
            w.write_block(b, cols)
        w.finalize()


def load_logprobs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, int, str]:
    if args.logits:
        x = np.load(args.logits, allow_pickle=False)
        lp = log_softmax(x.reshape(len(x), -1)).astype(np.float32)
        ns = args.samples if len(lp) % args.samples == 0 else len(lp)
        return lp, np.full(ns, -1), ns, f"{args.logits} ({len(lp)} records, {lp.shape[1]} classes)"
    if args.store:
        reader = RecordReader(args.store)
        cols = reader.load_all()
        return (cols["logprobs"].copy(), reader.labels.copy(), reader.num_samples,
                f"decoded outputs of {args.store} (codec {reader.header.codec}; KL is against those, not float32)")
    lp, labels = realistic_logprobs(args.samples, args.views, args.classes, seed=args.seed)
    pt = np.exp(lp.max(1))
    q = np.percentile(pt, [5, 25, 50, 75])
    desc = (f"synthetic realistic teacher: {args.samples} samples x {args.views} views = {len(lp)} records, "
            f"{args.classes} classes; p_top 5/25/50/75% = {q[0]:.2f}/{q[1]:.2f}/{q[2]:.3f}/{q[3]:.3f}, "
            f"median row min log-prob {np.median(lp.min(1)):.1f}")
    return lp, labels, args.samples, desc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codecs", default=",".join(DEFAULT_CODECS), help="comma-separated codec specs")
    ap.add_argument("--rotation", default="none", choices=["none", "up", "so3"], help="augment rotation (adds a param)")
    ap.add_argument("--points", type=int, default=1024, help="points per view for the naive 'save every cloud' row")
    ap.add_argument("--chunk-records", type=int, default=4096)
    ap.add_argument("--logits", help="a .npy of teacher logits or log-probs [records, classes], view-major")
    ap.add_argument("--store", help="an existing record store whose decoded outputs to re-encode")
    ap.add_argument("--no-h5", action="store_true", help="skip the HDF5 column")
    ap.add_argument("--out", help="keep the stores in this folder (default: a temp folder)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    lp, labels, num_samples, desc = load_logprobs(args)
    cfg = AugmentConfig(rotation=args.rotation)
    print(f"data: {desc}\n")
    tmp = tempfile.TemporaryDirectory() if not args.out else None
    out = Path(args.out or tmp.name)  # type: ignore[union-attr]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    default_path = None
    for spec in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        get_codec(spec, lp.shape[1])
        safe = spec.replace(":", "")
        zpath = out / f"{safe}.zarr"
        t0 = time.perf_counter()
        write_store(zpath, lp, labels, num_samples, spec, cfg, args.chunk_records)
        write_s = time.perf_counter() - t0
        zinfo = store_info(zpath, accuracy=False)
        dec = RecordReader(zpath).load_all()["logprobs"]
        hbytes = None
        if not args.no_h5:
            hpath = out / f"{safe}.h5"
            write_store(hpath, lp, labels, num_samples, spec, cfg, args.chunk_records)
            hbytes = store_info(hpath, accuracy=False)["bytes_per_record"]
        ab = zinfo["array_bytes"]
        outb = sum(v for k, v in ab.items() if k.startswith("output/")) / len(lp)
        err = np.abs(dec.astype(np.float64) - lp)
        fin = np.isfinite(lp)
        rows.append({
            "codec": spec + (" (default)" if spec == DEFAULT_CODEC else ""),
            "zarr": zinfo["bytes_per_record"], "h5": hbytes, "output": outb, "rest": zinfo["bytes_per_record"] - outb,
            "kl1": float(kl_divergence(lp, dec, 1).mean()), "kl4": float(kl_divergence(lp, dec, 4).mean()),
            "maxerr": float(err[fin].max()) if fin.any() else float("nan"),
            "rec_s": len(lp) / write_s,
        })
        if spec == DEFAULT_CODEC:
            default_path = zpath

    print("| codec | B/record zarr | B/record h5 | of which output (zarr) | params+ids+meta (zarr) | KL T=1 | KL T=4 | max abs log-prob err | write rec/s (zarr) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        h5 = f"{r['h5']:.1f}" if r["h5"] is not None else "-"
        print(f"| {r['codec']} | {r['zarr']:.1f} | {h5} | {r['output']:.1f} | {r['rest']:.1f} | {r['kl1']:.1e} | "
              f"{r['kl4']:.1e} | {r['maxerr']:.3g} | {r['rec_s']:,.0f} |")
    n = args.points
    print(f"| naive: every augmented cloud, {n} x 3 float32 | {n * 12:,} | | | | 0 | 0 | 0 | |")
    print(f"| naive: every augmented cloud, {n} x 3 float16 | {n * 6:,} | | | | | | | |")

    if default_path is not None:
        tp = reader_throughput(default_path, batch_size=64, seconds=1.0)
        print(f"\nreader ({DEFAULT_CODEC}, zarr): load_all {tp['load_s']:.2f} s for {int(tp['records']):,} records, then "
              f"{tp['records_per_s']:,.0f} records/s ({tp['batches_per_s']:,.0f} random batches of 64 per s)")
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

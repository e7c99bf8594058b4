"""Part-segmentation record size / fidelity: bytes per view on disk (zarr and HDF5) and per-point KL per codec.

    .venv/bin/python bench/record_size_seg.py                        # synthetic 50-part teacher, 2048 points/view
    .venv/bin/python bench/record_size_seg.py --teacher t.pt         # a real partseg teacher over its training views

Every number comes from real stores written with ``RecordWriter`` (per-point output, anchor features, augmentation
params, ids, labels, flags, metadata) and read back with ``RecordReader``; bytes are the sum of file sizes divided
by the number of views (records). KL(T) is the mean over points of KL(softmax(l_f32 / T) || softmax(l_dec / T)).
The reference is float16 dense per-point logits, N * P * 2 bytes per view (204,800 B at 2048 points x 50 parts);
the goal is <= 1/8 of it including the features (25,600 B).

The synthetic teacher is ``kdpc.testing.teachers.realistic_seg_logprobs`` (ShapeNetPart's 16 categories / 50 parts,
per-point p_top quartiles ~0.84 / 0.94 / 0.98, out-of-category parts 6-20 nats down) with features at 128 anchors x
32 dims. ``--teacher`` runs ``kdpc.recorder.seg.teacher_seg_outputs`` over ``--samples`` training views of the
checkpoint's dataset (its own num_points and parts).
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
from kdpc.store import RecordReader, RecordWriter, StoreHeader, store_info  # noqa: E402
from kdpc.store.codecs import kl_divergence  # noqa: E402
from kdpc.store import DEFAULT_SEG_CODEC, get_point_codec  # noqa: E402
from kdpc.testing.teachers import realistic_seg_logprobs  # noqa: E402

DEFAULT_CODECS = ["f16", "u8log", "topk:3", "ptopk:1", "ptopk:2", "ptopk:3", "ptopk:4", "ptopk:6"]


def write_store(path: Path, header: StoreHeader, logprobs: np.ndarray, features: np.ndarray | None,
                labels: np.ndarray) -> None:
    cfg = AugmentConfig.from_dict(header.augment)
    s = header.num_samples
    with RecordWriter.open(path, header, mode="overwrite", labels=labels) as w:
        for b in w.pending_blocks():
            s0, s1 = w.block_range(b)
            r = np.arange(s0, s1)
            cols = {"sample": r % s, "view": r // s, **draw_params(cfg, header.run_seed, r % s, r // s, stream="record"),
                    "logprobs": logprobs[s0:s1]}
            if features is not None:
                cols["features"] = features[s0:s1]
            w.write_block(b, cols)
        w.finalize()


def teacher_data(args: argparse.Namespace):
    """Per-point outputs and anchor features of a real teacher over its training views (view-major)."""
    import torch

    from kdpc.augment import params_at
    from kdpc.checkpoint import load_checkpoint
    from kdpc.augment import replay_view
    from kdpc.checkpoint import dataset_for_checkpoint
    from kdpc.recorder.seg import make_seg_header_fields, teacher_seg_outputs

    ckpt = load_checkpoint(args.teacher)
    ds = dataset_for_checkpoint(ckpt, None, args.data_root, "train")
    teacher = ckpt.build_model("cpu")
    fields = make_seg_header_fields(ckpt, ds, {"anchors": args.anchors, "feature_dim": args.feature_dim}, teacher)
    s = min(args.samples, len(ds))
    samples = np.linspace(0, len(ds) - 1, s).round().astype(np.int64)
    header = StoreHeader(num_samples=s, num_views=args.views, run_seed=1, **fields)
    aug = AugmentConfig()
    lps, feats = [], []
    for v in range(args.views):
        params = draw_params(aug, 1, samples, np.full(s, v), stream="record")
        for lo in range(0, s, 32):
            idx = range(lo, min(lo + 32, s))
            pts = np.stack([replay_view(ds, int(samples[k]), params_at(params, k))[0][:, :3] for k in idx])
            out = teacher_seg_outputs(teacher, torch.from_numpy(pts), torch.from_numpy(ds.labels[samples[list(idx)]]).long(),
                                      params["seed"][lo : lo + len(idx)], header)
            lps.append(out["logprobs"])
            if "features" in out:
                feats.append(out["features"])
    lp = np.concatenate(lps)
    pt = np.exp(lp.max(-1))
    q = np.percentile(pt, [5, 25, 50, 75])
    desc = (f"teacher {ckpt.arch} ({args.teacher}) on {ds.name}/train: {s} samples x {args.views} views, "
            f"{header.num_points} points, {header.num_classes} parts, features {header.num_anchors} x "
            f"{header.feature_dim} (projection {header.feature_projection or 'none'}); per-point p_top 5/25/50/75% = "
            f"{q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}/{q[3]:.2f}")
    return lp, (np.concatenate(feats) if feats else None), ds.labels[samples].astype(np.int64), header, desc


def synthetic_data(args: argparse.Namespace):
    lp, cats, feats = realistic_seg_logprobs(args.samples, args.views, args.points, seed=args.seed,
                                             feature_dim=args.feature_dim, num_anchors=args.anchors)
    proj = {"kind": "gaussian", "seed": 0, "in_dim": 256, "out_dim": args.feature_dim} if args.anchors else {}
    header = StoreHeader(task="partseg", num_samples=args.samples, num_views=args.views, num_classes=lp.shape[-1],
                         num_points=args.points, num_anchors=args.anchors,
                         feature_dim=args.feature_dim if args.anchors else 0, feature_projection=proj, run_seed=1,
                         dataset={"name": "bench"}, teacher={"arch": "synthetic"})
    pt = np.exp(lp.max(-1))
    q = np.percentile(pt, [5, 25, 50, 75])
    desc = (f"synthetic seg teacher: {args.samples} samples x {args.views} views = {len(lp)} views, {args.points} "
            f"points, {lp.shape[-1]} parts, features {args.anchors} x {args.feature_dim}; per-point p_top "
            f"5/25/50/75% = {q[0]:.2f}/{q[1]:.2f}/{q[2]:.3f}/{q[3]:.3f}")
    return lp, feats, cats.astype(np.int64), header, desc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--points", type=int, default=2048, help="points per view (synthetic teacher)")
    ap.add_argument("--anchors", type=int, default=128, help="M: anchor points per view with stored features")
    ap.add_argument("--feature-dim", type=int, default=32, help="D: stored feature width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codecs", default=",".join(DEFAULT_CODECS), help="comma-separated per-point codec specs")
    ap.add_argument("--chunk-records", type=int, default=64)
    ap.add_argument("--teacher", help="a partseg checkpoint: measure its outputs instead of the synthetic teacher")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--no-h5", action="store_true", help="skip the HDF5 column")
    ap.add_argument("--out", help="keep the stores in this folder (default: a temp folder)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    lp, feats, labels, base, desc = teacher_data(args) if args.teacher else synthetic_data(args)
    n, npts, nparts = lp.shape
    dense_f16 = npts * nparts * 2
    print(f"data: {desc}")
    print(f"reference: float16 dense per-point logits = {npts} x {nparts} x 2 = {dense_f16:,} B/view; "
          f"goal <= 1/8 = {dense_f16 // 8:,} B/view\n")
    tmp = tempfile.TemporaryDirectory() if not args.out else None
    out = Path(args.out or tmp.name)  # type: ignore[union-attr]
    out.mkdir(parents=True, exist_ok=True)
    flat = lp.reshape(-1, nparts).astype(np.float64)
    rows = []
    for spec in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        get_point_codec(spec, nparts, npts)
        header = StoreHeader.from_dict({**base.to_dict(), "codec": spec, "chunk_records": args.chunk_records})
        safe = spec.replace(":", "")
        zpath = out / f"{safe}.zarr"
        t0 = time.perf_counter()
        write_store(zpath, header, lp, feats, labels)
        write_s = time.perf_counter() - t0
        zinfo = store_info(zpath, accuracy=False)
        reader = RecordReader(zpath)
        t0 = time.perf_counter()
        dec = np.concatenate([reader.get(np.arange(i, min(i + 64, n)))["logprobs"] for i in range(0, n, 64)])
        read_s = time.perf_counter() - t0
        hbytes = None
        if not args.no_h5:
            hpath = out / f"{safe}.h5"
            write_store(hpath, header, lp, feats, labels)
            hbytes = store_info(hpath, accuracy=False)["bytes_per_record"]
        dflat = dec.reshape(-1, nparts).astype(np.float64)
        total = zinfo["bytes_per_record"]
        outb, featb = zinfo["output_bytes_per_record"], zinfo["feature_bytes_per_record"] or 0.0
        rows.append({
            "codec": spec + (" (default)" if spec == DEFAULT_SEG_CODEC else ""),
            "zarr": total, "h5": hbytes, "output": outb, "features": featb, "rest": total - outb - featb,
            "ratio": dense_f16 / total,
            "kl1": float(kl_divergence(flat, dflat, 1).mean()), "kl2": float(kl_divergence(flat, dflat, 2).mean()),
            "agree": float((flat.argmax(1) == dflat.argmax(1)).mean()),
            "write": n / write_s, "read": n / read_s,
        })
    print("| codec | B/view zarr | B/view h5 | output | features | params+ids+meta | f16 dense / zarr | KL T=1 | KL T=2 "
          "| argmax agree | write views/s | decode views/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        h5 = f"{r['h5']:,.0f}" if r["h5"] is not None else "-"
        print(f"| {r['codec']} | {r['zarr']:,.0f} | {h5} | {r['output']:,.0f} | {r['features']:,.0f} | {r['rest']:,.0f} | "
              f"{r['ratio']:.1f}x | {r['kl1']:.1e} | {r['kl2']:.1e} | {r['agree']:.4f} | {r['write']:,.0f} | "
              f"{r['read']:,.0f} |")
    print(f"| reference: f16 dense logits, no features | {dense_f16:,} | | | | | 1.0x | | | | | |")
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How far a teacher recorded at bf16 / fp16 (autocast) lands from the same teacher at fp32: the measured errors
behind `kdpc records verify --teacher`'s tolerance per precision (kdpc.recorder.precision.REPLAY_TOLERANCE).

On a CPU, autocast emulates the lower precision (matmuls and convolutions run in bf16 / fp16); on a GPU it is the
real thing. The error is measured on the log-probabilities a store keeps, over the recorder's own views.

    python bench/record_precision.py --teacher runs/teacher.pt            # a trained kdpc checkpoint
    python bench/record_precision.py --device cuda --teacher runs/teacher.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, markdown_table  # noqa: E402

from kdpc.augment import AugmentConfig  # noqa: E402
from kdpc.data import create_dataset  # noqa: E402
from kdpc.models import create_model  # noqa: E402
from kdpc.recorder.precision import REPLAY_TOLERANCE, teacher_precision  # noqa: E402
from kdpc.recorder.views import RecordViews  # noqa: E402
from kdpc.teachers import load_teacher  # noqa: E402
from kdpc.training.runtime import resolve_device  # noqa: E402


def measure(teacher_spec: str | None, device: torch.device, views: int, batch_size: int, samples_per_class: int | None,
            precisions=("bf16", "fp16")) -> dict[str, dict[str, float]]:
    if teacher_spec:
        teacher = load_teacher(teacher_spec, device=device)
        dataset = teacher.dataset_for(None, None, "train", None, None)
    else:  # an untrained pointmlp-tiny on a small synthetic split (the CI dry run)
        dataset = create_dataset("synthetic", split="train", num_points=128, num_raw_points=256,
                                 samples_per_class=samples_per_class or 2)
        torch.manual_seed(0)
        teacher = load_teacher(create_model("pointmlp-tiny", num_classes=dataset.num_classes).eval(), device=device)
    teacher.bind(dataset, device)
    loader = DataLoader(RecordViews(dataset, AugmentConfig(), 0), batch_size=batch_size,
                        sampler=range(min(views * len(dataset), 4096)))

    def run(precision: str) -> np.ndarray:
        out = []
        with torch.inference_mode(), teacher_precision(device, precision):
            for batch in loader:
                out.append(teacher(batch["points"].to(device), batch["label"].to(device)).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    reference = run("fp32")
    rows = {}
    for precision in precisions:
        err = np.abs(run(precision) - reference)
        rows[precision] = {"records": int(reference.shape[0]), "max": float(err.max()), "p99": float(np.quantile(err, 0.99)),
                           "mean": float(err.mean()), "tolerance": REPLAY_TOLERANCE[precision],
                           "argmax_agreement": float((run(precision).argmax(1) == reference.argmax(1)).mean())}
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=None, help="a --teacher of kdpc record (default: an untrained pointmlp-tiny)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="bench-out")
    args = p.parse_args()
    device = resolve_device(args.device)
    rows = measure(args.teacher, device, args.views, args.batch_size, None)
    print(f"\n{machine_line(device)}; teacher {args.teacher or 'untrained pointmlp-tiny'}; |log-prob| error against "
          "the same teacher at fp32\n")
    print(markdown_table(["precision", "records", "max", "99th pct", "mean", "argmax agreement", "verify tolerance"],
                         [[k, v["records"], f"{v['max']:.3g}", f"{v['p99']:.3g}", f"{v['mean']:.3g}",
                           f"{100 * v['argmax_agreement']:.2f} %", f"{v['tolerance']:g}"] for k, v in rows.items()]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"record_precision_{device.type}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

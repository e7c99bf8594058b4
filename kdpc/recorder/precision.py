"""The numeric precision the teacher runs at while recording, and the replay tolerance each one needs.

``fp32`` (the default) runs the teacher in float32 with TF32 matmuls and convolutions switched off, so a GPU-recorded
store matches a CPU replay to float rounding. ``bf16`` / ``fp16`` run it under ``torch.autocast`` (faster on GPUs,
and emulated on CPUs): their outputs move by the amounts measured in docs/record-format.md, and
``kdpc records verify --teacher`` allows exactly that much on top of the codec's bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import KdpcError

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Largest |log-prob| difference allowed between the recording run and an fp32 replay, beyond the codec's bound.
# fp32: other batch composition / device (~1e-5 measured). bf16 / fp16: bench/record_precision.py measured at most
# 5.0 (bf16) and 1.8 (fp16) nats on the synthetic pointmlp-tiny teacher (CPU autocast; the large errors are in the
# far tail, log p < -5, where the logits are large), so the tolerances are twice that; a low-precision store must
# also agree with the replay on the argmax of almost every record (measured 99.4 % / 99.9 %).
REPLAY_TOLERANCE = {"fp32": 1e-3, "bf16": 10.0, "fp16": 4.0}
MIN_ARGMAX_AGREEMENT = {"fp32": 0.0, "bf16": 0.95, "fp16": 0.95}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise KdpcError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def replay_tolerance(precision: str | None) -> tuple[str, float, float]:
    """The precision a store says it was recorded at (fp32 when it does not say: stores written by other tools or
    by kdpc's Python writer), its |log-prob| tolerance and the argmax agreement it needs."""
    precision = precision if precision in REPLAY_TOLERANCE else "fp32"
    return precision, REPLAY_TOLERANCE[precision], MIN_ARGMAX_AGREEMENT[precision]


@contextlib.contextmanager
def teacher_precision(device: torch.device, precision: str) -> Iterator[None]:
    """Run the teacher at ``precision`` inside the block; fp32 also turns TF32 off (and restores the caller's
    setting after)."""
    check_precision(precision)
    if precision != "fp32":
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]):
            yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn

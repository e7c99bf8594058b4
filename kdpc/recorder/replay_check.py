"""``kdpc records verify --teacher``: replay N random records through the teacher and compare with the store."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..augment import params_at
from ..checkpoint import file_sha256, load_checkpoint
from ..data import create_dataset
from ..distill.dataset import check_provenance
from ..engine import model_forward, replay_view, resolve_device
from ..records import RecordReader, get_codec
from ..records.codecs import decoded_error_bound

# Replayed views may be batched differently from the recording run; that moves log-probs by ~1e-5.
BATCH_ROUNDING_SLACK = 1e-3


def replay_check(store: str, teacher: str, num_check: int, data_root: str | None = None, device: str = "auto",
                 seed: int = 0) -> dict[str, Any]:
    reader = RecordReader(store)
    header = reader.header
    ckpt = load_checkpoint(teacher)
    if header.teacher.get("sha256") and file_sha256(teacher) != header.teacher["sha256"]:
        return {"ok": False, "checked": 0, "max_abs_error": None,
                "message": f"{teacher} is not the teacher that made this store (sha256 differs)"}
    info = header.dataset
    dataset = create_dataset(info["name"], root=data_root, split=info.get("split", "train"),
                             num_points=header.num_points, **info.get("config", {}))
    check_provenance(header, dataset)
    dev = resolve_device(device)
    model = ckpt.build_model(dev)
    rng = np.random.default_rng(seed)
    records = np.sort(rng.choice(reader.num_records, size=min(num_check, reader.num_records), replace=False))
    if header.task == "partseg":
        return _replay_check_seg(reader, dataset, model, dev, records)
    stored = reader.get(records)
    params = {spec.name: stored[spec.name] for spec in header.params}
    views, labels = [], []
    for k, sample in enumerate(stored["sample"]):
        points, _ = replay_view(dataset, int(sample), params_at(params, k))
        views.append(points[:, :3])
        labels.append(int(dataset.labels[sample]))
    with torch.inference_mode():
        logits = model_forward(model, torch.from_numpy(np.stack(views)).to(dev), torch.tensor(labels, device=dev))
        replayed = F.log_softmax(logits.float(), dim=-1).cpu().numpy()
    codec = get_codec(header.codec, header.num_classes)
    stored_logprobs = stored["logprobs"].astype(np.float64)
    bound = decoded_error_bound(codec, replayed.astype(np.float64), stored_logprobs) + BATCH_ROUNDING_SLACK
    error = np.abs(replayed - stored_logprobs)
    bounded = np.isfinite(bound)  # topk tails carry no per-class guarantee
    max_error = float(error[bounded].max()) if bounded.any() else 0.0
    worst = float((error - bound)[bounded].max()) if bounded.any() else 0.0
    ok = worst <= 0.0
    argmax_agree = float((replayed.argmax(1) == stored_logprobs.argmax(1)).mean())
    return {"ok": ok, "checked": int(records.size), "max_abs_error": max_error, "argmax_agreement": argmax_agree,
            "message": f"max |log-prob error| {max_error:.3g} ({'within' if ok else 'OUTSIDE'} the {header.codec} codec "
                       f"bound); argmax agreement {100 * argmax_agree:.1f}%"}


# Stored features are float16; a different batch composition moves float32 features by ~1e-6 relative.
FEATURE_RTOL = 2.0**-10


def _replay_check_seg(reader: RecordReader, dataset: Any, model: torch.nn.Module, dev: torch.device,
                      records: np.ndarray) -> dict[str, Any]:
    """partseg: per-point outputs within the codec's guarantees (``point_replay_check``) and the anchor features
    within float16 rounding of a fresh teacher run on the replayed views."""
    from ..records.codecs import point_replay_check
    from .seg import teacher_seg_outputs

    header = reader.header
    stored = reader.get(records)
    params = {spec.name: stored[spec.name] for spec in header.params}
    views = np.stack([replay_view(dataset, int(s), params_at(params, k))[0][:, :3] for k, s in enumerate(stored["sample"])])
    labels = torch.as_tensor(dataset.labels[stored["sample"].astype(np.int64)], device=dev).long()
    fresh = teacher_seg_outputs(model, torch.from_numpy(views).to(dev), labels, stored["seed"], header)
    check = point_replay_check(header.codec_obj(), fresh["logprobs"], stored["logprobs"], slack=BATCH_ROUNDING_SLACK)
    ok = bool(check["ok"]) and check["topk_agreement"] >= 0.99
    feature_error = None
    if "features" in fresh:
        diff = np.abs(stored["features"] - fresh["features"])
        tol = FEATURE_RTOL * np.abs(fresh["features"]) + BATCH_ROUNDING_SLACK
        feature_error = float(diff.max()) if diff.size else 0.0
        ok = ok and bool((diff <= tol).all())
    message = (f"per-point outputs {'within' if check['ok'] else 'OUTSIDE'} the {header.codec} codec bound (worst excess "
               f"{check['worst_excess']:.3g}), top-K agreement {100 * check['topk_agreement']:.1f}%, argmax agreement "
               f"{100 * check['argmax_agreement']:.1f}%")
    if feature_error is not None:
        message += f"; anchor features max |error| {feature_error:.3g}"
    return {"ok": ok, "checked": int(records.size), "max_abs_error": check["max_abs_error"],
            "argmax_agreement": check["argmax_agreement"], "feature_max_abs_error": feature_error, "message": message}

"""``kdpc records verify --teacher``: replay N random records through the teacher and compare with the store."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..augment import params_at, replay_view
from ..distill.dataset import recorded_dataset
from ..models.base import unwrap_model
from ..teachers import Teacher, load_teacher
from ..training.runtime import resolve_device
from .precision import replay_tolerance
from ..store import RecordReader
from ..store.schema import FEATURES
from ..store.codecs import PointCodec, PointTopKCodec, decoded_error_bound, get_codec, logsumexp
from ..store.codecs import point_decoded_error_bound
from ..store.codecs.points import top_k


def replay_check(store: str, teacher: Any, num_check: int, data_root: str | None = None, device: str = "auto",
                 seed: int = 0, *, weights: str | None = None, options: dict[str, Any] | None = None,
                 adapter: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replay ``num_check`` random records through ``teacher`` (any ``--teacher`` spec, or an ``nn.Module``) and
    compare with the stored outputs. A foreign teacher is fed and read with the adapter the store recorded unless
    ``adapter`` is given."""
    reader = RecordReader(store)
    header = reader.header
    dev = resolve_device(device)
    loaded = load_teacher(teacher, weights=weights, options=options, adapter=adapter, device=dev)
    if adapter is None and not loaded.is_kdpc and header.teacher.get("adapter"):
        loaded = Teacher(loaded.loaded, header.teacher["adapter"])  # fed and read as when it was recorded
    sha = loaded.loaded.sha256
    # file hashes and state-dict hashes (an nn.Module handed over in Python) are not comparable
    comparable = (loaded.format == "module") == (header.teacher.get("format") == "module")
    if comparable and header.teacher.get("sha256") and sha and sha != header.teacher["sha256"]:
        return {"ok": False, "checked": 0, "max_abs_error": None,
                "message": f"{loaded.loaded.source} is not the teacher that made this store (sha256 differs)"}
    dataset = recorded_dataset(header, store, data_root)
    loaded.bind(dataset, dev)
    if list(loaded.class_names or []) != list(header.class_names):
        return {"ok": False, "checked": 0, "max_abs_error": None,
                "message": "the teacher's classes are not the store's (check the adapter's class_names)"}
    rng = np.random.default_rng(seed)
    records = np.sort(rng.choice(reader.num_records, size=min(num_check, reader.num_records), replace=False))
    if header.task == "partseg":
        return _replay_check_seg(reader, dataset, loaded.module, dev, records)
    if header.task == "semseg":
        return _replay_check_scene(reader, dataset, loaded.module, dev, records)
    stored = reader.get(records)
    params = {spec.name: stored[spec.name] for spec in header.params}
    views, labels = [], []
    for k, sample in enumerate(stored["sample"]):
        points, _ = replay_view(dataset, int(sample), params_at(params, k))
        views.append(points)
        labels.append(int(dataset.labels[sample]))
    points = torch.from_numpy(np.stack(views)).to(dev)
    fresh = None  # a store with embeddings was recorded by one forward giving both: replay it the same way
    if header.feature_dim and callable(getattr(unwrap_model(loaded.module), "forward_features", None)):
        from .seg import teacher_cls_outputs

        fresh = teacher_cls_outputs(loaded.module, points, header)
        replayed = fresh["logprobs"]
    else:
        with torch.inference_mode():
            replayed = loaded(points, torch.tensor(labels, device=dev)).cpu().numpy()
    codec = get_codec(header.codec, header.num_classes)
    stored_logprobs = stored["logprobs"].astype(np.float64)
    precision, tolerance, min_agreement = replay_tolerance(header.teacher.get("precision"))
    bound = decoded_error_bound(codec, replayed.astype(np.float64), stored_logprobs) + tolerance
    error = np.abs(replayed - stored_logprobs)
    bounded = np.isfinite(bound)  # topk tails carry no per-class guarantee
    max_error = float(error[bounded].max()) if bounded.any() else 0.0
    worst = float((error - bound)[bounded].max()) if bounded.any() else 0.0
    argmax_agree = float((replayed.argmax(1) == stored_logprobs.argmax(1)).mean())
    ok = worst <= 0.0 and argmax_agree >= min_agreement
    message = (f"max |log-prob error| {max_error:.3g} ({'within' if ok else 'OUTSIDE'} the {header.codec} codec "
               f"bound + {tolerance:g} for a teacher recorded at {precision}); argmax agreement "
               f"{100 * argmax_agree:.1f}%")
    feature_error = None
    if fresh is not None:  # the teacher's embedding of each view, recomputed
        feature_error, features_ok = _features_check(stored[FEATURES], fresh["features"], precision, tolerance)
        ok = ok and features_ok
        message += f"; embeddings max |error| {feature_error:.3g} ({'within' if features_ok else 'OUTSIDE'} float16)"
    return {"ok": ok, "checked": int(records.size), "max_abs_error": max_error, "argmax_agreement": argmax_agree,
            "feature_max_abs_error": feature_error, "precision": precision, "tolerance": tolerance,
            "message": message}


# Stored features are float16; a different batch composition moves float32 features by ~1e-6 relative.
FEATURE_RTOL = 2.0**-10
LOW_PRECISION_FEATURE_RTOL = 2.0**-5  # a bf16 / fp16 teacher's features (8 / 11 significant bits), with margin


def _features_check(stored: np.ndarray, fresh: np.ndarray, precision: str, tolerance: float) -> tuple[float, bool]:
    """Stored teacher features against a fresh teacher run: (max |error|, every value within float16 rounding of
    the fresh one at the teacher's recording precision, plus ``tolerance``)."""
    diff = np.abs(stored - fresh)
    rtol = FEATURE_RTOL if precision == "fp32" else LOW_PRECISION_FEATURE_RTOL
    return (float(diff.max()) if diff.size else 0.0), bool((diff <= rtol * np.abs(fresh) + tolerance).all())


def _replay_check_seg(reader: RecordReader, dataset: Any, model: torch.nn.Module, dev: torch.device,
                      records: np.ndarray) -> dict[str, Any]:
    """partseg: per-point outputs within the codec's guarantees (``point_replay_check``) and the anchor features
    within float16 rounding of a fresh teacher run on the replayed views."""
    from .seg import teacher_seg_outputs

    header = reader.header
    stored = reader.get(records)
    params = {spec.name: stored[spec.name] for spec in header.params}
    views = np.stack([replay_view(dataset, int(s), params_at(params, k))[0] for k, s in enumerate(stored["sample"])])
    labels = torch.as_tensor(dataset.labels[stored["sample"].astype(np.int64)], device=dev).long()
    fresh = teacher_seg_outputs(model, torch.from_numpy(views).to(dev), labels, stored["seed"], header)
    precision, tolerance, min_agreement = replay_tolerance(header.teacher.get("precision"))
    check = point_replay_check(header.codec_obj(), fresh["logprobs"], stored["logprobs"], slack=tolerance)
    ok = bool(check["ok"]) and check["topk_agreement"] >= 0.99 and check["argmax_agreement"] >= min_agreement
    feature_error = None
    if "features" in fresh:
        feature_error, features_ok = _features_check(stored[FEATURES], fresh["features"], precision, tolerance)
        ok = ok and features_ok
    message = (f"per-point outputs {'within' if check['ok'] else 'OUTSIDE'} the {header.codec} codec bound + "
               f"{tolerance:g} for a teacher recorded at {precision} (worst excess "
               f"{check['worst_excess']:.3g}), top-K agreement {100 * check['topk_agreement']:.1f}%, argmax agreement "
               f"{100 * check['argmax_agreement']:.1f}%")
    if feature_error is not None:
        message += f"; anchor features max |error| {feature_error:.3g}"
    return {"ok": ok, "checked": int(records.size), "max_abs_error": check["max_abs_error"],
            "argmax_agreement": check["argmax_agreement"], "feature_max_abs_error": feature_error,
            "precision": precision, "tolerance": tolerance, "message": message}


def _replay_check_scene(reader: RecordReader, dataset: Any, model: torch.nn.Module, dev: torch.device,
                        records: np.ndarray) -> dict[str, Any]:
    """semseg: every checked view is rebuilt from its stored parameters with exactly its stored number of points
    (a different count means the replay is not exact), then checked like part segmentation, view by view."""
    from ..scenes.transforms import SceneAugmentConfig, replay_scene_view
    from .scenes import collate_record_views, teacher_scene_outputs

    header = reader.header
    augment = SceneAugmentConfig.from_dict(header.augment)
    precision, tolerance, min_agreement = replay_tolerance(header.teacher.get("precision"))
    ok, worst, max_error, feature_error = True, -math.inf, 0.0, None
    agree, topk_agree, points = 0.0, 0.0, 0
    for record in records:
        stored = reader.get_view(int(record))  # its stored parameters: a merged store's views have other seeds
        view = replay_scene_view(dataset, int(stored["sample"]), {p.name: stored[p.name] for p in header.params},
                                 augment)
        item = {"coord": view.coord, "feat": view.features(dataset.channels), "record": int(record),
                "seed": int(stored["seed"])}
        m = int(stored["logprobs"].shape[0])
        if item["coord"].shape[0] != m:
            return {"ok": False, "checked": int(records.size), "max_abs_error": None,
                    "message": f"{header.describe_record(int(record))}: the store holds {m} points but the replayed "
                               f"view has {item['coord'].shape[0]}: the view does not replay exactly"}
        fresh = teacher_scene_outputs(model, collate_record_views([item]), header, dev)
        check = point_replay_check(header.codec_obj().resized(m), fresh["logprobs"][None], stored["logprobs"][None],
                                   slack=tolerance)
        ok = ok and bool(check["ok"]) and check["topk_agreement"] >= 0.99
        worst, max_error = max(worst, check["worst_excess"]), max(max_error, check["max_abs_error"])
        agree += check["argmax_agreement"] * m
        topk_agree += check["topk_agreement"] * m
        points += m
        if FEATURES in stored:
            fresh_features = fresh["features"][0, : stored[FEATURES].shape[0]]
            view_error, features_ok = _features_check(stored[FEATURES], fresh_features, precision, tolerance)
            feature_error = max(feature_error or 0.0, view_error)
            ok = ok and features_ok
    argmax_agreement, topk_agreement = agree / max(points, 1), topk_agree / max(points, 1)
    ok = ok and argmax_agreement >= min_agreement
    message = (f"{records.size} views ({points:,} points) replayed with their stored point counts; per-point outputs "
               f"{'within' if worst <= 0 else 'OUTSIDE'} the {header.codec} codec bound + {tolerance:g} for a teacher "
               f"recorded at {precision} (worst excess {worst:.3g}), top-K agreement {100 * topk_agreement:.1f}%, "
               f"argmax agreement {100 * argmax_agreement:.1f}%")
    if feature_error is not None:
        message += f"; anchor features max |error| {feature_error:.3g}"
    return {"ok": ok, "checked": int(records.size), "max_abs_error": max_error, "argmax_agreement": argmax_agreement,
            "feature_max_abs_error": feature_error, "precision": precision, "tolerance": tolerance, "message": message}


def point_replay_check(codec: PointCodec, reference: np.ndarray, decoded: np.ndarray, slack: float = 1e-3) -> dict:
    """Compare decoded per-point outputs with a fresh teacher run on the replayed views (``[n, N, P]`` each).

    Dense codecs: every entry within ``point_decoded_error_bound + slack`` (entries without a bound are skipped).
    ``ptopk:K``: on the points whose top-K part set is the same in both (near-ties may swap; reported as
    ``topk_agreement``), the gaps ``l[t_1] - l[t_j]`` of the top-K parts and the tail depth
    ``l[t_1] - logsumexp(tail)`` within their codes' bounds + ``slack``. ``slack`` covers float rounding between the
    recording and the replay (other batch composition, another device).

    Returns ``{"ok", "worst_excess", "max_abs_error", "argmax_agreement", "topk_agreement"}``; ``worst_excess`` is
    the largest error minus its bound (<= 0 when ``ok``), ``max_abs_error`` the largest bounded difference.
    """
    ref = np.asarray(reference, dtype=np.float64)
    dec = np.asarray(decoded, dtype=np.float64)
    if ref.shape != dec.shape or ref.ndim != 3:
        raise ValueError(f"reference {ref.shape} and decoded {dec.shape} must both be [n, points, parts]")
    argmax_agreement = float((ref.argmax(-1) == dec.argmax(-1)).mean()) if ref.size else 1.0
    if not isinstance(codec, PointTopKCodec):
        bound = point_decoded_error_bound(codec, ref, dec) + slack
        fin = np.isfinite(bound)
        err = np.abs(dec - ref)
        worst = float((err - bound)[fin].max()) if fin.any() else 0.0
        return {"ok": worst <= 0.0, "worst_excess": worst, "max_abs_error": float(err[fin].max()) if fin.any() else 0.0,
                "argmax_agreement": argmax_agreement, "topk_agreement": 1.0}
    k = codec.k
    top_ref = top_k(ref, k)[0]
    top_dec = top_k(dec, k)[0]
    same = (np.sort(top_ref, axis=-1) == np.sort(top_dec, axis=-1)).all(axis=-1)  # [n, N]
    b0 = codec.D0 * math.expm1(0.5 / codec.KQ) * (1 + 1e-9)  # the bound at d = 0 (the top part's own error)
    ref_top = np.take_along_axis(ref, top_ref, axis=-1)
    dec_top = np.take_along_axis(dec, top_ref, axis=-1)
    d_ref = ref_top[..., :1] - ref_top
    d_dec = dec_top[..., :1] - dec_top
    gap_err = np.abs(d_dec - d_ref)
    gap_bound = (d_ref + codec.D0) * math.expm1(0.5 / codec.KQ) * (1 + 1e-9) + b0 + slack
    in_tail = np.ones(ref.shape, dtype=bool)
    np.put_along_axis(in_tail, top_ref, False, axis=-1)
    with np.errstate(invalid="ignore"):
        s_ref = ref_top[..., 0] - logsumexp(np.where(in_tail, ref, -np.inf))[..., 0]
        s_dec = dec_top[..., 0] - logsumexp(np.where(in_tail, dec, -np.inf))[..., 0]
    tail_err = np.abs(s_dec - s_ref)
    tail_bound = codec.tail_bound(s_ref) + b0 + slack
    checks_err = np.concatenate([gap_err[same].ravel(), tail_err[same].ravel()])
    checks_bound = np.concatenate([gap_bound[same].ravel(), tail_bound[same].ravel()])
    fin = np.isfinite(checks_bound) & np.isfinite(checks_err)
    worst = float((checks_err - checks_bound)[fin].max()) if fin.any() else 0.0
    return {"ok": worst <= 0.0, "worst_excess": worst,
            "max_abs_error": float(gap_err[same].max()) if same.any() else 0.0,
            "argmax_agreement": argmax_agreement, "topk_agreement": float(same.mean()) if same.size else 1.0}


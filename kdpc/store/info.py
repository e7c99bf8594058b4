"""``store_info``: what a store holds, how big it is, how good its teacher was, and where it came from."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import KdpcError
from .backends import open_store, read_header
from .reader import RecordReader
from .schema import FEATURES, OUTPUT_GROUP, POINT_COUNT, array_specs


def store_info(path: Any, accuracy: bool = True) -> dict[str, Any]:
    """A JSON-able summary. ``accuracy=False`` skips reading the teacher outputs (fast, metadata only).

    Keys: path, backend, task, records, samples, views, classes, class_names, codec, codec_resolution,
    chunk_records, blocks, blocks_done, complete, bytes_on_disk, bytes_per_record, array_bytes,
    teacher_accuracy, problem (set when the outputs could not be read), and the provenance: teacher, dataset,
    augment, params, run_seed, num_points, schema_version, kdpc_version, created, extra. partseg stores add
    num_anchors, feature_dim, feature_projection and output_bytes_per_record / feature_bytes_per_record;
    semseg stores also points (recorded so far), mean_points_per_view and output_bytes_per_point.
    """
    backend = open_store(path, "r")
    header = read_header(backend)
    complete, done, _flags = backend.completeness(header)
    size = backend.bytes_on_disk()
    codec = header.codec_obj()
    info: dict[str, Any] = {
        "path": backend.location,
        "backend": backend.kind,
        "task": header.task,
        "records": header.num_records,
        "samples": header.num_samples,
        "views": header.num_views,
        "classes": header.num_classes,
        "class_names": list(header.class_names),
        "codec": header.codec,
        "codec_resolution": codec.resolution,
        "chunk_records": header.chunk_records,
        "blocks": header.num_blocks,
        "blocks_done": done,
        "complete": complete,
        "completion": f"{done}/{header.num_blocks} blocks",
        "bytes_on_disk": size,
        "bytes_per_record": (size / header.num_records) if size is not None else None,
        "array_bytes": {s.name: backend.array_bytes(s.name) for s in array_specs(header)},
        "teacher_accuracy": None,
        "problem": None,
    }
    if accuracy and done:
        try:
            reader = RecordReader(path, require_complete=False)
            info["teacher_accuracy"] = reader.teacher_accuracy()
        except KdpcError as exc:
            info["problem"] = str(exc)
    if header.task in ("partseg", "semseg") or header.feature_dim:
        records = max(header.num_records, 1)
        out_bytes = [v for k, v in info["array_bytes"].items() if k.startswith(OUTPUT_GROUP + "/")]
        info.update({
            "num_anchors": header.num_anchors,
            "feature_dim": header.feature_dim,
            "feature_projection": header.feature_projection,
            "output_bytes_per_record": sum(out_bytes) / records if None not in out_bytes else None,
            "feature_bytes_per_record": (info["array_bytes"][FEATURES] / records
                                         if info["array_bytes"].get(FEATURES) is not None else None),
        })
    if header.task == "semseg":
        counts = backend.read(POINT_COUNT, 0, header.num_records).astype(np.int64)  # 0 for views not recorded yet
        points, views = int(counts.sum()), int((counts > 0).sum())
        out_bytes = [v for k, v in info["array_bytes"].items() if k.startswith(OUTPUT_GROUP + "/")]
        info.update({"points": points, "mean_points_per_view": points / views if views else None,
                     "output_bytes_per_point": sum(out_bytes) / points if points and None not in out_bytes else None})
    info.update(
        {
            "teacher": header.teacher,
            "dataset": header.dataset,
            "augment": header.augment,
            "params": header.to_dict()["params"],
            "run_seed": header.run_seed,
            "num_points": header.num_points,
            "schema_version": header.schema_version,
            "kdpc_version": header.kdpc_version,
            "created": header.created,
            "extra": header.extra,
        }
    )
    return info


def format_info(info: dict[str, Any]) -> str:
    """``store_info`` as the human-readable block ``kdpc records info`` prints."""
    teacher = info.get("teacher") or {}
    dataset = info.get("dataset") or {}
    metrics = teacher.get("metrics") or {}
    acc = info.get("teacher_accuracy")
    size = info.get("bytes_on_disk")
    lines = [
        f"store      {info['path']} ({info['backend']}, schema {info['schema_version']}, {info['completion']}"
        f"{'' if info['complete'] else ', INCOMPLETE'})",
        f"records    {info['records']:,} = {info['samples']:,} samples x {info['views']} views, "
        f"{info['classes']} classes, task {info['task']}",
        f"codec      {info['codec']}: {info['codec_resolution']}",
        f"size       {size:,} bytes stored, {info['bytes_per_record']:.1f} bytes/record" if size is not None
        else "size       unknown (the location cannot report object sizes)",
        *_teacher_lines(teacher, metrics, dataset.get("fingerprint")),
        f"           accuracy on the recorded views: {'n/a' if acc is None else f'{100 * acc:.2f}%'}",
        f"dataset    {dataset.get('name', '?')}/{dataset.get('split', '?')}, {dataset.get('num_samples', '?')} samples, "
        f"{info.get('num_points')} points, fingerprint {str(dataset.get('fingerprint', '?'))[:16]}…",
        f"augment    {json.dumps(info.get('augment', {}), sort_keys=True)}, run seed {info.get('run_seed')}",
        f"made by    kdpc {info.get('kdpc_version')} at {info.get('created')}",
    ]
    if info.get("task") == "partseg":
        proj = info.get("feature_projection") or {}
        lines.insert(3, f"per view   {info['num_points']} points x {info['classes']} parts; features at "
                     f"{info.get('num_anchors')} anchors x {info.get('feature_dim')} dims"
                     + (f" (random projection from {proj.get('in_dim')}, seed {proj.get('seed')})" if proj else ""))
    if info.get("task") == "cls" and info.get("feature_dim"):
        proj = info.get("feature_projection") or {}
        lines.insert(3, f"per view   the teacher's embedding, {info['feature_dim']} dims"
                     + (f" (random projection from {proj.get('in_dim')}, seed {proj.get('seed')})" if proj else "")
                     + (f", {info['feature_bytes_per_record']:.1f} bytes/record"
                        if info.get("feature_bytes_per_record") is not None else ""))
    if info.get("task") == "semseg":
        proj = info.get("feature_projection") or {}
        per_point = info.get("output_bytes_per_point")
        mean = info.get("mean_points_per_view")
        lines.insert(3, f"per view   up to {info['num_points']:,} points (mean {0 if mean is None else mean:,.0f}) x "
                     f"{info['classes']} classes, {info.get('points', 0):,} points in all"
                     + (f", outputs {per_point:.2f} bytes/point" if per_point is not None else "")
                     + f"; features at {info.get('num_anchors')} anchors x {info.get('feature_dim')} dims"
                     + (f" (random projection from {proj.get('in_dim')}, seed {proj.get('seed')})" if proj else ""))
    if info.get("problem"):
        lines.append(f"problem    {info['problem']}")
    return "\n".join(lines)


def _teacher_line(teacher: dict, metrics: dict, store_fingerprint: str | None) -> str:
    return (f"{teacher.get('arch', '?')} ({int(teacher.get('num_params') or 0):,} params), sha256 "
            f"{str(teacher.get('sha256', '?'))[:16]}…, scores "
            + " ".join(f"{k}={v:.4f}" for k, v in (metrics or {}).items()
                       if isinstance(v, float) and "/iou/" not in k)  # per-class IoUs: kdpc eval prints them
            + _own_data_note(teacher.get("dataset_fingerprint"), store_fingerprint))


def _own_data_note(teacher_fingerprint: str | None, store_fingerprint: str | None) -> str:
    """A checkpoint's scores are on the splits of the data it was trained on: say so when that is not the data this
    store recorded, so that they are not read as scores on this data's val/test."""
    if not teacher_fingerprint or not store_fingerprint or teacher_fingerprint == store_fingerprint:
        return ""
    return (f" (on its own data's splits: it was trained on data {str(teacher_fingerprint)[:16]}…, not this store's "
            "split)")


def _teacher_lines(teacher: dict, metrics: dict, store_fingerprint: str | None) -> list[str]:
    """One line for a teacher; for an ensemble (``kdpc records merge``) a line per member with its weight."""
    members = teacher.get("ensemble")
    if not isinstance(members, list):
        return [f"teacher    {_teacher_line(teacher, metrics, store_fingerprint)}"]
    weights = teacher.get("weights") or [None] * len(members)
    lines = [f"teacher    ensemble of {len(members)} teachers (mean of their probabilities), combined sha256 "
             f"{str(teacher.get('sha256', '?'))[:16]}…"]
    for i, (member, w) in enumerate(zip(members, weights)):
        weight = "" if w is None else f"weight {float(w):.3g}: "
        embeds = "; its embedding is stored" if member.get("sha256") == teacher.get("embedding_from", False) else ""
        lines.append(f"  {i + 1:>2d}.      {weight}"
                     f"{_teacher_line(member, member.get('metrics') or {}, store_fingerprint)}{embeds}")
    return lines

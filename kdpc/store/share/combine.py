"""Array-level sharing: ``convert_store`` (zarr <-> HDF5) and ``merge_stores`` (more views of one teacher, or an
ensemble of teachers). Both write through ``RecordWriter.write_encoded_block``: the *encoded* arrays are copied
bit-exactly, except for an ensemble, whose output is the weighted mean of the teachers' probabilities,
re-encoded with the codec."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ...ensemble import mix_log_probs, parse_weights
from ...errors import KdpcError, distinguishing_prefixes
from ...progress import progress
from ...secrets import redact_text
from ..backends import Backend
from ..schema import (FEATURES, LABELS, OUTPUT_GROUP, POINT_COUNT, POINT_OFFSET, SEG_FIELDS, StoreHeader,
                      record_array_specs)
from ..writer import RecordWriter
from .sources import open_complete

@dataclass
class MergeReport:
    out: str
    mode: str  # "views" | "ensemble"
    inputs: list[str] = field(default_factory=list)
    num_views: int = 0
    records: int = 0
    weights: list[float] | None = None
    embeddings_dropped: bool = False  # an ensemble of stores that keep the teachers' embeddings keeps the answers only
    embedding_from: str | None = None  # ... unless asked to keep one member's (merge_stores(embedding_from=...))

    def summary(self) -> str:
        what = (f"union of views ({self.num_views} views)" if self.mode == "views"
                else f"ensemble of {len(self.inputs)} teachers (weights {', '.join(f'{w:g}' for w in self.weights or [])})")
        note = ""
        if self.embedding_from is not None:
            note = f"; the embedding is {self.embedding_from}'s (the other teachers' are left out)"
        elif self.embeddings_dropped:
            note = ("; the teachers' embeddings are left out (each teacher embeds in its own space: "
                    "--embedding-from STORE keeps one)")
        return f"{self.out}: {what}, {self.records} records{note}"



@dataclass(frozen=True)
class Output:
    """Where and how merge / convert write their store."""

    path: Any
    overwrite: bool = False
    show_progress: bool | None = None
    break_lease: bool = False


def _write_store(out: Output, header: StoreHeader, labels: np.ndarray,
                 block_arrays: Callable[[int, int, int], dict[str, np.ndarray]], desc: str) -> str:
    """Write every block of a new store from ``block_arrays(b, start, stop)`` (encoded arrays by name), then
    finalize; on any failure the half-written output is removed."""
    writer = RecordWriter.open(out.path, header, mode="overwrite" if out.overwrite else "create", labels=labels,
                               resumable=False, command=f"kdpc records {desc}", break_lease=out.break_lease)
    try:
        for b in progress(range(header.num_blocks), desc=desc, unit="block",
                          disable=None if out.show_progress is None else not out.show_progress):
            start, stop = header.block_range(b)
            writer.write_encoded_block(b, block_arrays(b, start, stop))
        path = writer.finalize()
    except BaseException:
        writer.discard()
        raise
    writer.close()
    return path


def _view_major_ids(header: StoreHeader, start: int, stop: int) -> dict[str, np.ndarray]:
    sample, view = header.sample_view(np.arange(start, stop))
    dtypes = {s.name: s.dtype for s in record_array_specs(header)}
    return {"sample": sample.astype(dtypes["sample"]), "view": view.astype(dtypes["view"])}


# ---------------------------------------------------------------------------------------------------- convert
def convert_store(src: Any, dst: Any, *, overwrite: bool = False, show_progress: bool | None = None,
                  break_lease: bool = False) -> str:
    """zarr <-> HDF5 (by ``dst``'s suffix: ``.h5``/``.hdf5`` or a folder): the same header (``created``
    included), labels and encoded arrays, so a reader returns identical data."""
    backend, header = open_complete(src)
    labels = backend.read_present(LABELS, 0, header.num_samples)
    specs = record_array_specs(header)

    def block(b: int, start: int, stop: int) -> dict[str, np.ndarray]:
        return {s.name: backend.read_present(s.name, *header.block_rows(s, b)) for s in specs}

    try:
        return _write_store(Output(dst, overwrite, show_progress, break_lease), header, labels, block, "convert")
    finally:
        backend.close()


# ------------------------------------------------------------------------------------------------------ merge
_SAME_DATA = ("task", "num_samples", "num_classes", "class_names", "num_points", "augment", "view_stream", "params")


def _describe(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _differences(a: StoreHeader, b: StoreHeader, fields: Sequence[str]) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    out = []
    for f in fields:
        if f == "fingerprint":
            fa, fb = a.dataset.get("fingerprint"), b.dataset.get("fingerprint")
            if fa != fb:
                out.append("dataset fingerprint {} vs {}".format(*distinguishing_prefixes(str(fa), str(fb))))
        elif f == "dataset":
            ka = {k: v for k, v in a.dataset.items() if k != "fingerprint"}
            kb = {k: v for k, v in b.dataset.items() if k != "fingerprint"}
            if ka != kb:
                keys = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
                out.append("dataset " + ", ".join(f"{k} {_describe(ka.get(k))} vs {_describe(kb.get(k))}" for k in keys))
        elif da.get(f) != db.get(f):
            out.append(f"{f} {_describe(da.get(f))} vs {_describe(db.get(f))}")
    return out


def teacher_id(header: StoreHeader) -> Any:
    return header.teacher.get("sha256")


def _ensemble_teacher(headers: Sequence[StoreHeader], weights: Sequence[float],
                      embedding_from: int | None = None) -> dict[str, Any]:
    members: list[dict] = []
    for h in headers:
        members.append(dict(h.teacher))
    token = json.dumps([[m.get("sha256"), w] for m, w in zip(members, weights)])
    kept = {} if embedding_from is None else {"embedding_from": members[embedding_from].get("sha256")}
    return {
        "arch": "ensemble",
        "sha256": hashlib.sha256(b"kdpc-ensemble:" + token.encode()).hexdigest(),
        "num_params": int(sum(int(m.get("num_params") or 0) for m in members)),
        "config": {},
        "metrics": {},
        "ensemble": members,
        "weights": [float(w) for w in weights],
        **kept,
    }


def _provenance(backend: Backend, header: StoreHeader, view_offset: int) -> dict[str, Any]:
    """What the output records about one input (no locations: a URL could carry a token)."""
    return {"teacher_sha256": teacher_id(header), "teacher_arch": header.teacher.get("arch"), "created": header.created,
            "kdpc_version": header.kdpc_version, "run_seed": header.run_seed, "codec": header.codec,
            "num_views": header.num_views, "view_offset": view_offset}


def merge_stores(inputs: Sequence[Any], out: Any, *, weights: Any = None, codec: str | None = None,
                 overwrite: bool = False, show_progress: bool | None = None, break_lease: bool = False,
                 embedding_from: Any = None) -> MergeReport:
    """Merge complete stores of the same data into ``out`` (a local folder or ``.h5``).

    * same teacher (sha256), codec, augmentation and data -> **more views**: the output holds every view of every
      input (input ``i``'s view ``v`` becomes view ``offset_i + v``) with its parameters and encoded output copied
      as stored (replay uses the stored parameters). Views present in two inputs (same sample, seed and
      parameters, e.g. recorded with the same ``--seed``) are refused.
    * different teachers on identical views (same data, run seed, views and parameter arrays) -> an **ensemble**:
      the output is ``log(sum_i w_i p_i)`` (``weights`` normalised, default equal) re-encoded with ``codec``
      (default: the first input's); every teacher is listed in ``header.teacher["ensemble"]``. Teachers embed in
      spaces of their own, which do not average: the output keeps no embedding, or, with ``embedding_from`` (one of
      ``inputs``), that input's as stored (``header.teacher["embedding_from"]`` names its teacher).
    """
    if len(inputs) < 2:
        raise KdpcError("merge needs at least two stores")
    output = Output(out, overwrite, show_progress, break_lease)
    opened = [open_complete(p, "input") for p in inputs]
    backends = [b for b, _ in opened]
    headers = [h for _, h in opened]
    names = [b.location for b in backends]
    a = headers[0]
    for name, h in zip(names[1:], headers[1:]):
        diff = _differences(a, h, ("fingerprint", "dataset", *_SAME_DATA))
        if diff:
            raise KdpcError(f"cannot merge {names[0]} and {name}: they hold different data ({'; '.join(diff)})")
    labels = backends[0].read_present(LABELS, 0, a.num_samples)
    for b, name in zip(backends[1:], names[1:]):
        if not np.array_equal(b.read_present(LABELS, 0, a.num_samples), labels):
            raise KdpcError(f"cannot merge {names[0]} and {name}: their labels differ")
    teachers = [teacher_id(h) for h in headers]
    kept = _embedding_source(inputs, headers, embedding_from)
    if len(set(map(str, teachers))) == 1:
        if kept is not None:
            raise KdpcError("--embedding-from is for ensembles of different teachers; these stores share one teacher")
        if weights is not None:
            raise KdpcError("--weights is for ensembles of different teachers; these stores share one teacher")
        if codec is not None and codec != a.codec:
            raise KdpcError(f"--codec {codec}: merging views copies the encoded outputs as stored ({a.codec})")
        return _merge_views(backends, headers, names, labels, output)
    if a.task != "cls":
        raise KdpcError(f"cannot merge {names[0]} and {names[1]}: they have different teachers, and ensembles are "
                        f"made of classification stores only ({a.task} stores keep per-point outputs and features)")
    if len(set(map(str, teachers))) != len(teachers):
        raise KdpcError("cannot merge: some inputs share a teacher and others do not; merge the views of each teacher "
                        "first, then make the ensemble")
    return _merge_ensemble(backends, headers, names, labels, output, weights, codec, kept)


def _embedding_source(inputs: Sequence[Any], headers: Sequence[StoreHeader], embedding_from: Any) -> int | None:
    """The position in ``inputs`` of the store whose embedding an ensemble keeps (None: keep none)."""
    if embedding_from is None:
        return None
    matches = [i for i, p in enumerate(inputs) if str(p) == str(embedding_from)]
    if not matches:
        raise KdpcError(f"--embedding-from {redact_text(str(embedding_from))} is not one of the stores being merged")
    if not headers[matches[0]].feature_dim:
        raise KdpcError(f"--embedding-from {redact_text(str(embedding_from))}: that store keeps no embedding "
                        "(recorded with --feature-dim 0)")
    return matches[0]


def _view_keys(backend: Backend, header: StoreHeader) -> np.ndarray:
    """One opaque row per record: sample id + every parameter's stored bytes (the view's identity)."""
    cols = [_view_major_ids(header, 0, header.num_records)["sample"].astype("<i4").view(np.uint8).reshape(header.num_records, -1)]
    for p in header.params:
        arr = np.ascontiguousarray(backend.read_present(p.name, 0, header.num_records))
        cols.append(arr.view(np.uint8).reshape(header.num_records, -1))
    rows = np.ascontiguousarray(np.concatenate(cols, axis=1))
    return rows.view(np.dtype((np.void, rows.shape[1]))).reshape(-1)


def _merge_views(backends: list[Backend], headers: list[StoreHeader], names: list[str], labels: np.ndarray,
                 output: Output) -> MergeReport:
    a = headers[0]
    for name, h in zip(names[1:], headers[1:]):
        diff = _differences(a, h, ("codec",))
        if diff:
            raise KdpcError(f"cannot merge the views of {names[0]} and {name}: {'; '.join(diff)} (re-encode one with "
                            "the other's codec first, or record it again)")
        diff = _differences(a, h, SEG_FIELDS)  # more views of one teacher: features stored alike
        if diff:
            raise KdpcError(f"cannot merge the views of {names[0]} and {name}: they keep the teacher's features "
                            f"differently ({'; '.join(diff)}); record both with the same --feature-dim")
    # duplicates: the same (sample, seed, params) in two inputs
    keys = [_view_keys(b, h) for b, h in zip(backends, headers)]
    owner = np.concatenate([np.full(len(k), i) for i, k in enumerate(keys)])
    allk = np.concatenate(keys)
    _, first, counts = np.unique(allk, return_index=True, return_counts=True)
    if (counts > 1).any():
        order = np.argsort(allk, kind="stable")
        sk = allk[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        i0, i1 = order[dup[0]], order[dup[0] + 1]
        offs = np.cumsum([0] + [len(k) for k in keys])
        (ia, ra), (ib, rb) = [(int(owner[i]), int(i - offs[owner[i]])) for i in (i0, i1)]
        (sample, view_a), (_, view_b) = a.sample_view(ra), a.sample_view(rb)
        raise KdpcError(
            f"cannot merge: {len(dup)} views are in more than one input (e.g. sample {sample}: view {view_a} of "
            f"{names[ia]} = view {view_b} of {names[ib]}); stores recorded with the same --seed repeat the same "
            "views - record the extra views with another --seed"
        )
    offsets = np.cumsum([0] + [h.num_views for h in headers]).tolist()
    total_views = int(offsets[-1])
    extra = dict(a.extra)
    extra["merged_from"] = [_provenance(b, h, int(o)) for b, h, o in zip(backends, headers, offsets)]
    header = a.derive(num_views=total_views, extra=extra)
    specs = record_array_specs(header)
    rec_offsets = [int(o) * a.num_samples for o in offsets]

    def block(b: int, start: int, stop: int) -> dict[str, np.ndarray]:
        arrays = _view_major_ids(header, start, stop)
        if header.task == "semseg":  # the views' point rows, packed again from the first row of the output block
            arrays.update(_merged_point_rows(backends, headers, rec_offsets, header, b))
        for spec in specs:
            if spec.name in arrays:
                continue
            parts = []
            for i, (bk, lo) in enumerate(zip(backends, rec_offsets[:-1])):
                hi = rec_offsets[i + 1]
                s0, s1 = max(start, lo), min(stop, hi)
                if s0 < s1:
                    parts.append(bk.read_present(spec.name, s0 - lo, s1 - lo))
            arrays[spec.name] = np.concatenate(parts, axis=0)
        return arrays

    path = _write_store(output, header, labels, block, "merge")
    return MergeReport(out=path, mode="views", inputs=names, num_views=total_views, records=header.num_records)


def _merged_point_rows(backends: list[Backend], headers: list[StoreHeader], rec_offsets: list[int],
                       header: StoreHeader, block: int) -> dict[str, np.ndarray]:
    """semseg: output block ``block``'s per-point arrays and ``point_offset``: each input view's rows copied as
    stored, in record order, from the block's first row (the rest zero, as the recorder leaves it)."""
    start, stop = header.block_range(block)
    point_specs = [s for s in record_array_specs(header) if s.per == "point"]
    rows: dict[str, list[np.ndarray]] = {s.name: [] for s in point_specs}
    counts = []
    for i, (bk, h) in enumerate(zip(backends, headers)):
        lo, hi = rec_offsets[i], rec_offsets[i + 1]
        s0, s1 = max(start, lo) - lo, min(stop, hi) - lo
        if s0 >= s1:
            continue
        count = bk.read_present(POINT_COUNT, s0, s1).astype(np.int64)
        offset = bk.read_present(POINT_OFFSET, s0, s1).astype(np.int64)
        counts.append(count)
        for in_block in np.unique((np.arange(s0, s1)) // h.chunk_records):  # views of one input block are contiguous
            mine = (np.arange(s0, s1) // h.chunk_records) == in_block
            first, last = np.flatnonzero(mine)[[0, -1]]
            for s in point_specs:
                rows[s.name].append(bk.read_present(s.name, int(offset[first]), int(offset[last] + count[last])))
    first_row, end_row = header.point_block_range(block)
    out: dict[str, np.ndarray] = {POINT_OFFSET: header.point_offsets(block, np.concatenate(counts))}
    for s in point_specs:
        values = np.concatenate(rows[s.name])
        padded = np.zeros((end_row - first_row, *s.tail), dtype=s.dtype)
        padded[: values.shape[0]] = values
        out[s.name] = padded
    return out


def _merge_ensemble(backends: list[Backend], headers: list[StoreHeader], names: list[str], labels: np.ndarray,
                    output: Output, weights: Any, codec: str | None, kept: int | None) -> MergeReport:
    a = headers[0]
    for name, h in zip(names[1:], headers[1:]):
        diff = _differences(a, h, ("run_seed", "num_views"))
        if diff:
            raise KdpcError(f"cannot merge {names[0]} and {name}: they have different teachers, and an ensemble needs "
                            f"the same views, but {'; '.join(diff)}")
    for bk, name, h in zip(backends[1:], names[1:], headers[1:]):
        for p in a.params:
            if not np.array_equal(backends[0].read_present(p.name, 0, a.num_records).view(np.uint8),
                                  bk.read_present(p.name, 0, h.num_records).view(np.uint8)):
                raise KdpcError(f"cannot merge {names[0]} and {name}: they have different teachers, and an ensemble "
                                f"needs identical views, but their stored {p.name!r} parameters differ")
    w = parse_weights(weights, len(headers), "stores")
    codec_spec = codec or a.codec
    extra = dict(a.extra)
    extra["merged_from"] = [_provenance(b, h, 0) for b, h in zip(backends, headers)]
    # different teachers embed in different spaces, which do not average: the ensemble keeps the answers, and
    # at most one member's embedding as that member stored it
    dropped = any(h.feature_dim for h in headers)
    source = headers[kept] if kept is not None else None
    header = a.derive(codec=codec_spec, teacher=_ensemble_teacher(headers, w, kept), extra=extra,
                      feature_dim=source.feature_dim if source else 0,
                      feature_projection=source.feature_projection if source else {})
    enc = header.codec_obj()
    in_codecs = [h.codec_obj() for h in headers]
    in_out = [[s.name for s in record_array_specs(h) if s.name.startswith(OUTPUT_GROUP + "/")] for h in headers]
    specs = record_array_specs(header)
    prefix = OUTPUT_GROUP + "/"

    def block(b: int, start: int, stop: int) -> dict[str, np.ndarray]:
        arrays = _view_major_ids(header, start, stop)
        for spec in specs:
            if spec.name not in arrays and not spec.name.startswith(prefix):
                source_backend = backends[kept] if spec.name == FEATURES else backends[0]
                arrays[spec.name] = source_backend.read_present(spec.name, start, stop)
        stacked = []
        for bk, c, names_ in zip(backends, in_codecs, in_out):
            raw = {n[len(prefix):]: bk.read_present(n, start, stop) for n in names_}
            with np.errstate(all="ignore"):
                stacked.append(c.decode(raw).astype(np.float64))
        mix = mix_log_probs(np.stack(stacked, 0), w)
        for name, values in enc.encode(mix.astype(np.float32)).items():
            arrays[prefix + name] = values
        return arrays

    path = _write_store(output, header, labels, block, "ensemble")
    return MergeReport(out=path, mode="ensemble", inputs=names, num_views=a.num_views, records=header.num_records,
                       weights=w, embeddings_dropped=dropped, embedding_from=None if kept is None else names[kept])


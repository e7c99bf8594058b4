"""The record store's header and array layout: the one place that names arrays, dtypes, shapes and chunks.

Records are VIEW-MAJOR: record ``r`` holds view ``r // num_samples`` of sample ``r % num_samples``. Blocks are the
chunk-aligned record ranges ``[b * chunk_records, min((b + 1) * chunk_records, num_records))``; a block is the unit
of writing, resuming and completeness (``blocks_done[b] == 1``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any, Mapping

import numpy as np

from .. import __version__
from ..augment import VIEW_STREAMS, AugmentConfig, ParamSpec, param_specs
from ..errors import KdpcError, exception_line
from .codecs import Codec, PointCodec, default_codec, get_codec, get_point_codec

# 2: views drawn from the "record" stream (kdpc.augment.VIEW_STREAMS), named in view_stream
# 3: the header carries a checksum over its canonical content and a generation id
SCHEMA_VERSION = 3
# partseg: per-point outputs (a point axis after the record axis) + anchor features
# semseg: scene views of varying size, per-point outputs stored RAGGED (point rows of a block concatenated, located
#         by per-record point_offset / point_count) + anchor features
TASKS = ("cls", "partseg", "semseg")
POINT_TASKS = ("partseg", "semseg")  # stores with per-point outputs and anchor features
DEFAULT_CHUNK_RECORDS = 4096
DEFAULT_SEG_CHUNK_RECORDS = 64  # a partseg record is ~10-20 kB, so blocks of 64 views are ~1 MB
DEFAULT_SCENE_CHUNK_RECORDS = 8  # a scene view is up to num_points (6,000-80,000) points: blocks of 8 views
SEG_FIELDS = ("num_anchors", "feature_dim", "feature_projection")  # header keys of stores that keep teacher features
POINT_COUNT = "point_count"  # semseg: points of each recorded view
POINT_OFFSET = "point_offset"  # semseg: first row of each view in the per-point arrays
FEATURES = "features"
MAX_VIEWS = 65535  # view ids are uint16
MAX_RECORDS = 2**31 - 1  # record and sample ids are int32
OUTPUT_GROUP = "output"
BLOCKS_DONE = "blocks_done"
LABELS = "labels"
RESERVED_NAMES = frozenset({"sample", "view", LABELS, BLOCKS_DONE, OUTPUT_GROUP, "logprobs", FEATURES, "anchors",
                            POINT_COUNT, POINT_OFFSET})
HEADER_ATTR = "kdpc"
CHECKSUM = "checksum"  # header key: {"sha256": digest of the rest, "fields": {key: 12-hex digest of its value}}
COMPLETE_ATTR = "complete"
COPYING_ATTR = "copying"  # root attribute of a store that `kdpc records copy` has not finished


# The view-major rule, stated once: record r holds view r // num_samples of sample r % num_samples.
def record_index(sample: Any, view: Any, num_samples: int) -> np.ndarray:
    """Record ids of ``(sample, view)`` pairs in a store of ``num_samples`` samples (broadcast, int64)."""
    return np.asarray(view, dtype=np.int64) * num_samples + np.asarray(sample, dtype=np.int64)


def sample_view(records: Any, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sample, view)`` int64 of record ids in a store of ``num_samples`` samples (the view-major rule)."""
    r = np.asarray(records, dtype=np.int64)
    return r % num_samples, r // num_samples


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """Plain JSON types only (numpy scalars/arrays, tuples, paths and dataclasses converted); fails loudly otherwise."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # JSON has no inf/nan
        return value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    raise TypeError(f"record store header values must be JSON-able, got {type(value).__name__}: {value!r}")


@dataclass(frozen=True)
class ArraySpec:
    """One array of a store. ``per`` says what its first axis counts: record, sample, block or point (the ragged
    per-point rows of a semseg store; block ``b`` owns rows ``[start * N, stop * N)`` of its records
    ``[start, stop)``, its views' points packed from the front)."""

    name: str  # path inside the store, e.g. "scale" or "output/q"
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    dims: tuple[str, ...]
    per: str  # "record" | "sample" | "block" | "point"

    @property
    def tail(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def nchunks(self) -> int:
        return max(1, math.ceil(self.shape[0] / self.chunks[0])) if self.shape[0] else 0


@dataclass(kw_only=True)
class StoreHeader:
    """Everything a store needs to be read and replayed without the run that wrote it (JSON under attr ``kdpc``)."""

    num_samples: int
    num_views: int
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    codec: str = ""  # "" -> the task's default (codecs.default_codec)
    chunk_records: int = 0  # 0 -> the task's default: 4096 (cls), 64 (partseg) or 8 (semseg)
    params: list[ParamSpec] = field(default_factory=list)  # empty -> param_specs(AugmentConfig.from_dict(augment))
    augment: dict = field(default_factory=dict)
    run_seed: int = 0
    view_stream: str = "record"  # kdpc.augment.VIEW_STREAMS key the view parameters are drawn from
    num_points: int = 0  # partseg: the points of every view; semseg: the most points a view may have
    teacher: dict = field(default_factory=dict)  # arch, config, num_params, sha256, metrics
    dataset: dict = field(default_factory=dict)  # name, split, num_samples, num_points, fingerprint, config
    task: str = "cls"
    schema_version: int = SCHEMA_VERSION
    kdpc_version: str = __version__
    created: str = field(default_factory=utc_now)
    generation: str = field(default_factory=lambda: uuid.uuid4().hex)  # new for every store written; readers
    # notice a store replaced under them by it
    extra: dict = field(default_factory=dict)
    # partseg / semseg: teacher features at `num_anchors` points per view (kdpc.augment.anchor_indices);
    # cls: the teacher's global embedding of each view (num_anchors 0). Both `feature_dim` wide after the optional
    # fixed random projection `feature_projection` = {} or {"kind": "gaussian", "seed": int, "in_dim": Dt,
    # "out_dim": feature_dim}; a store without features has feature_dim 0 (and the keys are absent from its header)
    num_anchors: int = 0
    feature_dim: int = 0
    feature_projection: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.codec:
            self.codec = default_codec(self.task)
        if not self.chunk_records and not isinstance(self.chunk_records, bool):
            self.chunk_records = {"partseg": DEFAULT_SEG_CHUNK_RECORDS,
                                  "semseg": DEFAULT_SCENE_CHUNK_RECORDS}.get(self.task, DEFAULT_CHUNK_RECORDS)
        self.feature_projection = dict(self.feature_projection or {})
        if hasattr(self.augment, "to_dict"):  # an AugmentConfig
            self.augment = self.augment.to_dict()
        self.augment = dict(self.augment or {})
        if not self.params:
            self.params = default_params(self.task, self.augment)
        self.params = [p if isinstance(p, ParamSpec) else ParamSpec(p["name"], tuple(p["shape"]), p["dtype"]) for p in self.params]
        self.params = [ParamSpec(p.name, tuple(int(x) for x in p.shape), str(np.dtype(p.dtype))) for p in self.params]
        self.class_names = [str(c) for c in self.class_names]
        self.validate()

    # ---------------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise KdpcError(
                f"record store schema version {self.schema_version} is not supported by kdpc {__version__} "
                f"(it reads version {SCHEMA_VERSION}); use the kdpc version that wrote it or upgrade kdpc"
            )
        if self.view_stream not in VIEW_STREAMS:
            raise KdpcError(f"record header view_stream {self.view_stream!r} is unknown; known: {', '.join(VIEW_STREAMS)}")
        if self.task not in TASKS:
            raise KdpcError(f"record task {self.task!r} is not supported yet; supported: {', '.join(TASKS)}")
        for name in ("num_samples", "num_views", "num_classes", "chunk_records"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise KdpcError(f"record header {name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        if self.num_views > MAX_VIEWS:
            raise KdpcError(f"at most {MAX_VIEWS} views per sample can be recorded, got {self.num_views}")
        if self.num_records > MAX_RECORDS:
            raise KdpcError(f"{self.num_records} records exceed the {MAX_RECORDS} a store can index; record fewer views")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise KdpcError(f"{len(self.class_names)} class names given for {self.num_classes} classes")
        self.codec_obj()  # raises KdpcError for unknown codecs / bad K
        if self.task in POINT_TASKS:
            self._validate_seg()
        else:
            self._validate_global_features()
        names = [p.name for p in self.params]
        if len(set(names)) != len(names) or RESERVED_NAMES & set(names):
            raise KdpcError(f"augmentation parameter names {names} repeat or clash with {sorted(RESERVED_NAMES)}")

    def _non_negative_ints(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise KdpcError(f"record header {name} must be an integer >= 0, got {value!r}")
            setattr(self, name, int(value))

    def _validate_seg(self) -> None:
        self._non_negative_ints("num_points", "num_anchors", "feature_dim")
        if self.num_points < 1:
            raise KdpcError(f"a {self.task} store needs num_points >= 1 (the {'most ' if self.task == 'semseg' else ''}"
                            "points of every view)")
        if self.num_anchors > self.num_points:
            raise KdpcError(f"num_anchors {self.num_anchors} exceeds the {self.num_points} points of a view")
        if self.num_anchors and self.feature_dim < 1:
            raise KdpcError(f"a {self.task} store with anchors needs feature_dim >= 1")
        if not self.num_anchors and (self.feature_dim or self.feature_projection):
            raise KdpcError("feature_dim / feature_projection need num_anchors >= 1")
        self._validate_projection()

    def _validate_global_features(self) -> None:
        """cls: an optional global embedding per view (``feature_dim`` >= 1), never anchors."""
        if self.num_anchors:
            raise KdpcError("num_anchors is for partseg / semseg stores only (a classification store keeps one "
                            "embedding per view: feature_dim)")
        self._non_negative_ints("feature_dim")
        if self.feature_projection and not self.feature_dim:
            raise KdpcError("feature_projection needs feature_dim >= 1")
        self._validate_projection()

    def _validate_projection(self) -> None:
        proj = self.feature_projection
        if proj:
            if proj.get("kind") != "gaussian" or set(proj) != {"kind", "seed", "in_dim", "out_dim"}:
                raise KdpcError(f"feature_projection must be {{kind: gaussian, seed, in_dim, out_dim}}, got {proj!r}")
            if not all(isinstance(proj[k], int) and not isinstance(proj[k], bool) for k in ("seed", "in_dim", "out_dim")):
                raise KdpcError(f"feature_projection seed, in_dim and out_dim must be integers, got {proj!r}")
            if proj["out_dim"] != self.feature_dim or proj["in_dim"] < 1 or proj["seed"] < 0:
                raise KdpcError(f"feature_projection {proj!r} does not fit feature_dim {self.feature_dim}")

    def codec_obj(self) -> Codec | PointCodec:
        if self.task in POINT_TASKS:
            return get_point_codec(self.codec, self.num_classes, self.num_points)
        return get_codec(self.codec, self.num_classes)

    # -------------------------------------------------------------------------------------------- geometry
    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Per-record shape of the stored teacher features: ``(num_anchors, feature_dim)`` for point tasks,
        ``(feature_dim,)`` for classification; ``()`` when the store keeps none."""
        if self.task in POINT_TASKS:
            return (self.num_anchors, self.feature_dim) if self.num_anchors else ()
        return (self.feature_dim,) if self.feature_dim else ()

    @property
    def num_records(self) -> int:
        return self.num_samples * self.num_views

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.num_records / self.chunk_records)

    def block_range(self, block: int) -> tuple[int, int]:
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} out of range [0, {self.num_blocks})")
        start = block * self.chunk_records
        return start, min(start + self.chunk_records, self.num_records)

    def point_block_range(self, block: int) -> tuple[int, int]:
        """semseg: the rows ``[start * N, stop * N)`` of the per-point arrays that block ``block`` (records
        ``[start, stop)``) owns; its views' points are packed from the first of them, the rest is zero."""
        start, stop = self.block_range(block)
        return start * self.num_points, stop * self.num_points

    def point_offsets(self, block: int, counts: Any) -> np.ndarray:
        """semseg: ``point_offset`` of block ``block``'s views with ``counts`` points each: packed in record order
        from the block's first per-point row."""
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        return self.point_block_range(block)[0] + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def block_rows(self, spec: "ArraySpec", block: int) -> tuple[int, int]:
        """The rows of array ``spec`` that block ``block`` writes (its records, or its per-point rows)."""
        return self.point_block_range(block) if spec.per == "point" else self.block_range(block)

    def record_index(self, sample: Any, view: Any) -> np.ndarray:
        """Record ids of ``(sample, view)`` pairs (broadcast, vectorised)."""
        s, v = np.broadcast_arrays(np.asarray(sample, dtype=np.int64), np.asarray(view, dtype=np.int64))
        if s.size and (s.min() < 0 or s.max() >= self.num_samples or v.min() < 0 or v.max() >= self.num_views):
            raise IndexError(f"(sample, view) out of range: {self.num_samples} samples x {self.num_views} views")
        return record_index(s, v, self.num_samples)

    def sample_view(self, records: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(sample, view)`` of record ids, by the view-major rule."""
        return sample_view(records, self.num_samples)

    def view_range(self, view: int) -> tuple[int, int]:
        """The records ``[start, stop)`` of one view: every sample, in sample order."""
        return view * self.num_samples, (view + 1) * self.num_samples

    def view_major_rule(self) -> str:
        return f"record r = view r // {self.num_samples}, sample r % {self.num_samples}"

    def describe_record(self, record: int) -> str:
        sample, view = self.sample_view(record)
        return f"record {int(record)}, sample {int(sample)}, view {int(view)}"

    # ------------------------------------------------------------------------------------------------ json
    def to_dict(self) -> dict[str, Any]:
        """The header as stored: every field as plain JSON, plus its checksum."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "params":
                value = [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype} for p in value]
            out[f.name] = jsonable(value)
        if self.task not in POINT_TASKS:  # cls headers without features stay exactly as before partseg existed
            for name in SEG_FIELDS if not self.feature_dim else ("num_anchors",):
                out.pop(name, None)
        out = json.loads(json.dumps(out))  # normalised: what a store round-trip gives back
        out[CHECKSUM] = header_checksum(out)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StoreHeader":
        """Parse and check a stored header: schema version, checksum (naming the fields that changed), then every
        field's type and value."""
        if not isinstance(data, Mapping):
            raise KdpcError("record store header is not a JSON object; the store is damaged or not a kdpc store")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise KdpcError(
                f"record store schema version {version!r} is not supported by kdpc {__version__} "
                f"(it reads version {SCHEMA_VERSION}); use the kdpc version that wrote it or upgrade kdpc"
            )
        check_header_checksum(data)
        return cls._build({k: v for k, v in data.items() if k != CHECKSUM})

    @classmethod
    def _build(cls, data: Mapping[str, Any]) -> "StoreHeader":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
        if missing:
            raise KdpcError(f"record store header lacks {', '.join(missing)}; the store is damaged or not a kdpc store")
        kwargs = {k: v for k, v in data.items() if k in known}  # unknown keys: written by a newer minor version
        try:
            kwargs["params"] = [ParamSpec(str(p["name"]), tuple(int(x) for x in p["shape"]), str(np.dtype(p["dtype"])))
                                for p in data.get("params", [])]
            return cls(**kwargs)
        except KdpcError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KdpcError(f"record store header has a malformed field ({exception_line(exc)}); the store is "
                            "damaged") from None

    def derive(self, **changes: Any) -> "StoreHeader":
        """A header for a NEW store made from this one (merge): the given fields changed, a new generation, now as
        the creation time, this kdpc's version."""
        data = {k: v for k, v in self.to_dict().items() if k not in (CHECKSUM, "generation")}
        data.update(created=utc_now(), kdpc_version=__version__, **changes)
        return StoreHeader._build(data)

    def diff(self, other: "StoreHeader",
             ignore: tuple[str, ...] = ("created", "kdpc_version", "generation", CHECKSUM)) -> list[str]:
        """Names of the top-level fields whose values differ (used to refuse resuming with another config)."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in ignore and a.get(k) != b.get(k)]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def header_checksum(content: Mapping[str, Any]) -> dict[str, Any]:
    """sha256 over the canonical JSON of every header field but the checksum, and a short digest per field (so a
    failing check can name the field that changed)."""
    body = {k: v for k, v in content.items() if k != CHECKSUM}
    return {"sha256": hashlib.sha256(_canonical(body)).hexdigest(),
            "fields": {k: hashlib.sha256(_canonical(v)).hexdigest()[:12] for k, v in sorted(body.items())}}


def check_header_checksum(data: Mapping[str, Any]) -> None:
    stored = data.get(CHECKSUM)
    if not isinstance(stored, Mapping) or not isinstance(stored.get("fields"), Mapping):
        raise KdpcError("record store header has no checksum; the store is damaged (or was edited by hand)")
    try:
        expected = header_checksum(data)
    except (TypeError, ValueError):
        raise KdpcError("record store header holds values that are not plain JSON; the store is damaged") from None
    if expected["sha256"] == stored.get("sha256"):
        return
    fields = stored["fields"]
    changed = sorted(k for k in set(expected["fields"]) | set(fields) if expected["fields"].get(k) != fields.get(k))
    raise KdpcError("record store header fails its checksum"
                    + (f" (changed: {', '.join(changed)})" if changed else "")
                    + "; the store is damaged or was edited - restore it from a copy or record it again")


# ------------------------------------------------------------------------------------------------- arrays
def labels_dtype(num_classes: int) -> str:
    return "int16" if num_classes <= 32767 else "int32"


def record_array_specs(header: StoreHeader) -> list[ArraySpec]:
    """The arrays a block writes: one row per record, chunked ``chunk_records`` along the record axis (one chunk per
    block; a store smaller than one block has one chunk of all its records); semseg stores add their per-point
    arrays (``per == "point"``), chunked ``chunk_records * num_points`` rows: again one chunk per block."""
    r, c = header.num_records, min(header.chunk_records, header.num_records)  # HDF5 chunks must fit the shape
    specs = [
        ArraySpec("sample", (r,), "int32", (c,), ("record",), "record"),
        ArraySpec("view", (r,), "uint16", (c,), ("record",), "record"),
    ]
    for p in header.params:
        dims = ("record",) + tuple(f"{p.name}_{i}" for i in range(len(p.shape)))
        specs.append(ArraySpec(p.name, (r, *p.shape), p.dtype, (c, *p.shape), dims, "record"))
    codec = header.codec_obj()
    if header.task == "semseg":
        specs += [ArraySpec(POINT_COUNT, (r,), "uint32", (c,), ("record",), "record"),
                  ArraySpec(POINT_OFFSET, (r,), "int64", (c,), ("record",), "record")]
        rows, rows_per_block = r * header.num_points, c * header.num_points
        for name, (tail, dtype) in codec.arrays(header.num_classes).items():
            if name in codec.point_arrays():  # tail = (N, *per-point tail)
                dims = ("point",) + _tail_dims(header, name, tail)[1:]
                specs.append(ArraySpec(f"{OUTPUT_GROUP}/{name}", (rows, *tail[1:]), str(np.dtype(dtype)),
                                       (rows_per_block, *tail[1:]), dims, "point"))
            else:
                specs.append(ArraySpec(f"{OUTPUT_GROUP}/{name}", (r, *tail), str(np.dtype(dtype)), (c, *tail),
                                       ("record",) + _tail_dims(header, name, tail), "record"))
    else:
        for name, (tail, dtype) in codec.arrays(header.num_classes).items():
            dims = ("record",) + _tail_dims(header, name, tail)
            specs.append(ArraySpec(f"{OUTPUT_GROUP}/{name}", (r, *tail), str(np.dtype(dtype)), (c, *tail), dims,
                                   "record"))
    tail = header.feature_shape
    if tail:
        dims = ("record", "anchor", "feature") if len(tail) == 2 else ("record", "feature")
        specs.append(ArraySpec(FEATURES, (r, *tail), "float16", (c, *tail), dims, "record"))
    return specs


def _tail_dims(header: StoreHeader, name: str, tail: tuple[int, ...]) -> tuple[str, ...]:
    if header.task not in POINT_TASKS:
        return ("class",) if tail == (header.num_classes,) else tuple(f"{name}_{i}" for i in range(len(tail)))
    if tail == (header.num_classes,):
        return ("class",)
    if tail and tail[0] == header.num_points:  # per point, then per class (dense codecs) or per kept entry
        rest = tail[1:]
        return ("point",) + (("class",) if rest == (header.num_classes,) else tuple(f"{name}_{i}" for i in range(len(rest))))
    return tuple(f"{name}_{i}" for i in range(len(tail)))


def array_specs(header: StoreHeader) -> list[ArraySpec]:
    """Every array of a store, in a fixed order."""
    s = header.num_samples
    return record_array_specs(header) + [
        ArraySpec(LABELS, (s,), labels_dtype(header.num_classes), (min(s, 1 << 20),), ("sample",), "sample"),
        ArraySpec(BLOCKS_DONE, (header.num_blocks,), "uint8", (1,), ("block",), "block"),
    ]


def param_names(header: StoreHeader) -> list[str]:
    return [p.name for p in header.params]


def column_names(header: StoreHeader) -> list[str]:
    """The columns ``RecordWriter.write_block`` takes and ``RecordReader.get`` returns (stores with teacher features
    add ``features``; ``RecordReader.get`` also returns ``anchors`` for point tasks; semseg stores take
    ``point_count`` and the views' ``logprobs`` rows concatenated)."""
    cols = ["sample", "view", *param_names(header)]
    if header.task == "semseg":
        cols.append(POINT_COUNT)
    cols.append("logprobs")
    if header.feature_shape:
        cols.append(FEATURES)
    return cols


def default_params(task: str, augment: Mapping[str, Any]) -> list[ParamSpec]:
    """The view parameters a store of ``task`` recorded with ``augment`` keeps."""
    if task == "semseg":
        from ..scenes.transforms import SceneAugmentConfig, scene_param_specs

        return scene_param_specs(SceneAugmentConfig.from_dict(augment))
    return param_specs(AugmentConfig.from_dict(augment))


# ---------------------------------------------------------------------------------------------- the doc's table
ARRAY_DOCS = {
    "sample": "`r % S`",
    "view": "`r // S`",
    "seed": "point-subset seed of the view",
    "scale": "anisotropic scale",
    "translate": "translation",
    "rotation": "axis-angle vector, radians (only if augment `rotation != \"none\"`)",
    "partner": "mix views: the other sample some points come from (the record's own sample otherwise; only if "
               "augment `mix > 0`)",
    "mix": "mix views: the fraction of points from `partner`, 0 for a plain view (only if augment `mix > 0`)",
    OUTPUT_GROUP: "teacher output, arrays per codec (section 4)",
    FEATURES: "teacher features: `[R, D]` the view's global embedding (`cls` with `feature_dim > 0`), `[R, M, D]` at "
              "the view's anchors (`partseg` with `num_anchors > 0`; section 8)",
    LABELS: "ground-truth label per *sample* (`-1` = unknown; int32 if `C > 32767`); the object category for "
            "`partseg`",
    BLOCKS_DONE: "1 when block `b` is fully written, else 0",
}


def array_table() -> str:
    """The layout table of docs/record-format.md section 2, generated from ``array_specs`` (a test keeps the doc
    equal to it): every array of a classification store with rotation, plus a partseg store's features."""
    from ..augment import AugmentConfig

    s, v, c, chunk, m, d = 11, 2, 13, 4, 9, 7  # distinct sizes, so each maps back to its symbol
    cls = StoreHeader(num_samples=s, num_views=v, num_classes=c, chunk_records=chunk,
                      augment=AugmentConfig(rotation="up", mix=0.5).to_dict())
    seg = StoreHeader(task="partseg", num_samples=s, num_views=v, num_classes=c, chunk_records=chunk, num_points=17,
                      num_anchors=m, feature_dim=d)
    symbols = {cls.num_records: "R", s: "S", chunk: "chunk_records", c: "C", m: "M", d: "D", cls.num_blocks: "n_blocks"}
    rows = ["| array | dtype | shape | chunks | content |", "|---|---|---|---|---|"]
    specs = [spec for spec in array_specs(cls) if not spec.name.startswith(OUTPUT_GROUP + "/")]
    specs.insert(len(cls.params) + 2, ArraySpec(f"{OUTPUT_GROUP}/...", (cls.num_records,), "per codec",
                                                (chunk,), ("record",), "record"))
    specs.insert(len(cls.params) + 3, next(x for x in array_specs(seg) if x.name == FEATURES))

    def dims(shape: tuple[int, ...], name: str) -> str:
        return "`[" + ", ".join(symbols.get(n, str(n)) for n in shape) + (", ...]`" if name.endswith("...") else "]`")

    for spec in specs:
        chunks = "`[min(S, 2^20)]`" if spec.name == LABELS else dims(spec.chunks, spec.name)
        rows.append(f"| `{spec.name}` | {spec.dtype} | {dims(spec.shape, spec.name)} | {chunks} "
                    f"| {ARRAY_DOCS[spec.name.split('/')[0]]} |")
    return "\n".join(rows)

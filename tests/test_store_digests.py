"""The store format does not drift: tiny stores written with fixed inputs (zarr and HDF5, classification and
segmentation) hold exactly the arrays and attributes recorded here. The digests were taken from the code before
the record-store refactor (issue 13), which left them unchanged, and retaken when schema version 3 added the
header checksum and generation id; a change to them is a change of the format and needs a schema version."""

import hashlib
import json

import h5py
import numpy as np
import pytest
import zarr

from kdpc.store import RecordReader, RecordWriter, StoreHeader
from kdpc.testing.stores import block_columns

EXPECTED = {
    ("cls", "zarr"): "17da91bddbf43db0e6d952f5dfaf65ff6c91c3e9214a1c7adecf67a34c555bbf",
    ("cls", "h5"): "d88181234df44763d64cbe06c23a102d300eb8087156e18282c2bb7a7ae1d317",
    ("partseg", "zarr"): "336c37ae30462e1526fccccbd71ea2e99186165385734084737ad66520ec8fa8",
    ("partseg", "h5"): "3f8b648e433b1a817b8c3304bb622dcc4c8a851c3bf73ac96a7e0b9c792cd78b",
}


def _logits(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Log-probabilities from logits on a 1/8 grid: exactly reproducible on any machine."""
    z = np.random.default_rng(seed).integers(-64, 64, size=shape).astype(np.float64) / 8.0
    z -= z.max(axis=-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(np.float32)


def _write(path, task: str) -> None:
    if task == "cls":
        header = StoreHeader(num_samples=23, num_views=3, num_classes=7, class_names=[f"c{i}" for i in range(7)],
                             chunk_records=16, run_seed=5, augment={"rotation": "up"}, created="2026-01-01T00:00:00Z",
                             generation="0" * 32,
                             teacher={"arch": "toy", "sha256": "0" * 64}, dataset={"name": "toy", "num_samples": 23})
        logprobs, features = _logits((69, 7), 1), None
        labels = np.arange(23) % 7
    else:
        header = StoreHeader(task="partseg", num_samples=5, num_views=2, num_classes=6, num_points=12, num_anchors=4,
                             feature_dim=3, class_names=[f"p{i}" for i in range(6)], chunk_records=4, run_seed=9,
                             created="2026-01-01T00:00:00Z", generation="1" * 32,
                             teacher={"arch": "toy-seg", "sha256": "1" * 64},
                             dataset={"name": "toy-parts", "num_samples": 5})
        logprobs = _logits((10, 12, 6), 2)
        features = (np.random.default_rng(3).integers(-512, 512, size=(10, 4, 3)) / 64.0).astype(np.float32)
        labels = np.arange(5) % 2
    with RecordWriter.open(path, header, mode="create", labels=labels) as writer:
        for b in writer.pending_blocks():
            writer.write_block(b, block_columns(writer.header, b, logprobs, features))
        writer.finalize()


def _canonical_attrs(attrs: dict) -> dict:
    attrs = json.loads(json.dumps(attrs, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    if "kdpc" in attrs:
        header = json.loads(attrs["kdpc"]) if isinstance(attrs["kdpc"], str) else attrs["kdpc"]
        header.pop("kdpc_version", None)  # the version string, not the format
        header.pop("checksum", None)  # covers the version string too; that it holds is tested on its own
        attrs["kdpc"] = header
    return attrs


def store_digest(path) -> str:
    """sha256 over every array (name, dtype, shape, values as stored, chunking and filters) and every attribute,
    read with plain zarr / h5py (no kdpc code)."""
    items: list[tuple[str, str]] = []
    if str(path).endswith(".h5"):
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    arr = obj[()]
                    layout = [obj.chunks, obj.compression, obj.compression_opts, obj.shuffle, obj.fletcher32]
                    items.append((name, f"{arr.dtype.str}{list(arr.shape)}{hashlib.sha256(arr.tobytes()).hexdigest()}"
                                        f"{json.dumps(layout)}"))
                items.append((name + "@", json.dumps(_canonical_attrs(dict(obj.attrs)), sort_keys=True)))
            f.visititems(visit)
            items.append(("@", json.dumps(_canonical_attrs(dict(f.attrs)), sort_keys=True)))
    else:
        def walk(group, prefix=""):
            items.append((prefix + "@", json.dumps(_canonical_attrs(dict(group.attrs)), sort_keys=True)))
            for name, arr in group.arrays():
                data = np.asarray(arr[...])
                meta = json.dumps(arr.metadata.to_dict(), sort_keys=True, default=str)  # chunks, codecs, dims
                items.append((prefix + name,
                              f"{data.dtype.str}{list(data.shape)}{hashlib.sha256(data.tobytes()).hexdigest()}{meta}"))
            for name, sub in group.groups():
                walk(sub, prefix + name + "/")
        walk(zarr.open_group(str(path), mode="r"))
    return hashlib.sha256(json.dumps(sorted(items)).encode()).hexdigest()


@pytest.mark.parametrize("task", ["cls", "partseg"])
@pytest.mark.parametrize("backend", ["zarr", "h5"])
def test_tiny_store_arrays_and_attributes_match_the_recorded_digests(tmp_path, task, backend):
    path = tmp_path / f"s.{'zarr' if backend == 'zarr' else 'h5'}"
    _write(path, task)
    assert store_digest(path) == EXPECTED[(task, backend)]
    assert RecordReader(str(path)).header.generation == ("0" if task == "cls" else "1") * 32  # checksum holds

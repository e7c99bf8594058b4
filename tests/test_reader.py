"""RecordReader and store_info: incomplete stores, random access, accuracy, schema version, info numbers."""

import os

import numpy as np
import pytest
import zarr

from kdpc.augment import AugmentConfig, draw_params
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, StoreHeader, get_codec, store_info
from kdpc.testing.stores import write_synthetic_store

S, V, C, CHUNK = 40, 3, 6, 25  # 120 records, 5 blocks


def synth(path, **kw):
    kw.setdefault("chunk_records", CHUNK)
    kw.setdefault("augment", AugmentConfig(rotation="up").to_dict())
    kw.setdefault("run_seed", 3)
    kw.setdefault("teacher", {"arch": "toy", "num_params": 123, "metrics": {"acc": 0.9}})
    kw.setdefault("dataset", {"name": "toy", "split": "train", "fingerprint": "f00"})
    return write_synthetic_store(path, S, V, C, **kw)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_incomplete_store_is_refused(tmp_path, suffix):
    path = tmp_path / f"i{suffix}"
    lp = synth(path, blocks=[0, 2, 4], finalize=False)[1]
    with pytest.raises(KdpcError, match=r"incomplete \(3 of 5 blocks done\); finish it with `kdpc record --resume`"):
        RecordReader(path)
    r = RecordReader(path, require_complete=False)
    assert not r.complete
    done = r.done_records()
    assert done.sum() == 25 + 25 + 20 and done[:25].all() and not done[25:50].any()
    got = r.get(np.flatnonzero(done))
    np.testing.assert_allclose(got["logprobs"], lp[done], atol=0.3)


def test_zarr_finalize_flag_defines_completeness(tmp_path):
    path = tmp_path / "f.zarr"
    synth(path, finalize=False)  # every block written, never finalized
    with pytest.raises(KdpcError, match="5 of 5 blocks done"):
        RecordReader(path)
    g = zarr.open_group(str(path), mode="r+")
    g.update_attributes({"complete": True})
    RecordReader(path)
    g["blocks_done"][2] = 0  # a flag lost: complete attr alone is not enough
    with pytest.raises(KdpcError, match="4 of 5 blocks done"):
        RecordReader(path)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_get_random_access(tmp_path, suffix):
    path = tmp_path / f"g{suffix}"
    h, lp, labels = synth(path, codec="f16")
    r = RecordReader(path)
    assert (r.num_records, r.num_samples, r.num_views, r.num_classes) == (120, S, V, C)
    np.testing.assert_array_equal(r.labels, labels)
    samples, views = np.array([3, 39, 0, 17, 3]), np.array([2, 0, 1, 1, 0])
    idx = r.record_index(samples, views)
    np.testing.assert_array_equal(idx, views * S + samples)
    got = r.get(idx)
    assert set(got) == {"sample", "view", "seed", "scale", "translate", "rotation", "logprobs"}
    np.testing.assert_array_equal(got["sample"], samples)
    np.testing.assert_array_equal(got["view"], views)
    expected = draw_params(AugmentConfig(rotation="up"), 3, samples, views, stream="record")
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name], values)
    assert got["logprobs"].dtype == np.float32 and got["logprobs"].shape == (5, C)
    np.testing.assert_allclose(got["logprobs"], lp[idx], atol=0.02)
    assert r._loaded.tolist() == [True, True, True]
    with pytest.raises(IndexError):
        r.record_index([S], [0])
    with pytest.raises(IndexError):
        r.get(np.array([120]))


def test_loads_only_touched_view_slabs(tmp_path):
    path = tmp_path / "l.zarr"
    synth(path)
    r = RecordReader(path)
    r.get(np.array([S + 1, S + 5]))
    assert r._loaded.tolist() == [False, True, False]
    cols = r.load_all()
    assert r._loaded.all() and len(cols["sample"]) == 120


def test_teacher_accuracy(tmp_path):
    path = tmp_path / "a.zarr"
    _, lp, labels = synth(path, codec="f32")
    r = RecordReader(path)
    expected = (lp.argmax(1) == np.tile(labels, V)).mean()
    assert r.teacher_accuracy() == pytest.approx(expected)
    assert 0.5 < expected < 1.0


def test_unknown_schema_version(tmp_path):
    path = tmp_path / "u.zarr"
    synth(path)
    g = zarr.open_group(str(path), mode="r+")
    hdr = dict(g.attrs["kdpc"])
    hdr["schema_version"] = 99
    g.update_attributes({"kdpc": hdr})
    with pytest.raises(KdpcError, match="schema version 99 is not supported"):
        RecordReader(path)


def test_not_a_store(tmp_path):
    with pytest.raises(KdpcError, match="no record store"):
        RecordReader(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(KdpcError, match="not a kdpc record store"):
        RecordReader(tmp_path / "plain.zarr")


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_store_info_numbers(tmp_path, suffix):
    path = tmp_path / f"n{suffix}"
    h, lp, labels = synth(path, codec="u8log")
    info = store_info(path)
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs] if path.is_dir() else [path]
    size = sum(os.path.getsize(f) for f in files)
    assert info["bytes_on_disk"] == size
    assert info["bytes_per_record"] == pytest.approx(size / 120)
    assert (info["records"], info["samples"], info["views"], info["classes"]) == (120, S, V, C)
    assert info["codec"] == "u8log" and info["complete"] and info["completion"] == "5/5 blocks"
    dec = get_codec("u8log", C).decode(get_codec("u8log", C).encode(lp))
    assert info["teacher_accuracy"] == pytest.approx((dec.argmax(1) == np.tile(labels, V)).mean())
    assert info["teacher"]["num_params"] == 123 and info["dataset"]["fingerprint"] == "f00"
    assert info["augment"]["rotation"] == "up" and info["run_seed"] == 3
    assert info["created"] == h.created and info["kdpc_version"] == h.kdpc_version
    assert set(info["array_bytes"]) >= {"sample", "view", "seed", "output/q", "labels", "blocks_done"}
    # incomplete store: reports progress, no exception
    synth(tmp_path / f"p{suffix}", blocks=[1], finalize=False)
    part = store_info(tmp_path / f"p{suffix}")
    assert not part["complete"] and part["completion"] == "1/5 blocks" and part["blocks_done"] == 1


def test_header_from_store_equals_written(tmp_path):
    path = tmp_path / "h.zarr"
    h, _, _ = synth(path, extra={"comment": "hi"})
    assert StoreHeader.from_dict(zarr.open_group(str(path), mode="r").attrs["kdpc"]).to_dict() == h.to_dict()
    assert RecordReader(path).header.to_dict() == h.to_dict()

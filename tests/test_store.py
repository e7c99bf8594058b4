"""Writing stores: header, create/overwrite/resume/attach, block order, parity, size of the default codec."""

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from kdpc.augment import AugmentConfig, ParamSpec
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, RecordWriter, StoreHeader, array_specs, store_info
from kdpc.testing.stores import block_columns, write_synthetic_store
from kdpc.store.codecs import kl_divergence
from kdpc.testing.teachers import realistic_logprobs

S, V, C, CHUNK = 30, 3, 8, 20  # 90 records in 5 blocks, the last one partial


HEADER_KW = dict(class_names=[f"c{i}" for i in range(C)], chunk_records=CHUNK, augment=AugmentConfig().to_dict(),
                 run_seed=11, num_points=128, teacher={"arch": "toy", "sha256": "ab"}, dataset={"name": "toy", "split": "train"})


def header(**kw):
    return StoreHeader(**{"num_samples": S, "num_views": V, "num_classes": C, **HEADER_KW, **kw})


def synth(path, **kw):
    """A toy store with the same header as ``header()`` (realistic random log-probs, no teacher)."""
    return write_synthetic_store(path, S, V, C, **{**HEADER_KW, **kw})


def data(seed=0, s=S, v=V, c=C):
    return realistic_logprobs(s, v, c, seed=seed)


def raw_arrays(path):
    """Every array of a zarr store, for exact comparisons."""
    g = zarr.open_group(str(path), mode="r")
    return {s.name: np.asarray(g[s.name][:]) for s in array_specs(header())}


# ---------------------------------------------------------------------------------------------------- header
def test_header_round_trip_and_geometry():
    h = header(codec="topk:3", extra={"note": np.int64(3)})
    d = h.to_dict()
    assert json.loads(json.dumps(d)) == d
    h2 = StoreHeader.from_dict(d)
    assert h2.to_dict() == d and h2.diff(h) == []
    assert [p.name for p in h.params] == ["seed", "scale", "translate"]
    assert h.num_records == 90 and h.num_blocks == 5 and h.block_range(4) == (80, 90)
    np.testing.assert_array_equal(h.record_index([0, 29, 5], [0, 0, 2]), [0, 29, 65])
    s, v = h.sample_view(np.array([0, 29, 65]))
    np.testing.assert_array_equal(s, [0, 29, 5])
    np.testing.assert_array_equal(v, [0, 0, 2])
    assert header(augment={"rotation": "so3"}).params[-1] == ParamSpec("rotation", (3,), "float16")
    assert h.diff(header(num_views=4, codec="f16", extra={"note": 3})) == ["num_views", "codec"]


@pytest.mark.parametrize("kw,match", [
    ({"codec": "nope"}, "unknown output codec"),
    ({"class_names": ["a"]}, "class names"),
    ({"task": "detection"}, "not supported yet"),
    ({"task": "partseg", "num_anchors": 500}, "exceeds"),  # more anchors than points per view
    ({"num_anchors": 4}, "semseg stores only"),
    ({"params": [ParamSpec("view", (), "uint16")]}, "clash"),
    ({"num_views": 0}, "positive integer"),
    ({"schema_version": 99}, "schema version"),
])
def test_header_rejects_bad_values(kw, match):
    with pytest.raises(KdpcError, match=match):
        header(**kw)


# ----------------------------------------------------------------------------------------- write and read back
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_write_read_back_exact(tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    lp, labels = data()
    h, _, _ = synth(path, codec="f32", logprobs=lp, labels=labels)
    r = RecordReader(path)
    cols = r.load_all()
    np.testing.assert_allclose(cols["logprobs"], lp, atol=1e-6)
    np.testing.assert_array_equal(r.labels, labels)
    for b in range(h.num_blocks):
        expected = block_columns(h, b, lp)
        s0, s1 = h.block_range(b)
        for name in ("sample", "view", "seed", "scale", "translate"):
            np.testing.assert_array_equal(cols[name][s0:s1], expected[name])
    if suffix == ".h5":
        assert path.is_file() and not (tmp_path / "s.h5.parts").exists()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_store_smaller_than_one_block(tmp_path, suffix):
    path = tmp_path / f"small{suffix}"
    h, lp, _ = synth(path, chunk_records=4096, codec="f32")
    assert h.num_blocks == 1 and h.block_range(0) == (0, 90)
    np.testing.assert_allclose(RecordReader(path).load_all()["logprobs"], lp, atol=1e-6)


def test_zarr_h5_parity(tmp_path):
    lp, labels = data(seed=4)
    readers = []
    for suffix in (".zarr", ".h5"):
        synth(tmp_path / f"p{suffix}", logprobs=lp, labels=labels)
        readers.append(RecordReader(tmp_path / f"p{suffix}"))
    a, b = (r.load_all() for r in readers)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(readers[0].labels, readers[1].labels)
    assert readers[0].header.diff(readers[1].header) == []
    assert readers[0].teacher_accuracy() == readers[1].teacher_accuracy()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_block_order_does_not_matter(tmp_path, suffix):
    lp, labels = data(seed=5)
    kw = dict(logprobs=lp, labels=labels, created="2024-01-01T00:00:00Z")
    synth(tmp_path / f"a{suffix}", **kw)
    order = np.random.default_rng(1).permutation(5)
    assert list(order) != sorted(order)
    synth(tmp_path / f"b{suffix}", blocks=order, **kw)
    ra, rb = RecordReader(tmp_path / f"a{suffix}"), RecordReader(tmp_path / f"b{suffix}")
    for k, v in ra.load_all().items():
        np.testing.assert_array_equal(v, rb.load_all()[k])
    if suffix == ".zarr":
        for k, v in raw_arrays(tmp_path / "a.zarr").items():
            np.testing.assert_array_equal(v, raw_arrays(tmp_path / "b.zarr")[k], err_msg=k)


def test_threads_and_attach_write_distinct_blocks(tmp_path):
    path = tmp_path / "t.zarr"
    lp, labels = data(seed=6)
    h = header()
    w0 = RecordWriter.open(path, h, labels=labels)
    w1 = RecordWriter.attach(path)  # as another rank would
    assert w1.header.to_dict() == w0.header.to_dict() and w1.pending_blocks() == [0, 1, 2, 3, 4]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda b: (w0 if b % 2 else w1).write_block(b, block_columns(h, b, lp)), range(5)))
    assert w0.pending_blocks() == []
    w0.finalize()
    np.testing.assert_allclose(RecordReader(path).load_all()["logprobs"], lp, atol=0.5)


# ------------------------------------------------------------------------------------------ modes and resume
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_existing_store_needs_resume_or_overwrite(tmp_path, suffix):
    path = tmp_path / f"e{suffix}"
    lp, labels = data()
    synth(path, blocks=[0], finalize=False, logprobs=lp, labels=labels)
    with pytest.raises(KdpcError, match="exists; pass --resume to finish it or --overwrite to replace it"):
        RecordWriter.open(path, header(), mode="create")
    w = RecordWriter.open(path, header(), mode="overwrite", labels=labels)
    assert w.pending_blocks() == [0, 1, 2, 3, 4]


def test_overwrite_refuses_foreign_folder_and_resume_needs_a_store(tmp_path):
    foreign = tmp_path / "mine.zarr"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(KdpcError, match="not a kdpc record store"):
        RecordWriter.open(foreign, header(), mode="overwrite")
    assert (foreign / "thesis.tex").exists()
    with pytest.raises(KdpcError, match="nothing to resume"):
        RecordWriter.open(tmp_path / "none.zarr", header(), mode="resume")


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KdpcError, match="writable location"):
        RecordWriter.open(blocker / "sub" / "s.zarr", header(), mode="create")


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_resume_rewrites_unflagged_blocks(tmp_path, suffix):
    path = tmp_path / f"r{suffix}"
    lp, labels = data(seed=7)
    synth(path, blocks=[0, 3], finalize=False, logprobs=lp, labels=labels)
    if suffix == ".zarr":
        # a crash after block 1's arrays but before its flag: garbage arrays, flag 0
        g = zarr.open_group(str(path), mode="r+")
        g["output/q"][20:40] = 7
        assert g["blocks_done"][1] == 0
    else:
        assert not path.exists() and sorted(p.name for p in (tmp_path / "r.h5.parts").glob("block-*")) == [
            "block-000000.h5", "block-000003.h5"]
    w = RecordWriter.open(path, header(created="2030-01-01T00:00:00Z"), mode="resume", labels=labels)
    assert w.pending_blocks() == [1, 2, 4]
    for b in w.pending_blocks():
        w.write_block(b, block_columns(w.header, b, lp))
    w.finalize()
    w.close()
    ref = tmp_path / f"ref{suffix}"
    synth(ref, logprobs=lp, labels=labels)
    for k, v in RecordReader(ref).load_all().items():
        np.testing.assert_array_equal(RecordReader(path).load_all()[k], v, err_msg=k)
    # resuming a complete store is a no-op
    w2 = RecordWriter.open(path, header(), mode="resume")
    assert w2.pending_blocks() == [] and w2.finalize() == str(path)
    with pytest.raises(KdpcError, match="already complete"):
        w2.write_block(0, block_columns(w2.header, 0, lp))


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_resume_refuses_other_settings(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    synth(path, blocks=[0], finalize=False)
    with pytest.raises(KdpcError, match=r"different settings \(codec, run_seed\).*--overwrite"):
        RecordWriter.open(path, header(codec="f16", run_seed=12), mode="resume")


def test_write_block_validation_and_nan(tmp_path):
    path = tmp_path / "v.zarr"
    lp, labels = data()
    h = header(codec="f32")
    w = RecordWriter.open(path, h, labels=labels)
    cols = block_columns(h, 1, lp)
    with pytest.raises(ValueError, match="columns must be exactly"):
        w.write_block(1, {k: v for k, v in cols.items() if k != "seed"})
    with pytest.raises(ValueError, match="view-major"):
        w.write_block(1, {**cols, "sample": cols["sample"][::-1]})
    with pytest.raises(ValueError, match="shape"):
        w.write_block(1, {**cols, "logprobs": cols["logprobs"][:, :-1]})
    bad = cols["logprobs"].copy()
    bad[3, 2] = np.nan
    with pytest.raises(KdpcError, match="NaN"):
        w.write_block(1, {**cols, "logprobs": bad})
    assert w.pending_blocks() == [0, 1, 2, 3, 4]
    with pytest.raises(KdpcError, match="0 of 5 blocks"):
        w.finalize()
    with pytest.raises(KdpcError, match="teacher has 8 classes"):
        RecordWriter.open(tmp_path / "w.zarr", h, labels=np.full(S, 9))


def test_h5_never_leaves_a_complete_looking_file(tmp_path):
    path = tmp_path / "x.h5"
    lp, labels = data()
    h = header()
    w = RecordWriter.open(path, h, labels=labels)
    for b in range(4):
        w.write_block(b, block_columns(h, b, lp))
        assert not path.exists()
    assert not list(tmp_path.glob("**/*.tmp"))
    with pytest.raises(KdpcError, match="incomplete"):
        RecordReader(path)
    w.write_block(4, block_columns(h, 4, lp))
    w.finalize()
    assert path.is_file() and not (tmp_path / "x.h5.parts").exists() and not (tmp_path / "x.h5.tmp").exists()


# --------------------------------------------------------------------------------------------- default size
def test_default_codec_size_and_fidelity_40_classes(tmp_path):
    """The default codec's budget: <= 48 B/record on disk (everything) and KL(T=4) <= 1e-4, 20k records."""
    path = tmp_path / "d.zarr"
    h, lp, _ = write_synthetic_store(path, 5000, 4, 40, seed=2, augment=AugmentConfig().to_dict())
    assert h.codec == "u8log" and h.chunk_records == 4096
    info = store_info(path)
    files = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    assert info["bytes_on_disk"] == files
    assert info["bytes_per_record"] <= 48.0, info["array_bytes"]
    assert info["bytes_per_record"] >= 40.0  # the seed alone is 4 incompressible bytes; sanity of the measurement
    dec = RecordReader(path).load_all()["logprobs"]
    assert kl_divergence(lp, dec, 4).mean() <= 1e-4
    assert kl_divergence(lp, dec, 1).mean() <= 1e-4


def test_writer_is_thread_safe_for_distinct_blocks_h5(tmp_path):
    path = tmp_path / "th.h5"
    lp, labels = data(seed=8)
    h = header(codec="f16")
    w = RecordWriter.open(path, h, labels=labels)
    threads = [threading.Thread(target=w.write_block, args=(b, block_columns(h, b, lp))) for b in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.finalize()
    np.testing.assert_allclose(RecordReader(path).load_all()["logprobs"], lp, atol=0.02)

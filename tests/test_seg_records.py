"""Part-segmentation stores: per-point codecs, anchors, the feature projection, write/read/verify (zarr and HDF5)."""

import math

import numpy as np
import pytest
import zarr

from kdpc.augment import AugmentConfig, anchor_indices, draw_params
from kdpc.hashing import splitmix64
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, RecordWriter, StoreHeader, array_specs, store_info, verify_store
from kdpc.testing.stores import block_columns
from kdpc.store import DEFAULT_SEG_CODEC, get_codec, get_point_codec
from kdpc.store.codecs import PointTopKCodec, kl_divergence, log_softmax, logsumexp, point_decoded_error_bound
from kdpc.recorder.seg import projection_matrix
from kdpc.testing.teachers import realistic_seg_logprobs
from kdpc.testing.stores import write_synthetic_seg_store

S, V, N, M, D = 10, 3, 48, 12, 8  # 30 views of 48 points, 50 parts; blocks of 8 views -> 4 blocks, the last partial


@pytest.fixture(scope="module")
def seg_data():
    return realistic_seg_logprobs(S, V, N, seed=2, num_anchors=M, feature_dim=D)


def seg_store(path, seg_data, **kw):
    lp, cats, feats = seg_data
    kw.setdefault("chunk_records", 8)
    kw.setdefault("augment", AugmentConfig().to_dict())
    kw.setdefault("run_seed", 5)
    return write_synthetic_seg_store(path, S, V, N, num_anchors=M, feature_dim=D, logprobs=lp, features=feats,
                                     labels=cats, **kw)


# ------------------------------------------------------------------------------------------------ ptopk codec
def test_ptopk_by_hand():
    """One point, 4 parts, K = 2: every stored byte and the decoded row, computed by hand."""
    z = np.array([2.0, 0.0, -1.0, -3.0])
    lp = log_softmax(z)[None, None, :]  # [1, 1, 4]
    codec = get_point_codec("ptopk:2", 4, 1)
    enc = codec.encode(lp)
    assert enc["topk_index"].tolist() == [[[0, 1]]] and enc["topk_index"].dtype == np.uint8
    # d = 2 - 0 = 2 -> round(60 ln(1 + 2/2)) = round(41.59) = 42
    assert enc["topk_q"].tolist() == [[[42]]]
    # s = l0 - log(e^-1 + e^-3) (in logit units: 2 - (-1 + ln(1 + e^-2))) = 2.87307 -> 128 + round(30 ln(2.43654)) = 155
    s = 2.0 - (-1.0 + math.log1p(math.exp(-2.0)))
    assert abs(s - 2.87307) < 1e-5
    assert enc["tail_q"].tolist() == [[155]]
    # profile: tail-normalised log-probs of parts 2 and 3; parts 0 and 1 are never in the tail -> -60
    w2 = math.exp(-1) / (math.exp(-1) + math.exp(-3))
    expected_profile = np.array([-60.0, -60.0, math.log(w2), math.log(1 - w2)], dtype=np.float16)
    np.testing.assert_array_equal(enc["profile"][0], expected_profile)
    dec = codec.decode(enc)[0, 0].astype(np.float64)
    x1 = -2.0 * math.expm1(42 / 60)
    s_dec = 2.0 * math.expm1(27 / 30)
    prof = expected_profile.astype(np.float64)
    lse_tail = math.log(math.exp(prof[2]) + math.exp(prof[3]))
    x = np.array([0.0, x1, -s_dec + prof[2] - lse_tail, -s_dec + prof[3] - lse_tail])
    np.testing.assert_allclose(dec, x - logsumexp(x)[0], atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_ptopk_round_trip_bounds(seg_data, k):
    lp = seg_data[0].astype(np.float64)
    codec = get_point_codec(f"ptopk:{k}", 50, N)
    assert isinstance(codec, PointTopKCodec)
    enc = codec.encode(lp)
    assert set(enc) == set(codec.arrays(50)) and ("topk_q" in enc) == (k > 1)
    for name, (tail, dtype) in codec.arrays(50).items():
        assert enc[name].shape == (len(lp), *tail) and enc[name].dtype == np.dtype(dtype)
    dec = codec.decode(enc)
    assert dec.dtype == np.float32 and dec.shape == lp.shape
    assert np.abs(logsumexp(dec)).max() < 1e-5  # every point normalised
    # top-K: the stable descending order, entries within the u8log bound (plus renormalisation)
    order = np.argsort(-lp, axis=-1, kind="stable")[..., :k]
    np.testing.assert_array_equal(enc["topk_index"], order)
    bound = point_decoded_error_bound(codec, lp, dec)
    assert np.isfinite(bound).sum() == lp.shape[0] * N * k
    fin = np.isfinite(bound)
    assert (np.abs(dec - lp)[fin] <= bound[fin]).all()
    # the tail keeps its total mass: s = l_top1 - logsumexp(tail) within the tail code's bound
    in_tail = np.ones(lp.shape, bool)
    np.put_along_axis(in_tail, order, False, axis=-1)
    s_true = lp.max(-1) - logsumexp(np.where(in_tail, lp, -np.inf))[..., 0]
    dec64 = dec.astype(np.float64)
    s_dec = dec64.max(-1) - logsumexp(np.where(in_tail, dec64, -np.inf))[..., 0]
    assert (np.abs(s_dec - s_true) <= codec.tail_bound(s_true) + 1e-5).all()
    assert (dec.argmax(-1) == lp.argmax(-1)).mean() > 0.995
    # no decoded tail part ranks above the K-th kept part (the decoder caps the profile's split)
    kth = np.take_along_axis(dec64, order[..., -1:], axis=-1)[..., 0]
    assert (np.where(in_tail, dec64, -np.inf).max(-1) <= kth + 1e-6).all()


def test_ptopk_profile_beats_uniform_tail(seg_data):
    """The per-record tail profile is what makes a small K usable: KL(T=2) well below topk:K's uniform tail."""
    lp = seg_data[0].reshape(-1, 50).astype(np.float64)
    kl = {}
    for spec in ("ptopk:3", "topk:3"):
        codec = get_point_codec(spec, 50, N)
        dec = codec.decode(codec.encode(seg_data[0])).reshape(-1, 50)
        kl[spec] = kl_divergence(lp, dec, 2).mean()
    assert kl["ptopk:3"] < 0.5 * kl["topk:3"], kl


def test_ptopk_edge_rows():
    codec = get_point_codec("ptopk:2", 5, 3)
    x = np.array([[[0.0, 0.0, 0.0, 0.0, 0.0],  # all tied: parts 0, 1 by index; the tail outweighs the top (s < 0)
                   [5.0, -np.inf, -np.inf, -np.inf, -np.inf],  # an empty tail: s = +inf -> the top code
                   [1.0, 3.0, -400.0, -400.0, 2.0]]])
    enc = codec.encode(x)
    assert enc["topk_index"][0].tolist() == [[0, 1], [0, 1], [1, 4]]
    assert enc["tail_q"][0, 0] < 128 and enc["tail_q"][0, 1] == 255
    dec = codec.decode(enc)
    assert np.isfinite(dec).all() and np.abs(logsumexp(dec)).max() < 1e-5
    assert dec[0, 1].argmax() == 0 and dec[0, 1, 0] > -1e-6  # the only finite part keeps all the mass
    p0 = np.exp(dec[0, 0].astype(np.float64))
    # The record's profile: part 4 is in the tail of point 0 only (share 1/3), parts 2 and 3 in those of point 0
    # (1/3) and point 2 (~0: its tail mass is all part 0's) -> mean 1/6 each; point 1's empty tail does not count.
    # Point 0's tail mass 0.6 split 1/6 : 1/6 : 1/3 would put part 4 (0.3) above the kept parts (0.2): the decoder
    # caps the tail at the K-th kept part and water-fills the rest, which gives back the uniform row exactly.
    np.testing.assert_allclose(p0, 0.2, atol=0.005)
    prof = enc["profile"][0].astype(np.float64)
    np.testing.assert_allclose(prof[1:], [-60.0, math.log(1 / 6), math.log(1 / 6), math.log(1 / 3)], atol=2e-3)
    assert abs(prof[0]) < 2e-3  # part 0: the whole tail of point 2


def test_point_codec_errors_and_index_dtype():
    with pytest.raises(KdpcError, match="K >= 1"):
        get_point_codec("ptopk:0", 10, 4)
    with pytest.raises(KdpcError, match="keeps all"):
        get_point_codec("ptopk:10", 10, 4)
    with pytest.raises(KdpcError, match="ptopk:4"):
        get_point_codec("ptopk", 10, 4)
    with pytest.raises(KdpcError, match="also take ptopk"):
        get_point_codec("nope", 10, 4)
    with pytest.raises(KdpcError, match="num_points"):
        get_point_codec("ptopk:2", 10, 0)
    assert get_point_codec("ptopk:2", 300, 4).arrays(300)["topk_index"][1] == "uint16"
    assert DEFAULT_SEG_CODEC == "ptopk:4"


@pytest.mark.parametrize("spec", ["f16", "u8log", "topk:3"])
def test_rowwise_point_codecs_are_the_cls_codecs_per_point(seg_data, spec):
    lp = seg_data[0][:4]
    point, row = get_point_codec(spec, 50, N), get_codec(spec, 50)
    enc_p, enc_r = point.encode(lp), row.encode(lp.reshape(-1, 50))
    for name, arr in enc_p.items():
        assert arr.shape[:2] == (4, N)
        np.testing.assert_array_equal(arr.reshape(enc_r[name].shape), enc_r[name])
    np.testing.assert_array_equal(point.decode(enc_p).reshape(-1, 50), row.decode(enc_r))
    assert point.spec() == spec and point.config() == row.config()


# ------------------------------------------------------------------------------------------ anchors, projection
def test_anchor_indices_by_the_documented_rule():
    seed, n, m = 123456789, 40, 7
    base = splitmix64(np.array([seed], dtype=np.uint64) ^ np.uint64(0x616E63686F727321))
    keys = splitmix64(base ^ np.arange(n, dtype=np.uint64))
    expected = np.sort(np.argsort(keys, kind="stable")[:m])
    got = anchor_indices(seed, n, m)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64 and len(np.unique(got)) == m
    seeds = np.array([seed, 1, 2**32 - 1], dtype=np.uint32)
    batch = anchor_indices(seeds, n, m)
    assert batch.shape == (3, m)
    for i, sd in enumerate(seeds):
        np.testing.assert_array_equal(batch[i], anchor_indices(int(sd), n, m))
    assert not np.array_equal(batch[1], batch[2])
    np.testing.assert_array_equal(anchor_indices(5, n, n), np.arange(n))
    assert anchor_indices(5, n, 0).shape == (0,)
    with pytest.raises(KdpcError, match="anchors"):
        anchor_indices(5, 4, 5)


def test_projection_matrix_is_regenerated_from_its_seed():
    w = projection_matrix(7, 64, 16)
    assert w.shape == (64, 16) and w.dtype == np.float32
    np.testing.assert_array_equal(w, projection_matrix(7, 64, 16))
    assert not np.array_equal(w, projection_matrix(8, 64, 16))
    # entry [0, 0] by hand: Box-Muller of the first two splitmix64 uniforms
    base = splitmix64(np.array([7], dtype=np.uint64) ^ np.uint64(0x70726F6A65637421))
    h = splitmix64(base + np.arange(2, dtype=np.uint64))
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    z = math.sqrt(-2 * math.log1p(-u[0])) * math.cos(2 * math.pi * u[1])
    assert w[0, 0] == np.float32(z / 4.0)
    big = projection_matrix(1, 256, 64).astype(np.float64)
    assert abs(big.mean()) < 0.01 and abs(big.var() * 64 - 1) < 0.05  # N(0, 1/out_dim) entries


# ------------------------------------------------------------------------------------------- header, schema
def test_seg_header_defaults_and_validation():
    h = StoreHeader(task="partseg", num_samples=4, num_views=2, num_classes=50, num_points=64, num_anchors=8,
                    feature_dim=16, feature_projection={"kind": "gaussian", "seed": 3, "in_dim": 128, "out_dim": 16})
    assert h.codec == DEFAULT_SEG_CODEC and h.chunk_records == 64
    d = h.to_dict()
    assert d["num_anchors"] == 8 and StoreHeader.from_dict(d).to_dict() == d
    names = {s.name: s for s in array_specs(h)}
    assert names["features"].shape == (8, 8, 16) and names["features"].dtype == "float16"
    assert names["output/topk_index"].dims == ("record", "point", "topk_index_0")
    assert names["output/profile"].dims == ("record", "class")
    cls = StoreHeader(num_samples=4, num_views=2, num_classes=5)
    assert cls.codec == "u8log" and cls.chunk_records == 4096
    assert not {"num_anchors", "feature_dim", "feature_projection"} & set(cls.to_dict())  # cls headers unchanged
    base = dict(task="partseg", num_samples=4, num_views=2, num_classes=50, num_points=64)
    for kw, match in [({"num_anchors": 65, "feature_dim": 4}, "exceeds"), ({"num_anchors": 4}, "feature_dim >= 1"),
                      ({"feature_dim": 4}, "need num_anchors"),
                      ({"num_anchors": 4, "feature_dim": 8, "feature_projection": {"kind": "gaussian", "seed": 0,
                                                                                  "in_dim": 32, "out_dim": 4}}, "does not fit"),
                      ({"num_anchors": 4, "feature_dim": 4, "feature_projection": {"kind": "pca"}}, "gaussian"),
                      ({"num_points": 0}, "num_points")]:
        with pytest.raises(KdpcError, match=match):
            StoreHeader(**{**base, **kw})


# --------------------------------------------------------------------------------------- write / read / verify
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_seg_store_write_read_verify(tmp_path, seg_data, suffix):
    path = tmp_path / f"seg{suffix}"
    h, lp, feats, cats = seg_store(path, seg_data, codec="f32")
    assert h.num_blocks == 4 and h.block_range(3) == (24, 30)
    reader = RecordReader(path)
    assert reader.header.to_dict() == h.to_dict()
    np.testing.assert_array_equal(reader.labels, cats)
    idx = np.array([0, 29, 13, 13, 8])
    got = reader.get(idx)
    assert got["logprobs"].shape == (5, N, 50) and got["features"].shape == (5, M, D) and got["anchors"].shape == (5, M)
    np.testing.assert_allclose(got["logprobs"], lp[idx], atol=1e-5)
    np.testing.assert_array_equal(got["features"], feats[idx].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got["anchors"], anchor_indices(got["seed"], N, M))
    expected = block_columns(h, 0, lp, feats)
    for name in ("sample", "view", "seed", "scale", "translate"):
        np.testing.assert_array_equal(got[name][0], expected[name][0])
    params = draw_params(AugmentConfig(), 5, idx % S, idx // S, stream="record")
    np.testing.assert_array_equal(got["seed"], params["seed"])
    cols = reader.load_all()
    assert "logprobs" not in cols and cols["seed"].shape == (S * V,)
    assert reader.teacher_accuracy() is None
    rep = verify_store(path)
    assert rep.ok, rep.problems
    assert rep.warnings == []
    info = store_info(path)
    assert info["task"] == "partseg" and info["num_anchors"] == M and info["feature_dim"] == D
    assert info["feature_bytes_per_record"] > 0 and info["output_bytes_per_record"] > 0


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_seg_store_default_codec_round_trip(tmp_path, seg_data, suffix):
    path = tmp_path / f"seg{suffix}"
    h, lp, feats, _ = seg_store(path, seg_data)
    assert h.codec == "ptopk:4"
    got = RecordReader(path).get(np.arange(S * V))
    codec = get_point_codec("ptopk:4", 50, N)
    np.testing.assert_array_equal(got["logprobs"], codec.decode(codec.encode(lp)))
    assert verify_store(path).ok


def test_seg_writer_validation(tmp_path, seg_data):
    lp, cats, feats = seg_data
    h = StoreHeader(task="partseg", num_samples=S, num_views=V, num_classes=50, num_points=N, num_anchors=M,
                    feature_dim=D, chunk_records=8)
    with RecordWriter.open(tmp_path / "w.zarr", h, labels=cats) as w:
        cols = block_columns(h, 0, lp, feats)
        with pytest.raises(ValueError, match="features must have shape"):
            w.write_block(0, {**cols, "features": feats[:8, :, :4]})
        with pytest.raises(ValueError, match="logprobs must have shape"):
            w.write_block(0, {**cols, "logprobs": lp[:8, :, :49]})
        with pytest.raises(ValueError, match="columns must be exactly"):
            w.write_block(0, {k: v for k, v in cols.items() if k != "features"})
        bad = cols["features"].copy()
        bad[2, 0, 0] = 1e6  # overflows float16
        with pytest.raises(KdpcError, match="record 2"):
            w.write_block(0, {**cols, "features": bad})
        nan = cols["logprobs"].copy()
        nan[5, 3, 7] = np.nan
        with pytest.raises(KdpcError, match="record 5"):
            w.write_block(0, {**cols, "logprobs": nan})
        assert w.pending_blocks() == [0, 1, 2, 3]
        with pytest.raises(ValueError, match="features"):
            block_columns(h, 0, lp)


def test_seg_resume_refuses_other_anchor_settings(tmp_path, seg_data):
    path = tmp_path / "r.zarr"
    seg_store(path, seg_data, blocks=[0], finalize=False)
    lp, cats, feats = seg_data
    other = realistic_seg_logprobs(S, V, N, seed=2, num_anchors=M + 1, feature_dim=D)[2]
    with pytest.raises(KdpcError, match="num_anchors"):
        write_synthetic_seg_store(path, S, V, N, num_anchors=M + 1, feature_dim=D, logprobs=lp, features=other,
                                  labels=cats, chunk_records=8, augment=AugmentConfig().to_dict(), run_seed=5,
                                  mode="resume")
    h, *_ = seg_store(path, seg_data, mode="resume")
    assert RecordReader(path).complete and verify_store(path).ok


def test_seg_verify_finds_damaged_features(tmp_path, seg_data):
    path = tmp_path / "d.zarr"
    seg_store(path, seg_data)
    g = zarr.open_group(str(path), mode="r+")
    arr = g["features"].with_config({"write_empty_chunks": True})
    block = np.asarray(arr[8:16]).copy()
    block[1, 0, 0] = np.inf
    arr[8:16] = block
    rep = verify_store(path)
    assert not rep.ok and any("features" in p and "record 9" in p for p in rep.problems), rep.problems
    chunk = path / "features" / "c" / "2" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    rep = verify_store(path)
    assert any("'features' chunk 2" in p and "corrupt" in p for p in rep.problems), rep.problems

"""verify_store and damage: bit flips (zarr crc32c, HDF5 fletcher32), missing chunks, NaN, order, param ranges."""

import h5py
import numpy as np
import pytest
import zarr

from kdpc.augment import AugmentConfig
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, verify_store
from kdpc.testing.stores import write_synthetic_store

S, V, C, CHUNK = 40, 3, 6, 25  # 120 records, 5 blocks


def synth(path, **kw):
    kw.setdefault("chunk_records", CHUNK)
    kw.setdefault("augment", AugmentConfig().to_dict())
    return write_synthetic_store(path, S, V, C, **kw)


def flip_bit(path, offset, bit=3):
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_clean_store_verifies(tmp_path, suffix):
    path = tmp_path / f"ok{suffix}"
    synth(path)
    rep = verify_store(path)
    assert rep.ok, rep.problems
    # 7 record arrays x 5 blocks (sample, view, seed, scale, translate, output/q, output/base) + labels + 5 flags
    assert rep.checked_chunks == 7 * 5 + 1 + 5
    assert rep.complete and rep.blocks_done == 5 and rep.warnings == []


@pytest.mark.parametrize("array", ["output/q", "scale"])
def test_bit_flip_in_zarr_chunk(tmp_path, array):
    path = tmp_path / "z.zarr"
    synth(path)
    before = RecordReader(path).load_all()["logprobs"].copy()
    chunk = path / array / "c" / "2" / "0"
    size = chunk.stat().st_size
    flip_bit(chunk, size // 2)
    rep = verify_store(path)
    assert not rep.ok and rep.bad_chunks == 1
    assert any(f"array {array!r} chunk 2" in p and "corrupt" in p for p in rep.problems), rep.problems
    r = RecordReader(path)  # opening reads only metadata/labels
    with pytest.raises(KdpcError, match=f"damaged: array '{array}' chunk 2"):
        r.load_all()
    # records in other view slabs are still served correctly
    np.testing.assert_array_equal(r.get(np.arange(80, 120))["logprobs"], before[80:120])


def test_bit_flip_in_h5_chunk(tmp_path):
    path = tmp_path / "h.h5"
    synth(path)
    with h5py.File(path, "r") as f:
        info = f["output/q"].id.get_chunk_info_by_coord((50, 0))
    flip_bit(path, info.byte_offset + info.size // 2)
    rep = verify_store(path)
    assert not rep.ok
    assert any("array 'output/q' chunk 2" in p for p in rep.problems), rep.problems
    with pytest.raises(KdpcError, match="damaged: array 'output/q'"):
        RecordReader(path).load_all()


def test_missing_chunk_object(tmp_path):
    path = tmp_path / "m.zarr"
    synth(path)
    (path / "seed" / "c" / "1").unlink()
    rep = verify_store(path)
    assert not rep.ok and any("array 'seed' chunk 1" in p and "missing" in p for p in rep.problems)
    with pytest.raises(KdpcError, match="array 'seed' chunk 1: chunk object is missing"):
        RecordReader(path).get(np.array([30]))


def test_nan_in_outputs(tmp_path):
    path = tmp_path / "nan.zarr"
    synth(path, codec="f32")
    g = zarr.open_group(str(path), mode="r+")
    g["output/logprobs"][60, 2] = np.nan
    rep = verify_store(path)
    assert not rep.ok and rep.nonfinite_records == 1
    assert any("NaN" in p and "record 60" in p and "sample 20, view 1" in p for p in rep.problems), rep.problems


def test_order_and_param_ranges(tmp_path):
    path = tmp_path / "o.zarr"
    synth(path)
    g = zarr.open_group(str(path), mode="r+")
    g["sample"][3] = 7
    g["scale"][30, 1] = 5.0
    g["translate"][100, 0] = np.inf
    rep = verify_store(path)
    text = "\n".join(rep.problems)
    assert "block 0: 1 'sample' ids break the view-major order" in text
    assert "block 1: scale outside" in text
    assert "block 4: param 'translate' has 1 non-finite" in text
    assert any("differ from draw_params" in w for w in rep.warnings)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_incomplete_store_is_a_problem(tmp_path, suffix):
    path = tmp_path / f"i{suffix}"
    synth(path, blocks=[0, 1], finalize=False)
    rep = verify_store(path)
    assert not rep.ok and rep.blocks_done == 2
    assert any("incomplete: 2 of 5 blocks done (missing: 2, 3, 4)" in p for p in rep.problems)
    assert rep.checked_chunks >= 2 * 7  # the finished blocks are still checked


def test_unknown_schema_version_is_a_problem(tmp_path):
    path = tmp_path / "v.zarr"
    synth(path)
    g = zarr.open_group(str(path), mode="r+")
    g.update_attributes({"kdpc": {**g.attrs["kdpc"], "schema_version": 99}})
    rep = verify_store(path)
    assert not rep.ok and "schema version 99" in rep.problems[0]


def test_array_without_checksum_is_a_problem(tmp_path):
    path = tmp_path / "c.zarr"
    synth(path)
    g = zarr.open_group(str(path), mode="r+")
    data = g["view"][:]
    del g["view"]
    g.create_array("view", data=data, chunks=(CHUNK,))  # zarr defaults: zstd without any checksum
    rep = verify_store(path)
    assert any("'view'" in p and "crc32c" in p for p in rep.problems), rep.problems

"""Sharing record stores locally: copy (interrupted + resumed, corruption, missing chunks), pack/unpack (read in
place), convert zarr <-> HDF5, merge (more views / ensemble / refusals), two distills from one store at once, and
bad input through the CLI. Remote locations: test_remote_s3.py, test_remote_http.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdpc.augment import AugmentConfig
from kdpc.cli import main
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, store_info, verify_store
from kdpc.testing.stores import write_synthetic_store
from kdpc.store.backends import open_store, read_header
from kdpc.testing.teachers import realistic_logprobs
from kdpc.store.info import format_info
from kdpc.store.schema import array_specs, header_checksum
from kdpc.store.share import convert_store, copy_store, merge_stores, pack_store

S, V, C, CHUNK = 30, 3, 6, 20  # 90 records, 5 blocks
DATASET = {"name": "toy", "split": "train", "num_samples": S, "fingerprint": "f00d"}
TEACHER = {"arch": "toy", "num_params": 123, "sha256": "a" * 64, "metrics": {"oa": 0.9}}


def synth(path, views=V, **kw):
    kw.setdefault("chunk_records", CHUNK)
    kw.setdefault("augment", AugmentConfig(rotation="up").to_dict())
    kw.setdefault("teacher", TEACHER)
    kw.setdefault("dataset", DATASET)
    kw.setdefault("labels", np.arange(S) % C)
    return write_synthetic_store(path, S, views, C, **kw)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def columns(path) -> dict[str, np.ndarray]:
    with RecordReader(path) as r:
        return {k: v.copy() for k, v in r.load_all().items()}


def assert_same_columns(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def assert_one_line(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kdpc: error:"), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("share") / "a.zarr"
    synth(path)
    return path


# ---------------------------------------------------------------------------------------------------- copy
def test_copy_interrupted_then_resumed_is_identical(store, tmp_path):
    dst = tmp_path / "b.zarr"
    seen = []

    def stop_after_12(key, action):
        seen.append(key)
        if len(seen) == 12:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a copy

    with pytest.raises(KeyboardInterrupt):
        copy_store(store, dst, on_object=stop_after_12)
    assert json.loads((dst / "zarr.json").read_text())["attributes"]["complete"] is False
    with pytest.raises(KdpcError, match="incomplete"):
        RecordReader(dst)  # a half-copied store is never taken for a complete one
    report = copy_store(store, dst)
    assert report.skipped >= 12 and report.copied == report.objects - report.skipped
    assert tree(dst) == tree(store)  # byte-identical, root metadata included (complete: true)
    assert verify_store(dst).ok
    again = copy_store(store, dst)  # nothing left to do
    assert again.copied == 0 and again.skipped == again.objects
    assert_same_columns(columns(dst), columns(store))


def test_corrupted_chunk_at_destination_is_detected_and_recopied(store, tmp_path, capsys):
    dst = tmp_path / "b.zarr"
    copy_store(store, dst)
    chunk = dst / "output" / "q" / "c" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    report = verify_store(dst)
    assert not report.ok and any("'output/q' chunk 2" in p and "corrupt" in p for p in report.problems)
    code, _, err = cli(capsys, "records", "verify", dst)
    assert_one_line(code, err, "failed verification")
    report = copy_store(store, dst)
    assert report.copied == 2  # the damaged chunk, and the root metadata set back to complete at the end
    assert verify_store(dst).ok and tree(dst) == tree(store)


def test_store_missing_a_chunk_is_refused(store, tmp_path, capsys):
    damaged = tmp_path / "d.zarr"
    copy_store(store, damaged)
    (damaged / "scale" / "c" / "1" / "0").unlink()
    with pytest.raises(KdpcError, match="'scale' chunk 1 is missing"):
        copy_store(damaged, tmp_path / "e.zarr")
    assert not (tmp_path / "e.zarr").exists() or not any((tmp_path / "e.zarr").iterdir())
    with pytest.raises(KdpcError, match="chunk 1 is missing"):
        pack_store(damaged, tmp_path / "d.zarr.zip")
    with pytest.raises(KdpcError, match="damaged.*chunk 1"):
        RecordReader(damaged).load_all()
    with pytest.raises(KdpcError, match="missing"):
        convert_store(damaged, tmp_path / "d.h5")
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "d.h5.parts").exists()
    code, _, err = cli(capsys, "records", "copy", damaged, tmp_path / "f.zarr")
    assert_one_line(code, err, "is missing")


def test_copy_refusals(store, tmp_path):
    incomplete = tmp_path / "i.zarr"
    synth(incomplete, blocks=[0, 1], finalize=False)
    with pytest.raises(KdpcError, match=r"incomplete \(2 of 5 blocks done\)"):
        copy_store(incomplete, tmp_path / "x.zarr")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(KdpcError, match="not empty"):
        copy_store(store, busy)
    with pytest.raises(KdpcError, match="different record store"):
        copy_store(store, _other_store(tmp_path))
    with pytest.raises(KdpcError, match="pack"):
        copy_store(store, tmp_path / "x.zarr.zip")
    with pytest.raises(KdpcError, match="source itself"):
        copy_store(store, store)
    if importlib.util.find_spec("gcsfs") is None:  # say what to install
        with pytest.raises(KdpcError, match="gcsfs"):
            open_store("gs://some-bucket/x.zarr")


def test_file_urls_are_local_paths(store, tmp_path):
    dst = tmp_path / "f.zarr"
    report = copy_store(f"file://{store}", f"file://{dst}")
    assert report.copied == report.objects and tree(dst) == tree(store)
    assert store_info(f"file://{dst}")["complete"]
    assert_same_columns(columns(f"file://{dst}"), columns(store))


def _other_store(tmp_path: Path) -> Path:
    path = tmp_path / "other.zarr"
    synth(path, run_seed=9)
    return path


# ----------------------------------------------------------------------------------------------- pack/unpack
def test_pack_is_readable_in_place_and_unpacks_identically(store, tmp_path, capsys):
    pack = tmp_path / "a.zarr.zip"
    code, out, _ = cli(capsys, "records", "pack", store, pack)
    assert code == 0 and "copied" in out
    assert_same_columns(columns(pack), columns(store))
    assert verify_store(pack).ok
    info = store_info(pack)
    assert info["bytes_on_disk"] == pack.stat().st_size and info["complete"]
    assert "toy" in format_info(info)
    code, out, _ = cli(capsys, "records", "info", pack)
    assert code == 0 and "sha256 aaaaaaaaaaaaaaaa" in out
    pack2 = tmp_path / "again.zarr.zip"
    pack_store(store, pack2)
    assert pack2.read_bytes() == pack.read_bytes()  # deterministic: same store, same file
    code, _, err = cli(capsys, "records", "pack", store, pack)
    assert_one_line(code, err, "exists")
    unpacked = tmp_path / "u.zarr"
    code, _, _ = cli(capsys, "records", "unpack", pack, unpacked)
    assert code == 0 and tree(unpacked) == tree(store)
    with pytest.raises(KdpcError, match="read-only"):
        open_store(pack, "r+")


# -------------------------------------------------------------------------------------------------- convert
def test_convert_round_trip_zarr_h5_zarr(store, tmp_path, capsys):
    h5 = tmp_path / "a.h5"
    code, _, _ = cli(capsys, "records", "convert", store, h5)
    assert code == 0
    back = tmp_path / "back.zarr"
    convert_store(h5, back)
    src, mid, dst = (open_store(p) for p in (store, h5, back))
    header = read_header(src)
    assert read_header(mid).to_dict() == header.to_dict() == read_header(dst).to_dict()
    for spec in array_specs(header):
        a = src.read(spec.name)
        for other in (mid, dst):
            b = other.read(spec.name)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b, err_msg=spec.name)
    assert src.output_attrs() == mid.output_attrs() == dst.output_attrs()
    assert_same_columns(columns(h5), columns(store))
    assert_same_columns(columns(back), columns(store))
    assert verify_store(h5).ok and verify_store(back).ok


# ---------------------------------------------------------------------------------------------------- merge
def test_merge_views_of_one_teacher(tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.h5"
    synth(a, views=2, run_seed=1)
    synth(b, views=3, run_seed=2, seed=5)
    out = tmp_path / "m.zarr"
    report = merge_stores([a, b], out)
    assert report.mode == "views" and report.num_views == 5
    m, ca, cb = columns(out), columns(a), columns(b)
    ra, rb = 2 * S, 3 * S
    for k in ca:
        if k == "view":
            np.testing.assert_array_equal(m[k], np.arange(5 * S) // S)
            continue
        np.testing.assert_array_equal(m[k][:ra], ca[k], err_msg=k)  # params and outputs copied as stored
        np.testing.assert_array_equal(m[k][ra:], cb[k], err_msg=k)
    h = read_header(open_store(out))
    assert h.num_views == 5 and h.teacher == TEACHER and h.run_seed == 1
    assert [x["run_seed"] for x in h.extra["merged_from"]] == [1, 2]
    assert [x["view_offset"] for x in h.extra["merged_from"]] == [0, 2]
    rep = verify_store(out)
    assert rep.ok and rep.warnings  # views 2..4 no longer follow draw_params(run_seed=1): replay uses stored params
    assert RecordReader(out).teacher_accuracy() is not None


def test_merge_refusals(tmp_path, capsys):
    a = tmp_path / "a.zarr"
    synth(a, views=2, run_seed=1)
    same_seed = tmp_path / "same.zarr"
    synth(same_seed, views=3, run_seed=1)
    with pytest.raises(KdpcError, match=r"2 views.*in more than one input|views are in more than one input"):
        merge_stores([a, same_seed], tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()
    other_data = tmp_path / "od.zarr"
    synth(other_data, run_seed=4, dataset={**DATASET, "fingerprint": "beef"})
    with pytest.raises(KdpcError, match="dataset fingerprint f00d… vs beef…"):
        merge_stores([a, other_data], tmp_path / "m.zarr")
    other_codec = tmp_path / "oc.zarr"
    synth(other_codec, run_seed=4, codec="f16")
    with pytest.raises(KdpcError, match="codec u8log vs f16"):
        merge_stores([a, other_codec], tmp_path / "m.zarr")
    other_aug = tmp_path / "oa.zarr"
    synth(other_aug, run_seed=4, augment=AugmentConfig(rotation="so3").to_dict())
    with pytest.raises(KdpcError, match="augment"):
        merge_stores([a, other_aug], tmp_path / "m.zarr")
    other_teacher = tmp_path / "ot.zarr"
    synth(other_teacher, views=2, run_seed=4, teacher={**TEACHER, "sha256": "b" * 64})
    with pytest.raises(KdpcError, match="ensemble needs the same views, but run_seed 1 vs 4"):
        merge_stores([a, other_teacher], tmp_path / "m.zarr")
    with pytest.raises(KdpcError, match="--weights is for ensembles"):
        merge_stores([a, _seeded(tmp_path)], tmp_path / "m.zarr", weights="1,2")
    code, _, err = cli(capsys, "records", "merge", a, "--out", tmp_path / "m.zarr")
    assert_one_line(code, err, "at least two")
    code, _, err = cli(capsys, "records", "merge", a, same_seed, "--out", tmp_path / "m.zarr")
    assert_one_line(code, err, "more than one input")


def _seeded(tmp_path: Path) -> Path:
    p = tmp_path / "seeded.zarr"
    if not p.exists():
        synth(p, views=1, run_seed=7)
    return p


def test_merge_ensemble_of_teachers(tmp_path, capsys):
    t1, t2 = tmp_path / "t1.zarr", tmp_path / "t2.zarr"
    _, lp1, _ = synth(t1, run_seed=3, codec="f32")
    lp2, _ = realistic_logprobs(S, V, C, seed=11)
    teacher2 = {"arch": "toy-big", "num_params": 456, "sha256": "c" * 64, "metrics": {"oa": 0.95}}
    synth(t2, run_seed=3, codec="f16", logprobs=lp2, teacher=teacher2)
    out = tmp_path / "ens.zarr"
    code, text, err = cli(capsys, "records", "merge", t1, t2, "--out", out, "--weights", "3,1", "--codec", "f32")
    assert code == 0, err
    assert "ensemble" in text
    got = columns(out)
    p1, p2 = np.exp(columns(t1)["logprobs"].astype(np.float64)), np.exp(columns(t2)["logprobs"].astype(np.float64))
    np.testing.assert_allclose(got["logprobs"], np.log(0.75 * p1 + 0.25 * p2), atol=1e-5)
    for k in ("seed", "scale", "translate", "rotation"):
        np.testing.assert_array_equal(got[k], columns(t1)[k])
    h = read_header(open_store(out))
    assert h.teacher["arch"] == "ensemble" and h.teacher["weights"] == [0.75, 0.25]
    assert [t["sha256"] for t in h.teacher["ensemble"]] == ["a" * 64, "c" * 64]
    assert len(h.teacher["sha256"]) == 64 and h.codec == "f32" and h.num_views == V
    assert verify_store(out).ok
    text = format_info(store_info(out))
    assert "ensemble of 2 teachers" in text and "weight 0.75" in text and "toy-big" in text
    code, _, err = cli(capsys, "records", "merge", t1, t2, "--out", tmp_path / "e2.zarr", "--weights", "1")
    assert_one_line(code, err, "--weights has 1 values for 2 stores")
    moved = tmp_path / "moved.zarr"  # same teacher sha as t2, different one from t1, but other parameters
    synth(moved, run_seed=3, teacher=teacher2, augment=AugmentConfig(rotation="up", translate=0.1).to_dict())
    with pytest.raises(KdpcError, match="different data.*augment"):
        merge_stores([t1, moved], tmp_path / "e3.zarr")


# ------------------------------------------------------------------------------------------ concurrent readers
@pytest.mark.slow
def test_two_processes_distill_from_one_store_at_once(tiny_store, tmp_path):
    """Two students trained at the same time from one packed store, read in place (no locks needed): a fresh
    process, and this one while the other runs."""
    pack = tmp_path / "tiny.zarr.zip"
    pack_store(tiny_store, pack)
    args = ["distill", "--records", str(pack), "--student", "pointnet-tiny", "--epochs", "1", "--batch-size", "16",
            "--device", "cpu", "--workers", "0"]
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    other = subprocess.Popen([sys.executable, "-m", "kdpc", *args, "--out", str(tmp_path / "run0")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--out", str(tmp_path / "run1")])
        assert exc.value.code == 0
        out, err = other.communicate(timeout=300)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, (out, err)
    for i in range(2):
        assert (tmp_path / f"run{i}" / "student.pt").is_file()


def test_partseg_stores_share_too(tmp_path):
    """Per-point outputs and anchor features travel like any array: copy, pack, convert, merge views."""
    from kdpc.testing.stores import write_synthetic_seg_store

    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    write_synthetic_seg_store(a, num_samples=8, num_views=2, num_points=32, num_anchors=8, feature_dim=4, run_seed=1)
    write_synthetic_seg_store(b, num_samples=8, num_views=1, num_points=32, num_anchors=8, feature_dim=4, run_seed=2)
    pack = tmp_path / "a.zarr.zip"
    pack_store(a, pack)
    h5 = tmp_path / "a.h5"
    convert_store(pack, h5)
    copy_store(pack, tmp_path / "c.zarr")
    assert tree(tmp_path / "c.zarr") == tree(a)
    idx = np.arange(16)
    want = RecordReader(a).get(idx)
    for other in (pack, h5):
        got = RecordReader(other).get(idx)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    merged = tmp_path / "m.zarr"
    assert merge_stores([a, b], merged).num_views == 3
    assert verify_store(merged).ok
    np.testing.assert_array_equal(RecordReader(merged).get(idx)["features"], want["features"])
    with pytest.raises(KdpcError, match="ensembles are made of classification stores only"):
        merge_stores([a, _with_teacher(a, tmp_path / "t.zarr", "e" * 64)], tmp_path / "e.zarr")


def _with_teacher(src: Path, dst: Path, sha: str) -> Path:
    """A copy of ``src`` whose header names another teacher (as if another checkpoint had been recorded)."""
    import zarr

    copy_store(src, dst)
    g = zarr.open_group(str(dst), mode="r+")
    header = dict(g.attrs["kdpc"])
    header["teacher"] = {**header.get("teacher", {}), "sha256": sha}
    header["checksum"] = header_checksum(header)  # a store written that way, not a damaged one
    g.update_attributes({"kdpc": header})
    return dst

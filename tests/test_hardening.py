"""Untrusted stores and everyday accidents: secrets never written, one writer at a time, bounded decompression, a
checksummed header, and one clear line (never a traceback, never a wrong success) for bad input."""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import google_crc32c
import h5py
import numpy as np
import pytest
import zarr

from conftest import TINY_DATA_OPTS, assert_one_line_error, run_kdpc
from kdpc.checkpoint import load_checkpoint
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, verify_store
from kdpc.store.lease import LeaseInfo, WriterLease
from kdpc.store.schema import header_checksum
from kdpc.store.share import convert_store, pack_store
from kdpc.testing.stores import write_synthetic_store

SECRET = "S3cr3tT0ken9"


# ------------------------------------------------------------------------------------------------- secrets
class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: ARG002
        pass


def test_a_password_or_token_in_a_url_is_never_printed_or_written(tiny_store, tmp_path):
    www = tmp_path / "www"
    shutil.copytree(tiny_store, www / "tiny.zarr")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://alice:{SECRET}@127.0.0.1:{server.server_address[1]}/tiny.zarr"
        out = tmp_path / "run"
        proc = run_kdpc("distill", "--records", url, "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                        "--out", str(out))
        info = run_kdpc("records", "info", url)
        signed = url.replace("tiny.zarr", f"missing.zarr?token={SECRET}x&X-Amz-Signature={SECRET}y")
        bad = run_kdpc("records", "verify", signed, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert bad.returncode == 2
    for text in (proc.stdout, proc.stderr, info.stdout, info.stderr, bad.stdout, bad.stderr):
        assert SECRET not in text
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"student.pt", "last.pt", "config.yaml", "metrics.jsonl"}
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path.name
    provenance = load_checkpoint(out / "student.pt").provenance
    assert provenance["source"]["records"].startswith("http://127.0.0.1:")
    assert str(tmp_path) not in json.dumps(provenance)  # no absolute local paths in a shared checkpoint


def test_library_warnings_and_logs_are_redacted():
    import logging
    import warnings

    from kdpc import secrets

    secrets.install()
    record = logging.getLogger("botocore.test").makeRecord(
        "botocore.test", logging.WARNING, __file__, 1, "GET %s failed for KEYKEYKEY1:SECRETSECRET@bucket",
        (f"https://host/o?X-Amz-Signature={SECRET}",), None)
    assert SECRET not in record.getMessage() and "SECRETSECRET" not in record.getMessage()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
    assert secrets.redact_text(f"s3://AKIAKEYKEY:{SECRET}@bucket/x?token={SECRET}") == "s3://bucket/x"


# --------------------------------------------------------------------------------------------------- lease
HOLD_LEASE = """
import sys, time
from kdpc.store.lease import WriterLease
lease = WriterLease.acquire(sys.argv[1], "kdpc record")
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held(tmp_path):
    """A store whose writer lease another (live) process holds."""
    store = tmp_path / "c.zarr"
    write_synthetic_store(store, 24, 2, 5, chunk_records=16)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(store)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield store, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_with_the_holder_named_and_the_store_untouched(held, tmp_path, tiny_teacher):
    store, holder = held
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    for argv in (["record", "--teacher", str(tiny_teacher), "--device", "cpu", "--overwrite", "--out", str(store)],
                 ["record", "--teacher", str(tiny_teacher), "--device", "cpu", "--resume", "--out", str(store)],
                 ["records", "convert", str(tmp_path / "nothing.zarr"), str(store)]):
        proc = run_kdpc(*argv, check=False)
        if argv[0] == "record":
            assert_one_line_error(proc, "is being written by kdpc record", f"pid {holder.pid}", "--break-lease")
        else:
            assert proc.returncode == 2
    copy = run_kdpc("records", "copy", str(tmp_path / "src.zarr"), str(store), check=False)
    assert copy.returncode == 2
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # --overwrite deleted nothing
    assert verify_store(store).ok


def test_copy_into_a_store_another_process_writes_is_refused(held, tmp_path):
    store, holder = held
    src = tmp_path / "src.zarr"
    write_synthetic_store(src, 24, 2, 5, chunk_records=16)
    assert_one_line_error(run_kdpc("records", "copy", str(src), str(store), check=False), f"pid {holder.pid}")


def test_break_lease_takes_over_and_the_old_holder_stops_writing(tmp_path, monkeypatch):
    import kdpc.store.lease as lease_module

    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.05)
    store = tmp_path / "b.zarr"
    old = WriterLease.acquire(store, "kdpc record")
    with pytest.raises(KdpcError, match="is being written by kdpc record"):
        WriterLease.acquire(store, "kdpc records copy")
    new = WriterLease.acquire(store, "kdpc records copy", break_lease=True)
    time.sleep(0.3)
    with pytest.raises(KdpcError, match="taken over by kdpc records copy"):
        old.check()
    old.release()  # does not delete the new holder's lease
    with pytest.raises(KdpcError, match="kdpc records copy"):
        WriterLease.acquire(store, "kdpc record")
    new.release()
    WriterLease.acquire(store, "kdpc record").release()


def test_a_lease_left_by_a_killed_process_on_this_host_is_taken_over(tmp_path):
    store = tmp_path / "k.zarr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = LeaseInfo(owner="x", command="kdpc record", pid=int(dead.stdout), host=socket.gethostname(),
                     started="2026-01-01T00:00:00+00:00", heartbeat=time.time())
    Path(str(store) + ".lease").write_text(json.dumps(info.__dict__))
    WriterLease.acquire(store, "kdpc record --resume").release()
    info.host = "another-machine"  # a holder elsewhere is never assumed gone
    Path(str(store) + ".lease").write_text(json.dumps(info.__dict__))
    with pytest.raises(KdpcError, match="another-machine"):
        WriterLease.acquire(store, "kdpc record")


def test_a_reader_notices_the_store_replaced_under_it(tmp_path):
    store = tmp_path / "r.zarr"
    write_synthetic_store(store, 24, 2, 5, chunk_records=16)
    reader = RecordReader(store)
    write_synthetic_store(store, 24, 2, 5, chunk_records=16, mode="overwrite", seed=1)
    with pytest.raises(KdpcError, match="was replaced while it was being read"):
        reader.get(np.arange(4))


# ------------------------------------------------------------------------------------------ bounded reads
PEAK_RSS = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(proc.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


def peak_run(*argv: str) -> tuple[int, int, str]:
    """``(exit code, peak RSS MB, stderr)`` of ``kdpc ARGV`` in a fresh process."""
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "kdpc", *argv], env=env,
                          capture_output=True, text=True, timeout=300)
    code, mb = proc.stdout.split()
    return int(code), int(mb), proc.stderr


def with_crc(payload: bytes) -> bytes:
    return payload + np.uint32(google_crc32c.value(payload)).tobytes()


@pytest.fixture
def bomb_store(tmp_path):
    store = tmp_path / "bomb.zarr"
    write_synthetic_store(store, 64, 2, 10, chunk_records=64)
    return store


def test_a_zstd_chunk_claiming_gigabytes_is_refused_without_allocating_them(bomb_store):
    import numcodecs

    frame = numcodecs.Zstd(level=1).encode(np.zeros(64 * 10, dtype=np.uint8))
    assert frame[4] == 0b0110_0000  # single segment, a 2-byte content size, no checksum, no dictionary
    # the same blocks behind a header that says "I hold 2 GiB" (a 4-byte content size field)
    bomb = frame[:4] + bytes([0b1010_0000]) + (2**31 - 1).to_bytes(4, "little") + frame[7:]
    (bomb_store / "output" / "q" / "c" / "0" / "0").write_bytes(with_crc(bomb))
    code, mb, err = peak_run("records", "verify", str(bomb_store))
    assert code == 2 and "declares 2147483647 bytes" in err and "Traceback" not in err
    assert mb < 700, mb
    code, mb, err = peak_run("records", "info", str(bomb_store))
    assert code == 2 and mb < 700 and len(err.strip().splitlines()) == 1


def test_a_blosc_chunk_claiming_gigabytes_is_refused(bomb_store):
    chunk = bomb_store / "scale" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes()[:-4])
    data[4:8] = (2**31 - 1).to_bytes(4, "little")
    chunk.write_bytes(with_crc(bytes(data)))
    report = verify_store(bomb_store)
    assert not report.ok and any("declares 2147483647 bytes" in p for p in report.problems)
    with pytest.raises(KdpcError, match="is damaged"):
        RecordReader(bomb_store).get(np.arange(3))


def test_an_hdf5_deflate_bomb_is_refused_without_inflating_it(bomb_store, tmp_path):
    h5 = tmp_path / "bomb.h5"
    convert_store(bomb_store, h5)
    squeeze = zlib.compressobj(9)
    # 1.5 MB of zeros in ~1.5 KB: small enough to pass the stored-size check, so the inflate bound must catch it
    bomb = squeeze.compress(bytes(1_500_000)) + squeeze.flush()
    with h5py.File(tmp_path / "f.h5", "w") as f:  # let HDF5 compute the fletcher32 of the bomb for us
        f.create_dataset("x", data=np.frombuffer(bomb, np.uint8), chunks=(len(bomb),), fletcher32=True)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        _, signed = f["x"].id.read_direct_chunk((0,))
    with h5py.File(h5, "r+") as f:
        f["output/q"].id.write_direct_chunk((0, 0), signed, filter_mask=0)
    code, mb, err = peak_run("records", "verify", str(h5))
    assert code == 2 and "inflates past the 640 bytes" in err and mb < 700, (mb, err)
    with h5py.File(h5, "r+") as f:  # a bigger bomb is already refused by its stored size
        big = zlib.compressobj(9)
        f["output/q"].id.write_direct_chunk((0, 0), big.compress(bytes(1 << 28)) + big.flush(), filter_mask=0)
    code, mb, err = peak_run("records", "verify", str(h5))
    assert code == 2 and "larger than its 640-byte content" in err and mb < 700, (mb, err)


def test_a_pack_with_compressed_members_is_refused(bomb_store, tmp_path):
    pack = tmp_path / "p.zarr.zip"
    pack_store(bomb_store, pack)
    evil = tmp_path / "evil.zarr.zip"
    with zipfile.ZipFile(pack) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item.filename, data, compress_type=zipfile.ZIP_DEFLATED if "output" in item.filename
                         else zipfile.ZIP_STORED)
    for command in (("records", "verify"), ("records", "info")):
        assert_one_line_error(run_kdpc(*command, str(evil), check=False), "compressed")


# ------------------------------------------------------------------------------------------- header checksum
def edit_header(store: Path, change) -> None:
    g = zarr.open_group(str(store), mode="r+")
    header = dict(g.attrs["kdpc"])
    change(header)
    g.update_attributes({"kdpc": header})


def test_an_edited_header_fails_its_checksum_naming_the_field(bomb_store):
    edit_header(bomb_store, lambda h: h.__setitem__("class_names", [h["class_names"][1], h["class_names"][0],
                                                                   *h["class_names"][2:]]))
    proc = run_kdpc("records", "verify", str(bomb_store), check=False)
    assert_one_line_error(proc, "fails its checksum", "class_names")
    assert_one_line_error(run_kdpc("records", "info", str(bomb_store), check=False), "class_names")


def test_a_flipped_teacher_digest_fails_the_header_checksum(bomb_store):
    edit_header(bomb_store, lambda h: h["teacher"].__setitem__("sha256", "f" + h["teacher"].get("sha256", "0")[1:]))
    assert_one_line_error(run_kdpc("records", "verify", str(bomb_store), check=False), "changed: teacher")


def test_array_shapes_that_disagree_with_a_valid_header_are_refused_before_reading(bomb_store):
    meta = bomb_store / "scale" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"][0] = 145
    meta.write_text(json.dumps(doc))
    with pytest.raises(KdpcError, match="'scale' is float16\\[145, 3\\], the header implies"):
        RecordReader(bomb_store)


def test_a_header_declaring_billions_of_records_allocates_nothing(bomb_store):
    def huge(h):
        h["num_samples"] = 2_000_000_000 // 2
        h["checksum"] = header_checksum(h)  # a consistent-looking header, as a malicious store would carry
    edit_header(bomb_store, huge)
    code, mb, err = peak_run("records", "verify", str(bomb_store))
    assert code == 2 and mb < 700 and "the header implies" in err, (mb, err)


# ------------------------------------------------------------------------------------- one line, right exit
@pytest.mark.parametrize("argv, fragment", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--lr", "nan"], "--lr"),
    (["record", "--chunk-records", "0"], "--chunk-records"),
])
def test_bad_numbers_are_one_line_before_any_work(tiny_teacher, tmp_path, argv, fragment):
    if argv[0] == "record":
        argv = [*argv, "--teacher", str(tiny_teacher), "--out", str(tmp_path / "x.zarr")]
    else:
        argv = [*argv, "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--out", str(tmp_path / "t.pt")]
    assert_one_line_error(run_kdpc(*argv, check=False), fragment)
    assert not (tmp_path / "t.pt").exists() and not (tmp_path / "x.zarr").exists()


def test_distill_refusals_leave_no_run_folder(tiny_store, tmp_path):
    for extra, fragment in ((["--epochs", "0"], "--epochs"), (["--views", "0"], "--views"),
                            (["--temperature", "nan"], "--temperature")):
        out = tmp_path / "run"
        assert_one_line_error(run_kdpc("distill", "--records", str(tiny_store), *extra, "--out", str(out),
                                       check=False), fragment)
        assert not out.exists()
    missing = tmp_path / "nowhere.zarr"
    assert_one_line_error(run_kdpc("distill", "--records", str(missing), "--out", str(tmp_path / "r2"), check=False),
                          "no record store")
    assert not (tmp_path / "r2").exists()


def test_yaml_values_are_checked_against_the_option_types(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: many\n")
    assert_one_line_error(run_kdpc("train", "--config", str(cfg), check=False), "option epochs must be a whole number")
    cfg.write_text("lr: '1e-3'\n")  # a string, not a number: YAML 1.1 reads 1e-3 without a dot as text
    assert_one_line_error(run_kdpc("train", "--config", str(cfg), check=False), "option lr must be a number")


def test_an_unwritable_out_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "3",
                    "--out", str(blocker / "t.pt"), check=False)
    assert_one_line_error(proc, "cannot create the output folder")
    assert "epoch 1/3" not in proc.stdout


def test_a_read_only_out_folder_is_refused_before_training(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        proc = run_kdpc("train", "--model", "pointnet-tiny", *TINY_DATA_OPTS, "--epochs", "3",
                        "--out", str(locked / "t.pt"), check=False)
        assert_one_line_error(proc, "pick a writable --out")
        assert "epoch 1/3" not in proc.stdout
    finally:
        locked.chmod(0o700)


def test_sigterm_is_handled_like_ctrl_c_and_the_run_resumes(tiny_store, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdpc", "distill", "--records", str(tiny_store), "--epochs", "40",
                             "--batch-size", "8", "--device", "cpu", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1].startswith("kdpc: terminated; finished work is kept")
    assert "Traceback" not in err
    resumed = run_kdpc("distill", "--records", str(tiny_store), "--epochs", "40", "--batch-size", "8", "--device",
                       "cpu", "--out", str(out), "--resume")
    assert "resuming after epoch" in resumed.stdout


def test_an_interrupted_copy_says_to_run_the_copy_again(tmp_path):
    from kdpc.store.share import copy_store

    src = tmp_path / "s.zarr"
    write_synthetic_store(src, 24, 2, 5, chunk_records=16)

    def stop(key, action):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_store(src, tmp_path / "d.zarr", on_object=stop)
    with pytest.raises(KdpcError, match="a copy that was interrupted - run the same `kdpc records copy`"):
        RecordReader(tmp_path / "d.zarr")


def test_no_message_names_a_command_that_does_not_exist():
    root = Path(__file__).resolve().parents[1] / "kdpc"
    for path in root.rglob("*.py"):
        assert "`kdpc verify" not in path.read_text(), path

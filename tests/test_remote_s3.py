"""Record stores on S3, against a real S3-compatible server on 127.0.0.1 (moto's server mode) and the real s3fs
client, configured only through the standard AWS_* variables: copy up (interrupted + resumed, corruption healed),
info / verify / distill from s3://, copy back, no credential ever written into a store, fork safety."""

from __future__ import annotations

import json
import logging
import multiprocessing
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kdpc.cli import main
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, verify_store
from kdpc.testing.stores import write_synthetic_store
from kdpc.store.backends import open_store
from kdpc.store.share import convert_store, copy_store, merge_stores

BUCKET = "kdpc-team"
ACCESS, SECRET = "AKIAKDPCTESTONLY0001", "kdpc-secret-do-not-store-7f3a9c"


@pytest.fixture(scope="module")
def s3():
    s3fs = pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)  # the standard variable for S3-compatible servers
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(Path("/nonexistent/aws-config")))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path("/nonexistent/aws-credentials")))
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield SimpleNamespace(endpoint=endpoint, host=f"{host}:{port}", fs=fs)
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def url(name: str) -> str:
    return f"s3://{BUCKET}/{name}"


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def s3_tree(fs, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    root = f"{BUCKET}/{prefix}"
    return {k[len(root) + 1 :]: fs.cat_file(k) for k in sorted(fs.find(root))}


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def synth(path, **kw):
    return write_synthetic_store(path, 30, 3, 6, chunk_records=64, labels=np.arange(30) % 6,  # 2 blocks
                                 teacher={"arch": "toy", "sha256": "a" * 64}, dataset={"fingerprint": "f00d"}, **kw)


@pytest.mark.slow
def test_copy_info_verify_distill_from_s3(s3, tiny_store, tmp_path, capsys):
    target = url("tiny.zarr")
    code, out, err = cli(capsys, "records", "copy", tiny_store, target)
    assert code == 0, err
    assert s3_tree(s3.fs, "tiny.zarr") == tree(tiny_store)  # every object, byte for byte

    code, out, _ = cli(capsys, "records", "info", target)
    assert code == 0
    header = open_store(tiny_store).header_dict()
    for text in (target, "pointnet-tiny", header["teacher"]["sha256"][:16], header["dataset"]["fingerprint"][:16],
                 "augment", "u8log", "made by", "bytes/record"):
        assert text in out, (text, out)
    code, out, _ = cli(capsys, "records", "verify", target)
    assert code == 0 and out.strip().endswith("OK")

    run = tmp_path / "run"
    code, out, err = cli(capsys, "distill", "--records", target, "--student", "pointnet-tiny", "--epochs", "1",
                         "--batch-size", "16", "--device", "cpu", "--workers", "1", "--out", run)
    assert code == 0, err
    assert (run / "student.pt").is_file() and f"from {target}" in out

    back = tmp_path / "back.zarr"
    copy_store(target, back)
    assert tree(back) == tree(tiny_store)


def test_interrupted_upload_resumes_and_damage_is_recopied(s3, tmp_path):
    src = tmp_path / "a.zarr"
    synth(src)
    target = url("resume.zarr")
    calls = []

    def interrupt(key, action):
        calls.append(key)
        if len(calls) == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_store(src, target, on_object=interrupt)
    with pytest.raises(KdpcError, match="incomplete"):
        RecordReader(target)
    report = copy_store(src, target)
    assert report.skipped >= 8 and report.copied + report.skipped == report.objects
    assert s3_tree(s3.fs, "resume.zarr") == tree(src)
    assert verify_store(target).ok

    key = f"{BUCKET}/resume.zarr/translate/c/1/0"  # block 1
    data = bytearray(s3.fs.cat_file(key))
    data[-1] ^= 0xFF  # the crc32c no longer matches
    s3.fs.pipe_file(key, bytes(data))
    report = verify_store(target)
    assert not report.ok and any("'translate' chunk 1" in p for p in report.problems)
    again = copy_store(src, target)
    assert again.copied == 2  # the damaged chunk + the root metadata (incomplete while fixing, complete after)
    assert verify_store(target).ok and s3_tree(s3.fs, "resume.zarr") == tree(src)


def test_no_credentials_or_endpoint_in_any_store(s3, tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    synth(a, run_seed=1)
    synth(b, run_seed=2, seed=4)
    copy_store(a, url("cred/a.zarr"))
    copy_store(b, url("cred/b.zarr"))
    merged = tmp_path / "m.zarr"
    merge_stores([url("cred/a.zarr"), url("cred/b.zarr")], merged)
    h5 = tmp_path / "c.h5"
    convert_store(url("cred/a.zarr"), h5)
    copy_store(merged, url("cred/m.zarr"))
    blobs = [v for k, v in s3_tree(s3.fs, "cred").items() if k.endswith("zarr.json")]
    blobs += [p.read_bytes() for p in merged.rglob("zarr.json")]
    import h5py

    with h5py.File(h5, "r") as f:
        blobs += [str(dict(f.attrs)).encode(), str(dict(f["output"].attrs)).encode()]
    needles = [ACCESS, SECRET, s3.host, s3.endpoint, "AWS_", "aws_access", "secret"]
    for blob in blobs:
        text = blob.decode("utf-8", "replace")
        for needle in needles:
            assert needle.lower() not in text.lower(), (needle, text[:200])


def _child_read(reader, records, queue):
    try:
        queue.put(("ok", reader.get(records)["logprobs"]))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent
        queue.put(("error", repr(exc)))


def test_reader_reopens_its_s3_handle_after_fork_and_pickle(s3, tmp_path):
    src = tmp_path / "f.zarr"
    synth(src)
    target = url("fork.zarr")
    copy_store(src, target)
    reader = RecordReader(target)  # touches s3 in this process: header, flags, labels
    records = np.array([0, 31, 89])
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_read, args=(reader, records, queue))
    child.start()
    status, value = queue.get(timeout=60)
    child.join(30)
    assert status == "ok", value
    expected = RecordReader(src).get(records)["logprobs"]
    np.testing.assert_array_equal(value, expected)
    clone = pickle.loads(pickle.dumps(reader))  # what a spawned DataLoader worker gets
    np.testing.assert_array_equal(clone.get(records)["logprobs"], expected)
    np.testing.assert_array_equal(reader.get(records)["logprobs"], expected)


def test_remote_refusals(s3, tmp_path, capsys):
    src = tmp_path / "r.zarr"
    synth(src)
    copy_store(src, url("ro.zarr"))
    # object storage takes writes (kdpc record --out s3://...); plain HTTP never does
    with pytest.raises(KdpcError, match="read-only"):
        open_store("https://example.invalid/ro.zarr", "r+")
    code, _, err = cli(capsys, "records", "info", url("nothing-here.zarr"))
    assert code == 2 and err.startswith("kdpc: error: no record store at s3://") and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "records", "copy", src, "s3://no-such-bucket-kdpc/x.zarr")
    assert code == 2 and "kdpc: error: copy to s3://no-such-bucket-kdpc/x.zarr stopped" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "records", "copy", src, "https://example.invalid/x.zarr")
    assert code == 2 and "read-only" in err


KILLABLE_RECORD = """
import os, sys, time
from pathlib import Path
import kdpc.recorder.run as run

Path(sys.argv[1], f"pid.{os.environ['RANK']}").write_text(str(os.getpid()))
columns = run._block_columns


def slow_block_columns(*args, **kwargs):
    time.sleep(0.4)
    return columns(*args, **kwargs)


run._block_columns = slow_block_columns
from kdpc.cli import main

main(sys.argv[2:])
"""


@pytest.mark.slow
def test_two_ranks_record_straight_into_s3_killed_and_resumed_equal_a_local_store(s3, tiny_teacher, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from kdpc.testing.stores import store_contents

    args = ["record", "--teacher", str(tiny_teacher), "--views", "3", "--chunk-records", "16", "--batch-size", "8",
            "--device", "cpu"]
    local = tmp_path / "local.zarr"
    subprocess.run([sys.executable, "-m", "kdpc", *args, "--out", str(local)], check=True, capture_output=True)
    target = url("recorded.zarr")
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE_RECORD)
    env = {**os.environ, "KDPC_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.Popen([*run, str(script), str(tmp_path), *args, "--out", target], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while done < 3:  # a few blocks land in the bucket, then rank 1 is killed -9
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no block reached the bucket in time"
            time.sleep(0.2)
            try:
                done = int(RecordReader(target, require_complete=False).done_records().sum() // 16)
            except KdpcError:
                done = 0
        os.kill(int((tmp_path / "pid.1").read_text()), signal.SIGKILL)
        proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(KdpcError, match="incomplete"):
        RecordReader(target)
    resumed = subprocess.run([*run, "-m", "kdpc", *args, "--out", target, "--resume"], env=env, capture_output=True,
                             text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming:" in resumed.stdout
    (header_s3, arrays_s3), (header_local, arrays_local) = store_contents(target), store_contents(local)
    assert header_s3 == header_local and sorted(arrays_s3) == sorted(arrays_local)
    for name in arrays_local:
        np.testing.assert_array_equal(arrays_s3[name], arrays_local[name], err_msg=name)
    assert not s3.fs.exists(f"{BUCKET}/recorded.zarr.lease")  # the lease went with the writer
    s3.fs.invalidate_cache()
    assert ACCESS not in json.dumps(s3_tree(s3.fs, "recorded.zarr"), default=str)
    distilled = subprocess.run([sys.executable, "-m", "kdpc", "distill", "--records", target, "--epochs", "1",
                                "--batch-size", "16", "--device", "cpu", "--out", str(tmp_path / "run")], env=env,
                               capture_output=True, text=True, timeout=180)
    assert distilled.returncode == 0, distilled.stderr
    assert (tmp_path / "run" / "student.pt").exists()

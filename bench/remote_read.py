"""Remote read benchmark: how long ``RecordReader(...).load_all()`` takes for one store kept locally, as a
``.zarr.zip`` pack, behind plain HTTP, and on S3, and the ratio to the local folder. Prints a markdown table.

    .venv/bin/python bench/remote_read.py                           # 20,000 samples x 10 views, 40 classes
    .venv/bin/python bench/remote_read.py --samples 5000 --views 4  # quicker

S3 is moto's S3-compatible server (``moto[server]``, installed by ``.[test]``) running as a separate process on
127.0.0.1, reached through the real s3fs client configured only by AWS_* variables; HTTP is ``http.server`` in a
thread of this process. Both are loopback, so the numbers measure request overhead and server cost, not a real
network: with a real bucket add latency x (views x arrays) requests / concurrency. The store is written by
``write_synthetic_store`` (the default codec ``u8log``, default chunking) and uploaded with ``copy_store``; the upload
time is reported too. Every reader's columns are checked equal to the local ones.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdpc.store import RecordReader  # noqa: E402
from kdpc.testing.stores import write_synthetic_store  # noqa: E402
from kdpc.store.share import copy_store, pack_store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise SystemExit("moto server did not start (pip install 'moto[server]')")
    return proc, endpoint


class QuietHandler(SimpleHTTPRequestHandler):
    def list_directory(self, path):  # noqa: ARG002 - static hosting: no listings
        self.send_error(404)
        return None

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients closing kept-alive connections early
        pass


def timed_load(location, repeats: int) -> tuple[float, dict]:
    best, cols = float("inf"), {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        with RecordReader(location) as reader:
            cols = reader.load_all()
        best = min(best, time.perf_counter() - t0)
    return best, cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--chunk-records", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3, help="best of N loads per location")
    args = ap.parse_args()

    os.environ.setdefault("KDPC_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        local = root / "bench.zarr"
        write_synthetic_store(local, args.samples, args.views, args.classes, chunk_records=args.chunk_records)
        pack = root / "bench.zarr.zip"
        pack_store(local, pack)
        size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
        n_obj = sum(1 for p in local.rglob("*") if p.is_file())

        httpd = QuietServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        http_url = f"http://127.0.0.1:{httpd.server_address[1]}/bench.zarr"

        moto, endpoint = start_moto()
        try:
            os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=endpoint,
                              AWS_DEFAULT_REGION="us-east-1")
            import s3fs

            s3fs.S3FileSystem(skip_instance_cache=True).mkdir("kdpc-bench")
            s3_url = "s3://kdpc-bench/bench.zarr"
            up = copy_store(local, s3_url)

            rows = []
            base, ref = timed_load(local, args.repeats)
            for name, loc in (("local folder", local), (".zarr.zip pack", pack), ("http:// (static server)", http_url),
                              ("s3:// (moto server)", s3_url)):
                secs, cols = (base, ref) if loc is local else timed_load(loc, args.repeats)
                for k in ref:
                    assert np.array_equal(cols[k], ref[k]), (name, k)
                rows.append((name, secs, secs / base))
        finally:
            moto.kill()
            moto.wait()
            httpd.shutdown()

    records = args.samples * args.views
    print(f"\nRecordReader.load_all(): {records:,} records ({args.samples:,} samples x {args.views} views, "
          f"{args.classes} classes, u8log, chunk {args.chunk_records}), {size / 1e6:.2f} MB in {n_obj} objects; "
          f"best of {args.repeats}\n")
    print("| location | load_all s | records/s | MB/s | time vs local |")
    print("|---|---:|---:|---:|---:|")
    for name, secs, ratio in rows:
        print(f"| {name} | {secs:.3f} | {records / secs:,.0f} | {size / 1e6 / secs:.1f} | {ratio:.1f}x |")
    print(f"\nupload (kdpc records copy local -> s3): {up.seconds:.2f} s for {up.objects} objects, "
          f"{up.bytes_copied / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

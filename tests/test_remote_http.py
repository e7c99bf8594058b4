"""A record store served read-only over plain HTTP (``http.server`` on 127.0.0.1, directory listings switched off,
as on most static hosts) and read through an http:// URL: RecordReader, info, verify, copy and distill's reader
path all work without listing; a missing chunk is still found (by asking for it)."""

from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from kdpc.cli import main
from kdpc.errors import KdpcError
from kdpc.store import RecordReader, store_info, verify_store
from kdpc.testing.stores import write_synthetic_store
from kdpc.store.backends import open_store
from kdpc.store.share import copy_store

pytest.importorskip("aiohttp")


class StaticHandler(SimpleHTTPRequestHandler):
    """Files only: no directory index pages, so nothing can be listed. Counts requests by method."""

    counts: dict[str, int] = {}

    def list_directory(self, path):  # noqa: ARG002
        self.send_error(404, "no listings here")
        return None

    def send_head(self):
        StaticHandler.counts[self.command] = StaticHandler.counts.get(self.command, 0) + 1
        return super().send_head()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    write_synthetic_store(root / "a.zarr", 40, 3, 8, chunk_records=50, labels=np.arange(40) % 8,
                          teacher={"arch": "toy", "sha256": "d" * 64, "num_params": 7, "metrics": {"oa": 0.5}},
                          dataset={"name": "toy", "split": "train", "fingerprint": "abc123"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(StaticHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_read_info_verify_copy_over_http(served, tmp_path, capsys):
    root, base = served
    url = f"{base}/a.zarr"
    listing = StaticHandler.counts.copy()
    with RecordReader(url) as remote_reader, RecordReader(root / "a.zarr") as local_reader:
        got, want = remote_reader.load_all(), local_reader.load_all()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert StaticHandler.counts.get("GET", 0) > listing.get("GET", 0)

    info = store_info(url)
    assert info["complete"] and info["backend"] == "zarr" and info["teacher"]["sha256"] == "d" * 64
    assert info["bytes_on_disk"] == store_info(root / "a.zarr")["bytes_on_disk"]  # summed from known keys
    with pytest.raises(SystemExit) as exc:
        main(["records", "info", url])
    assert exc.value.code == 0 and "toy" in capsys.readouterr().out
    report = verify_store(url)
    assert report.ok and report.checked_chunks > 0
    with pytest.raises(SystemExit) as exc:
        main(["records", "verify", url])
    assert exc.value.code == 0

    down = tmp_path / "down.zarr"
    copy_store(url, down)  # a source that cannot be listed: every key comes from the metadata
    files = {str(p.relative_to(down)): p.read_bytes() for p in down.rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(root / "a.zarr")): p.read_bytes()
                     for p in (root / "a.zarr").rglob("*") if p.is_file()}

    with pytest.raises(KdpcError, match="read-only"):
        open_store(url, "r+")


def test_missing_chunk_over_http_is_refused(served, capsys):
    root, base = served
    broken = root / "broken.zarr"
    shutil.copytree(root / "a.zarr", broken)
    (broken / "output" / "q" / "c" / "1" / "0").unlink()
    with pytest.raises(KdpcError, match=r"'output/q' chunk 1: chunk object is missing"):
        RecordReader(f"{base}/broken.zarr").load_all()
    assert not verify_store(f"{base}/broken.zarr").ok
    with pytest.raises(SystemExit) as exc:
        main(["records", "copy", f"{base}/broken.zarr", str(root / "never.zarr")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "chunk 1 is missing" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["records", "info", f"{base}/nothing.zarr"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("kdpc: error: no record store at http://")


def test_url_credentials_are_not_echoed():
    from kdpc.store.locations import redact

    assert redact("https://alice:s3cret@host.example/x.zarr?X-Amz-Signature=abc") == "https://host.example/x.zarr"
    assert redact(Path("/a/b.zarr")) == "/a/b.zarr"

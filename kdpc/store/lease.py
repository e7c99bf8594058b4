"""One writer at a time: an exclusive, heart-beaten writer lease per store.

``STORE.lease`` (a file beside a local store, an object beside a remote one) is created exclusively (``O_EXCL``
locally, a conditional "create" put on object storage) by every command that writes a store - record (create,
resume, overwrite), copy, unpack, merge, convert - and deleted when it finishes. It names its holder (command, pid,
host, start) and carries a heartbeat the holder refreshes every ``HEARTBEAT_S`` seconds. A second writer gets one
line naming the holder. A lease whose holder is a process on this host that no longer exists (``kill -9``) is
taken over; any other lease is broken only on request (``--break-lease``). A holder whose lease was broken stops
before its next block.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import KdpcError
from . import locations

SUFFIX = ".lease"
HEARTBEAT_S = 15.0


@dataclass
class LeaseInfo:
    owner: str
    command: str
    pid: int
    host: str
    started: str
    heartbeat: float  # unix time of the last refresh

    def describe(self) -> str:
        age = max(0.0, time.time() - float(self.heartbeat))
        return (f"{self.command} (pid {self.pid} on {self.host}, since {self.started}, last heartbeat "
                f"{_age(age)} ago)")

    def holder_is_gone(self) -> bool:
        """True when the holder was a process on this host that has exited (a killed run left its lease)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(int(self.pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError, ValueError):
            return False
        return False


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class _LocalFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, data: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise KdpcError(f"cannot create the writer lease {self.path} ({exc.strerror or exc}); is the folder "
                            "writable?") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def replace(self, data: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def delete(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class _RemoteFile:
    def __init__(self, url: str) -> None:
        from fsspec.core import url_to_fs

        self.fs, self.path = url_to_fs(url)
        self.url = locations.redact(url)

    def create(self, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self.path, data, mode="create")  # S3: a conditional put (If-None-Match: *)
        except FileExistsError:
            return False
        except NotImplementedError:  # a filesystem without conditional writes: check, write, read back
            if self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, data)
            time.sleep(0.2)
            return self.read() == data
        return True

    def read(self) -> bytes | None:
        try:
            return self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None

    def replace(self, data: bytes) -> None:
        self.fs.pipe_file(self.path, data)

    def delete(self) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass


class WriterLease:
    """Held while a command writes one store; see the module docstring. Use ``acquire`` and ``release``."""

    def __init__(self, store: str, file: Any, info: LeaseInfo) -> None:
        self.store = store
        self._file = file
        self.info = info
        self.lost_to: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="kdpc-lease-heartbeat", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, path: Any, command: str, break_lease: bool = False) -> "WriterLease":
        store = locations.redact(path)
        local = locations.local_path(path)
        file: Any = _LocalFile(Path(str(local).rstrip("/") + SUFFIX)) if local is not None else \
            _RemoteFile(str(path).rstrip("/") + SUFFIX)
        info = LeaseInfo(owner=uuid.uuid4().hex, command=command, pid=os.getpid(), host=socket.gethostname(),
                         started=datetime.now(timezone.utc).replace(microsecond=0).isoformat(), heartbeat=time.time())
        for _attempt in range(3):
            if file.create(_encode(info)):
                return cls(store, file, info)
            holder = _decode(file.read())
            if holder is None:
                time.sleep(0.1)  # released meanwhile, or its creator is still writing it: look again
                continue
            if break_lease or holder.holder_is_gone():
                file.delete()
                continue
            raise KdpcError(f"{store} is being written by {holder.describe()}; wait for it to finish, or, if that "
                            "process is gone, pass --break-lease")
        raise KdpcError(f"could not take the writer lease of {store}: another process keeps taking it")

    def check(self) -> None:
        """Raise if another process broke this lease (then nothing more may be written)."""
        if self.lost_to is not None:
            raise KdpcError(f"the writer lease of {self.store} was taken over by {self.lost_to}; stopped writing")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        holder = _decode(self._file.read())
        if holder is not None and holder.owner == self.info.owner:
            self._file.delete()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder = _decode(self._file.read())
                if holder is None or holder.owner != self.info.owner:
                    self.lost_to = holder.describe() if holder is not None else "someone who deleted it"
                    return
                self.info.heartbeat = time.time()
                self._file.replace(_encode(self.info))
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried; the write path reports real errors
                continue


def _encode(info: LeaseInfo) -> bytes:
    return json.dumps(asdict(info)).encode()


def _decode(data: bytes | None) -> LeaseInfo | None:
    if not data:
        return None
    try:
        return LeaseInfo(**json.loads(data))
    except (ValueError, TypeError):
        return LeaseInfo(owner="?", command="an unknown writer (unreadable lease)", pid=-1, host="?",
                         started="?", heartbeat=0.0)

"""Where a record store lives, in one place: a local folder, a single-file pack (``*.zarr.zip``) or a URL.

Locations kdpc understands (``kind(path)``):

``local``   a folder (zarr) or an ``.h5``/``.hdf5`` file; ``file://PATH`` is the same thing.
``zip``     a local ``*.zip`` (a packed zarr store, ``kdpc records pack``), read in place, read-only.
``url``     ``s3://``, ``gs://``, ``https://``, ``http://``, ... read through fsspec (``s3fs`` for S3: ``pip install
            kdpc[s3]``; ``gcsfs`` for GCS). Remote stores open **read-only**; ``kdpc records copy`` writes them.

Credentials and endpoints come only from the standard places - ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` (S3-compatible servers such as MinIO), ``~/.aws``, fsspec's own config
(``~/.config/fsspec/*.json``, ``FSSPEC_S3_*`` variables) - which the filesystem libraries read themselves. kdpc
never passes them around, so nothing here can write them into a store or a message. URLs are shown with any
``user:password@`` part removed (``redact``).

Fork safety: an fsspec async filesystem refuses to run in a forked child ("not fork-safe"), and a zip file handle
shared with a child shares its file offset. ``RecordReader`` therefore opens its backend per process (it reopens
lazily when ``os.getpid()`` changed), and everything else opens a store for one call only.

``KeyStore`` is the bytes-level view of a zarr store (``get``/``put``/``digest`` by key, batched and concurrent)
that copy and pack use; it needs no directory listing, so plain HTTP servers work as a source.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from fsspec.utils import get_protocol

from ..errors import KdpcError, exception_line
from ..secrets import redact_url

ZIP_SUFFIX = ".zip"
READ_ONLY_SCHEMES = ("http", "https")  # no way to write there
STORAGE_OPTIONS = {"use_listings_cache": False}  # the only fsspec option kdpc sets; credentials never pass here
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


# ------------------------------------------------------------------------------------------------ locations
def scheme(path: Any) -> str:
    """The URL scheme (``s3``, ``https``, ``file``...) or ``""`` for plain paths and store objects."""
    if isinstance(path, str) and "://" in path:
        return get_protocol(path).lower()
    return ""


def is_url(path: Any) -> bool:
    """A URL other than ``file://`` (those are local paths)."""
    return scheme(path) not in ("", "file")


def local_path(path: Any) -> Path | None:
    """The local filesystem path of ``path`` (``file://`` stripped), or None for URLs and store objects."""
    if isinstance(path, os.PathLike):
        return Path(path)
    if isinstance(path, str):
        if scheme(path) == "file":
            return Path(path[len("file://") :])
        if not is_url(path):
            return Path(path)
    return None


def is_zip(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and str(path).lower().rstrip("/").endswith(ZIP_SUFFIX)


def kind(path: Any) -> str:
    """``local``, ``zip``, ``url`` or ``object`` (a zarr store / fsspec mapper passed in directly)."""
    if isinstance(path, (str, os.PathLike)):
        if is_url(path):
            return "url"
        return "zip" if is_zip(path) else "local"
    return "object"


def redact(path: Any) -> str:
    """``path`` for messages and provenance: ``user:password@`` and query strings (signed URLs) removed."""
    if not isinstance(path, str) or not is_url(path):
        return str(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    return redact_url(path)


def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


# ---------------------------------------------------------------------------------------------- zarr stores
def zarr_store(path: Any, mode: str = "r") -> Any:
    """Something ``zarr.open_group(store=...)`` accepts, for ``mode`` ``r`` (read-only) or ``r+``/``w`` (writable).

    Local paths -> ``LocalStore``; ``*.zip`` -> ``ZipStore`` (read-only); URLs -> ``FsspecStore.from_url`` (read-only
    unless ``mode`` asks to write: only ``kdpc records copy`` does); store objects pass through unchanged.
    """
    import zarr.storage

    read_only = mode == "r"
    lp = local_path(path)
    if lp is not None:
        if is_zip(lp):
            if not read_only:
                raise KdpcError(f"{lp}: a .zip store is read-only; record into a folder and `kdpc records pack` it")
            if not lp.is_file():
                raise KdpcError(f"no record store at {lp}")
            check_pack(lp)
            return zarr.storage.ZipStore(lp, mode="r")
        return zarr.storage.LocalStore(lp, read_only=read_only)
    if isinstance(path, str):
        if not read_only and scheme(path) in READ_ONLY_SCHEMES:
            raise KdpcError(f"{redact(path)}: {scheme(path)}:// locations are read-only; copy to s3://, gs:// or a folder")
        if is_zip(path):
            raise KdpcError(f"{redact(path)}: a packed store must be local to be read in place; fetch it first "
                            "(or `kdpc records unpack` it to a folder / bucket)")
        try:
            # no listings cache: a cached listing goes stale when another process uploads, repairs or deletes
            # objects (and would make an old ETag look current to `copy`)
            return zarr.storage.FsspecStore.from_url(path, read_only=read_only, storage_options=dict(STORAGE_OPTIONS))
        except ImportError as exc:
            raise KdpcError(f"cannot open {redact(path)}: {exc} ({_extra_hint(path)})") from None
        except ValueError as exc:
            raise KdpcError(f"cannot open {redact(path)}: {exc}") from None
    return path  # a zarr Store, or an fsspec mapper zarr understands


def check_pack(path: Path) -> None:
    """A pack holds its objects *stored* (``kdpc records pack``; chunks are compressed already), so no member can
    inflate: refuse a zip with compressed members (a zip bomb) or one whose directory is damaged."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise KdpcError(f"{path} is not a readable pack ({exception_line(exc)}); it is damaged") from None
    size = path.stat().st_size
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED or m.file_size != m.compress_size or m.file_size > size:
            raise KdpcError(f"{path}: member {m.filename!r} is compressed or larger than the file; packs made by "
                            "`kdpc records pack` store their objects as they are - refusing it")


def _extra_hint(path: str) -> str:
    s = scheme(path)
    return {"s3": "pip install 'kdpc[s3]'", "gs": "pip install gcsfs", "gcs": "pip install gcsfs",
            "http": "pip install 'kdpc[http]'", "https": "pip install 'kdpc[http]'"}.get(s, f"install the fsspec filesystem for {s}://")


def fsspec_parts(store: Any) -> tuple[Any, str] | None:
    """``(async filesystem, root path)`` of an ``FsspecStore``, else None."""
    fs, root = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is None or root is None:
        return None
    return fs, root


def lists_cheaply(store: Any) -> bool:
    """Whether listing the store's keys is reliable and cheap (local folders, zips, object stores), as opposed to
    plain HTTP, where "listing" means scraping an HTML index page that a server may not even have."""
    parts = fsspec_parts(store)
    if parts is None:
        return bool(getattr(store, "supports_listing", False))
    protocol = parts[0].protocol
    protocols = protocol if isinstance(protocol, (tuple, list)) else (protocol,)
    return not any(p in READ_ONLY_SCHEMES for p in protocols)


def sync(coro: Any) -> Any:
    """Run a coroutine on zarr's event loop (the one its async stores live on)."""
    from zarr.core.sync import sync

    return sync(coro)


async def gather_limited(coros: Sequence[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def run(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


def existing_keys(store: Any, keys: Iterable[str], prefix: str = "", concurrency: int = 16) -> set[str]:
    """Which of ``keys`` exist, by listing ``prefix`` where that is cheap, else one ``exists`` per key (HTTP)."""
    keys = list(keys)
    if not keys:
        return set()
    if lists_cheaply(store):
        async def listed() -> set[str]:
            return {k async for k in store.list_prefix(prefix)}

        try:
            found = sync(listed())
            return {k for k in keys if k in found}
        except (NotImplementedError, OSError):
            pass
    flags = sync(gather_limited([store.exists(k) for k in keys], concurrency))
    return {k for k, ok in zip(keys, flags) if ok}


# --------------------------------------------------------------------------------------------- bytes by key
def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def crc32c_ok(chunk: bytes) -> bool:
    """Whether a zarr chunk ending in the ``crc32c`` codec's 4 checksum bytes matches its checksum."""
    import google_crc32c

    if len(chunk) < 4:
        return False
    return np.uint32(google_crc32c.value(chunk[:-4])).tobytes() == chunk[-4:]


class KeyStore:
    """Bytes by key on a zarr store (any kind: local, zip, fsspec). Batched, concurrent, no listing needed."""

    def __init__(self, store: Any, location: str, concurrency: int = 16) -> None:
        self.store = store
        self.location = location
        self.concurrency = concurrency
        parts = fsspec_parts(store)
        self._fs, self._root = parts if parts is not None else (None, None)

    @classmethod
    def open(cls, path: Any, mode: str = "r") -> "KeyStore":
        store = zarr_store(path, mode)
        if mode != "r" and local_path(path) is not None:
            local_path(path).mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        return cls(store, redact(path))

    # ------------------------------------------------------------------------------------------- reads
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        from zarr.core.buffer import default_buffer_prototype

        proto = default_buffer_prototype()

        async def one(k: str) -> bytes | None:
            buf = await self.store.get(k, prototype=proto)
            return None if buf is None else buf.to_bytes()

        return sync(gather_limited([one(k) for k in keys], self.concurrency))

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def server_digests(self, keys: Sequence[str]) -> list[tuple[int, str] | None | bool] | None:
        """``(size, md5)`` per key from object metadata where the server keeps an MD5 (S3 ETags of single-part
        uploads), ``None`` for a missing key, ``False`` where the metadata has no usable MD5. Returns None for
        stores without such metadata (local folders, zips, HTTP): their digests come from the bytes."""
        if self._fs is None or "s3" not in _protocols(self._fs):
            return None
        fs, root = self._fs, self._root

        async def one(k: str) -> tuple[int, str] | None | bool:
            try:
                info = await fs._info(f"{root}/{k}", refresh=True)
            except FileNotFoundError:
                return None
            etag = str(info.get("ETag") or info.get("etag") or "").strip('"').lower()
            return (int(info.get("size", -1)), etag) if _MD5_ETAG.match(etag) else False

        try:
            return sync(gather_limited([one(k) for k in keys], self.concurrency))
        except OSError:
            return None

    def digests(self, keys: Sequence[str]) -> tuple[list[tuple[int, str] | None], dict[str, bytes]]:
        """``(size, md5)`` of each key (None when missing), cheaply where the server knows it; also returns the
        bytes that had to be read for it (so a caller does not fetch them twice)."""
        out: list[tuple[int, str] | None] = [None] * len(keys)
        fetched: dict[str, bytes] = {}
        server = self.server_digests(keys)
        todo = []
        for i, k in enumerate(keys):
            d = server[i] if server is not None else False
            if d is False:
                todo.append(i)
            else:
                out[i] = d  # type: ignore[assignment]
        if todo:
            data = self.get_many([keys[i] for i in todo])
            for i, b in zip(todo, data):
                if b is not None:
                    out[i] = (len(b), md5(b))
                    fetched[keys[i]] = b
        return out, fetched

    # ------------------------------------------------------------------------------------------ writes
    def put_many(self, items: dict[str, bytes]) -> None:
        from zarr.core.buffer import default_buffer_prototype

        proto = default_buffer_prototype()
        sync(gather_limited([self.store.set(k, proto.buffer.from_bytes(v)) for k, v in items.items()],
                              self.concurrency))

    def put(self, key: str, data: bytes) -> None:
        self.put_many({key: data})

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return tuple(p) if isinstance(p, (tuple, list)) else (p,)

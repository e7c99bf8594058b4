"""A cache of parsed splits, so loading a folder of files a second time reads one ``.npz`` instead of every file.

An entry is keyed by everything its arrays depend on (each file's path, size and modification time, the options,
the parser version); a changed, added or removed file gives another key. Entries live in ``$KDPC_CACHE_DIR``
(default ``$XDG_CACHE_HOME/kdpc`` or ``~/.cache/kdpc``), are written atomically and read with
``allow_pickle=False``; a cache that cannot be written or read is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def cache_dir() -> Path:
    if os.environ.get("KDPC_CACHE_DIR"):
        return Path(os.environ["KDPC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kdpc"


def cache_key(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached_arrays(kind: str, key: str, build: Callable[[], dict[str, np.ndarray]],
                  enabled: bool = True) -> dict[str, np.ndarray]:
    """``build()``'s arrays, from the cache entry ``kind/key`` when there is one (then ``build`` is not called)."""
    if not enabled:
        return build()
    path = cache_dir() / kind / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError):  # no entry yet, or a damaged one: build it again
        pass
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{key}.", suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **arrays)
        os.replace(tmp.name, path)
    except OSError:  # a read-only or full cache folder: work without the cache
        try:
            os.unlink(tmp.name)
        except (OSError, NameError):
            pass
    return arrays

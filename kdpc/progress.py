"""One place that decides how progress bars look: shown on a terminal, silent in logs and tests."""

from __future__ import annotations

import os
from typing import Any

from tqdm import tqdm


def progress(iterable: Any = None, *, disable: bool | None = None, **kwargs: Any) -> tqdm:
    """``disable=None`` lets tqdm switch itself off when stderr is not a terminal (CI logs, pipes)."""
    if os.environ.get("KDPC_NO_PROGRESS"):
        disable = True
    return tqdm(iterable, disable=disable, dynamic_ncols=True, mininterval=0.5, **kwargs)

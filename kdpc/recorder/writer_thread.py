"""Compression and writing overlap the next teacher batch: finished blocks go to a background thread."""

from __future__ import annotations

import queue
import threading
from typing import Any


class BackgroundBlockWriter:
    """Feeds ``writer.write_block`` from a bounded queue; re-raises the writer's error in the caller's thread."""

    def __init__(self, writer: Any, max_pending: int = 2) -> None:
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kdpc-block-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._writer.write_block(*item)
                except BaseException as exc:  # re-raised in the main thread
                    self._error = exc

    def submit(self, block: int, columns: dict[str, Any]) -> None:
        self._raise_if_failed()
        self._queue.put((block, columns))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

"""Secrets never leave the process: URLs lose their ``user:password@`` part and their query string (tokens, signed
parameters) wherever kdpc prints, logs or stores them, and absolute local paths are cut to their last component in
anything meant to be shared (checkpoints, run configs).

``install()`` (called by the CLI) also redacts what libraries print: warnings (zarr, fsspec) and log records
(botocore, aiohttp) pass through ``redact_text`` before anyone sees them.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# scheme://[userinfo@]host/path[?query][#fragment]; also the userinfo of s3fs-style "KEY:SECRET@bucket" strings
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://[^\s'\"<>]+")
_USERINFO = re.compile(r"(?<![\w/])[A-Za-z0-9+/_.=-]{8,}:[A-Za-z0-9+/_.=-]{8,}@")


def redact_url(url: str) -> str:
    """``url`` without userinfo, query and fragment (``s3://KEY:SECRET@b/x?token=t`` -> ``s3://b/x``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_text(text: str) -> str:
    """Every URL in ``text`` redacted, and any ``KEY:SECRET@`` credential pair removed."""
    if "://" not in text and "@" not in text:
        return text
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return _USERINFO.sub("", text)


def shareable(value: Any, cut_paths: bool = True) -> Any:
    """A config or provenance value fit to write into a file others get: URLs redacted and, with ``cut_paths``
    (checkpoints), absolute paths cut to their last component (they name someone's home folder)."""
    if isinstance(value, dict):
        return {k: shareable(v, cut_paths) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shareable(v, cut_paths) for v in value]
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, str):
        if "://" in value:
            return redact_text(value)
        if cut_paths and (value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value)):
            return PurePath(value).name
    return value


class _RedactingRecord(logging.LogRecord):
    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return redact_text(super().getMessage())


_installed = False


def install() -> None:
    """Redact URLs in every warning and log message of this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    logging.setLogRecordFactory(_RedactingRecord)
    show = warnings.showwarning

    def redacting_showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        show(redact_text(str(message)), category, filename, lineno, file, line)

    warnings.showwarning = redacting_showwarning

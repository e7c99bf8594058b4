"""The one exception type for errors a user can cause.

The CLI turns a ``KdpcError`` into a single line on stderr and exit code 2. Anything else is a bug and may raise.
"""


class KdpcError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


def exception_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line, for wrapping a library's exception into a ``KdpcError``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def distinguishing_prefixes(a: str, b: str, context: int = 8) -> tuple[str, str]:
    """Short forms of two different digests (fingerprints, sha256) that still show where they differ."""
    common = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    n = max(12, common + context)
    return a[:n] + "…", b[:n] + "…"

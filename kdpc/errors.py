"""The one exception type for errors a user can cause.

The CLI turns a ``KdpcError`` into a single line on stderr and exit code 2. Anything else is a bug and may raise.
"""


class KdpcError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

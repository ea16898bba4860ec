"""The one exception a user sees as a message rather than a traceback."""
from __future__ import annotations


class FinetuneError(Exception):
    """A problem the user can fix (bad input, out of memory): the CLI prints it as one line."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

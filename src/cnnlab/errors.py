"""The one base class for errors a user can fix; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad params, bad data, a missing input, a failed download: the message says what was
    wrong and what to do, and the stage scripts print it alone (exit code 2)."""

"""The one exception type of the data stage."""

from __future__ import annotations


class DataError(Exception):
    """Bad or missing input data: the message names the file or URL and what was expected."""

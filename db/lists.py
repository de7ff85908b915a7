"""Splitting a list of ids: into tasks (``task_size``), chunks (``chunk_size``) or bounded SQL
``IN`` lists (``IN_LIST_MAX``); one helper for all three, in the room every other may import."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

# At most this many values in one SQL IN list (SQLite's and drivers' parameter limits).
IN_LIST_MAX = 500


def split(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive slices of at most ``size``, in order."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]

"""The one list splitter (tasks, chunks, IN lists)."""

from __future__ import annotations

import pytest

from pneumoscreen.db.lists import split


class TestSplit:
    def test_chunks_in_order(self) -> None:
        assert split([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
        assert split([], 3) == []

    def test_rejects_empty_chunks(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            split([1], 0)

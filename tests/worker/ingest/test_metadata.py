"""The contract between ingestion and the schema: every header value fits its column."""

from __future__ import annotations

import pytest

from pneumoscreen.db.models import Image
from pneumoscreen.worker.ingest.metadata import COLUMNS, max_length


@pytest.mark.parametrize(("column", "keyword"), sorted(COLUMNS.items()))
def test_each_column_holds_the_longest_value_its_vr_allows(column: str, keyword: str) -> None:
    width = Image.__table__.c[column].type.length
    assert width is not None and width >= max_length(keyword), (column, keyword, width)

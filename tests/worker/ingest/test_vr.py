"""The one UID check (``ingest/vr.py``): the standard's rule, and as files carry them."""

from __future__ import annotations

import pytest

from pneumoscreen.worker.ingest.vr import is_uid, is_valid


@pytest.mark.parametrize(("text", "ok"), [
    ("1.2.840.10008.5.1.4.1.1.1", True), ("0.1", True), ("1.02.3", False), ("1..2", False),
    ("../../etc", False), ("1.2.3 ", False), ("1." + "2" * 63, False), ("", False), (None, False)])
def test_uids_are_checked_before_use(text: object, ok: bool) -> None:
    assert is_uid(text) is ok


def test_a_header_value_may_carry_leading_zeros() -> None:
    assert is_valid("1.02.3", "UI") and not is_uid("1.02.3")
    assert not is_valid("1." + "2" * 63, "UI") and not is_valid("1..2", "UI")

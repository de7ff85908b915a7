"""Broker messages are hostile: the screen task's arguments are checked before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pneumoscreen.worker.queue.messages import MAX_IDS, RefusedMessage, screen_args


def test_what_pneumoscreen_sends_passes() -> None:
    args = screen_args([1, 2, 3], 7, True, 4)
    assert (args.image_ids, args.batch_id, args.rescreen, args.model_version) == (
        [1, 2, 3], 7, True, 4)
    assert screen_args([5]).model_version is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda: screen_args([1], unexpected={"model": "/etc/passwd"}), "unexpected argument.*model"),
    (lambda: screen_args("1,2"), "study_ids must be a list"),
    (lambda: screen_args([]), "study_ids must be a list"),
    (lambda: screen_args(list(range(1, MAX_IDS + 2))), "study_ids must be a list"),
    (lambda: screen_args([1, "2"]), "each study id must be a positive integer"),
    (lambda: screen_args([1, True]), "each study id must be a positive integer"),
    (lambda: screen_args([1.0]), "each study id must be a positive integer"),
    (lambda: screen_args([-3]), "each study id must be a positive integer"),
    (lambda: screen_args([[1, 2]]), "each study id must be a positive integer"),
    (lambda: screen_args([2**70]), "each study id must be a positive integer"),
    (lambda: screen_args([1], "7"), "batch_id must be"),
    (lambda: screen_args([1], None, "yes"), "rescreen must be true or false"),
    (lambda: screen_args([1], None, False, "/tmp/evil.keras"), "model_version must be"),
])
def test_anything_else_is_refused(call: Any, message: str) -> None:
    with pytest.raises(RefusedMessage, match=message):
        call()


def test_message_signing_needs_all_three_settings(tmp_path: Path) -> None:
    from pneumoscreen.worker.settings import Settings

    assert Settings().signing is None
    with pytest.raises(ValueError, match="missing: SCREEN_SIGNING_CERT_FILE, "
                       "SCREEN_SIGNING_CERT_STORE"):
        _ = Settings(signing_key_file=tmp_path / "key.pem").signing

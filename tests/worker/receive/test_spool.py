"""The spool: atomic, content-named files; unfinished writes ignored and cleaned up."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pneumoscreen.worker.receive.spool import TEMP_PREFIX, Spool


def test_a_file_is_named_by_its_hash_and_the_same_bytes_are_one_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.write(b"DICM-ish bytes")
    again = spool.write(b"DICM-ish bytes")
    other = spool.write(b"other bytes")
    sha = hashlib.sha256(b"DICM-ish bytes").hexdigest()
    assert first.path == again.path == tmp_path / "spool" / sha[:2] / f"{sha}.dcm"
    assert first.path.read_bytes() == b"DICM-ish bytes" and first.sha256 == sha
    assert sorted(f.sha256 for f in spool.files()) == sorted([sha, other.sha256])


def test_unfinished_and_foreign_files_are_not_spool_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    kept = spool.write(b"complete")
    folder = kept.path.parent
    (folder / f"{TEMP_PREFIX}abc").write_bytes(b"half a wri")
    (folder / "../evil.dcm").write_bytes(b"x")
    (folder / "0123.dcm").write_bytes(b"x")
    (folder / ("f" * 64 + ".dcm")).symlink_to("/etc/hostname")
    assert [f.path for f in spool.files()] == [kept.path]
    assert spool.remove_stale_temp_files(older_than_s=3600) == 0
    assert spool.remove_stale_temp_files(older_than_s=0) == 1
    assert not list(folder.glob(f"{TEMP_PREFIX}*")) and kept.path.exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    import os

    spool = Spool(tmp_path / "spool")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        spool.write(b"bytes")
    assert not [p for p in (tmp_path / "spool").rglob("*") if p.is_file()]

"""`screen bench register`: a corpus of distinct DICOMs, each file counted once; registration
streams (walks lazily, commits chunk by chunk)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from live import make_pngs
from typer.testing import CliRunner

from pneumoscreen.db import Image, session_scope
from pneumoscreen.model.progress import Silent
from pneumoscreen.worker.bench.register import make_corpus, run_register, template
from pneumoscreen.worker.cli import app
from pneumoscreen.worker.intake import submit as submit_mod
from pneumoscreen.worker.intake.submit import register_folder
from pneumoscreen.worker.settings import get_settings


def test_corpus_files_are_distinct_valid_dicoms(tmp_path: Path) -> None:
    make_corpus(tmp_path, 5, template(None, 0.05))
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 5
    assert len({hashlib.sha256(f.read_bytes()).hexdigest() for f in files}) == 5
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.SOPInstanceUID for ds in datasets}) == 5
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in datasets)
    assert all(len(ds.SOPInstanceUID) <= 64 for ds in datasets)


def test_every_file_is_registered_once() -> None:
    result = run_register(1205, settings=get_settings(), size_mb=0.01, say=lambda _: None)
    assert result.files == 1205  # across two sub-folders and several chunks
    assert result.counts == {"new": 1205, "duplicate": 0, "not_images": 0, "to_screen": 1205,
                             "rejected": 0, "failed": 0}
    assert result.files_per_s > 0 and result.peak_rss_mb > 0


class _Watch(Silent):
    """At each chunk's first registration: how many files were examined, how many committed."""

    def __init__(self, url: str) -> None:
        self.url, self.scanned, self.seen = url, 0, []

    def advance(self, stage: str, n: int = 1) -> None:
        if stage == "scan":
            self.scanned += n
        elif stage == "register" and (not self.seen or self.seen[-1][0] != self.scanned):
            with session_scope(self.url) as s:  # another connection: committed rows only
                committed = s.scalar(sa.select(sa.func.count()).select_from(Image))
            self.seen.append((self.scanned, committed))


def test_registration_streams_in_committed_chunks(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit_mod, "FILES_PER_COMMIT", 10)
    make_pngs(tmp_path / "in", 25, size=16)
    settings = get_settings()
    watch = _Watch(settings.effective_database_url)
    result = register_folder(tmp_path / "in", settings=settings, progress=watch)
    assert (result.n_files, result.n_new) == (25, 25)
    # Chunk k is registered when only its own files have been read, after chunk k-1 committed.
    assert watch.seen == [(10, 0), (20, 10), (25, 20)]


def test_the_command_prints_one_json_document() -> None:
    out = CliRunner().invoke(app, ["bench", "register", "--files", "12", "--size-mb", "0.01",
                                   "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["files"] == 12 and data["counts"]["new"] == 12
    assert {"files_per_s", "peak_rss_mb", "first_file_after_s"} <= data.keys()

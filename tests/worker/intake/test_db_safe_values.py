"""Values safe for every database: a file whose header or name holds what PostgreSQL refuses
(NUL, bytes that are no UTF-8) fails alone with a reason; the submit goes on, the good file beside
it is registered, and nothing stored holds the refused characters (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from pneumoscreen.db import Image, ImageFile, ImageStatus, session_scope
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.settings import get_settings

RSNA = "dicom/chest/CR_chest_JPEG_baseline_rsna_003d8fa0.dcm"
GOOD = "dicom/chest/CR_chest_JPEG_baseline_rsna_00436515.dcm"


@pytest.fixture
def settings(db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SCREEN_DATABASE_URL", db_url)
    get_settings.cache_clear()
    return get_settings()


def _stored_text(url: str) -> list[str]:
    with session_scope(url) as s:
        out = []
        for image in s.scalars(sa.select(Image)):
            out += [str(v) for v in (image.reason, image.source_path, image.transfer_syntax,
                                     image.sop_instance_uid, image.patient_age, image.meta)]
        out += [f"{f.path} {f.reason}" for f in s.scalars(sa.select(ImageFile))]
    return out


def test_nul_in_the_transfer_syntax_fails_that_file_alone(tmp_path: Path, settings,
                                                          shared_dir: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    ds = pydicom.dcmread(shared_dir / RSNA)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008\x00.1.2.4.50"
    ds.save_as(folder / "nul.dcm")
    shutil.copy(shared_dir / GOOD, folder / "good.dcm")
    result = submit_folder(folder, settings=settings)  # no exception: nothing aborted
    assert (result.n_new, result.n_failed) == (2, 1)
    with session_scope(settings.effective_database_url) as s:
        states = {Path(i.source_path).name: (i.status, i.reason)
                  for i in s.scalars(sa.select(Image))}
    assert states["nul.dcm"] == (ImageStatus.failed, "Transfer Syntax UID (0002,0010) is not a "
                                 "valid UID: an invalid value (23 characters; a UID is at most "
                                 "64 digits and dots)")
    assert states["good.dcm"][0] is ImageStatus.done
    assert not any("\x00" in t for t in _stored_text(settings.effective_database_url))


def test_a_file_name_that_is_no_utf8_fails_alone(tmp_path: Path, settings,
                                                 shared_dir: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = os.fsdecode(b"film-\xff\xfe.dcm")  # a name no UTF-8 database column can hold
    shutil.copy(shared_dir / RSNA, folder / bad)
    shutil.copy(shared_dir / GOOD, folder / "good.dcm")
    result = submit_folder(folder, settings=settings)
    assert result.n_new == 2
    with session_scope(settings.effective_database_url) as s:
        rows = {i.source_path: (i.status, i.reason) for i in s.scalars(sa.select(Image))}
    failed = [(p, r) for p, (st, r) in rows.items() if st is ImageStatus.failed]
    assert len(failed) == 1
    path, reason = failed[0]
    assert reason == ("the file name is not valid UTF-8: rename the file to screen it")
    assert "\ufffd" in path  # shown with replacement characters, never the raw bytes
    for text in _stored_text(settings.effective_database_url):
        text.encode("utf-8")  # every stored text is valid UTF-8

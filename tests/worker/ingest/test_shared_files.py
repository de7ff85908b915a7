"""The real DICOM files in ../shared/dicom end in their expected states, at ingest level and
through submit (the whole pipeline, in-process)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from pneumoscreen.worker.ingest import IngestError, load_grey, probe
from pneumoscreen.worker.settings import get_settings

pytestmark = pytest.mark.shared

EXPECTED_STATE = {"chest": "done", "not_chest": "rejected", "broken": "failed"}
EXPECTED_REASON = {  # the reason names what was wrong, by tag or codec
    "CR_hip_JPEG_lossless_10bit.dcm": r"^Body Part Examined HIP is not screened",
    "CT_JPEG_LS_lossless.dcm": r"^Modality CT is not screened \(accepted: CR, DX\)$",
    "MR_JPEG_lossless.dcm": r"^Modality MR is not screened \(accepted: CR, DX\)$",
    "DX_chest_J2K_corrupt_codestream.dcm": r"^cannot decode JPEG 2000 Image Compression",
    "not_part10_no_meta.dcm": r"^missing Image Pixel attributes: BitsAllocated \(0028,0100\)",
}


def _files(shared_dir: Path) -> list[tuple[str, Path]]:
    files = [(p.parent.name, p) for p in sorted((shared_dir / "dicom").glob("*/*")) if p.is_file()]
    assert {folder for folder, _ in files} == set(EXPECTED_STATE)
    return files


def _outcome(path: Path, *, reduced: bool | None = None) -> tuple[str, str | None]:
    try:
        load_grey(path, reduced=reduced)
    except IngestError as exc:
        return exc.status, str(exc)
    return "done", None


@pytest.mark.parametrize("reduced", [False, True])
def test_every_shared_file_ends_in_its_expected_state(shared_dir: Path, reduced: bool) -> None:
    for folder, path in _files(shared_dir):
        status, reason = _outcome(path, reduced=reduced)
        assert status == EXPECTED_STATE[folder], (path.name, reason)
        if path.name in EXPECTED_REASON:
            assert reason is not None
            assert re.search(EXPECTED_REASON[path.name], reason), reason


def test_not_chest_is_rejected_from_the_header_alone(shared_dir: Path) -> None:
    for path in sorted((shared_dir / "dicom" / "not_chest").iterdir()):
        with pytest.raises(IngestError) as info:
            probe(path)
        assert info.value.status == "rejected" and info.value.metadata["modality"]


def test_chest_files_carry_their_metadata(shared_dir: Path) -> None:
    for path in sorted((shared_dir / "dicom" / "chest").iterdir()):
        found = probe(path)
        md = found.metadata
        assert found.sop_instance_uid and md["study_instance_uid"]
        assert md["modality"] in ("CR", "DX") and md["body_part"] == "CHEST"
        assert md["transfer_syntax"] and md["photometric_interpretation"]


@pytest.mark.parametrize("input_size", [None, 96, 224])  # none, cnn-s's, v2's
def test_reduced_and_full_give_nearly_the_same_network_input(
    shared_dir: Path, input_size: int | None
) -> None:
    from pneumoscreen.model.preprocess import preprocess

    config = get_settings().ingest_config(input_size=input_size)
    size = input_size or 128
    for path in sorted((shared_dir / "dicom" / "chest").iterdir()):
        full = preprocess(load_grey(path, reduced=False).grey, size)
        decoded = load_grey(path, config, reduced=True)
        # Every chest file is JPEG baseline or JPEG 2000 of ≥ 1024 px: the codec did reduce.
        assert any("at reduced resolution" in s for s in decoded.steps), (path.name, decoded.steps)
        red = preprocess(decoded.grey, size)
        assert np.abs(full - red).mean() < 0.02, path.name


def test_bodies_decode_when_policy_allows(shared_dir: Path) -> None:
    """JPEG lossless and JPEG-LS (only in not_chest/) decode too once the policy accepts them."""
    from pneumoscreen.worker.settings import Settings

    permissive = Settings(accept_modalities=["CR", "CT", "MR"], accept_body_parts=["", "HIP"])
    for path in sorted((shared_dir / "dicom" / "not_chest").iterdir()):
        grey = load_grey(path, permissive.ingest_config()).grey
        assert grey.ndim == 2 and grey.std() > 0.05, path.name


@pytest.mark.parametrize("folders", [("chest",), ("not_chest", "broken")])
def test_submit_screens_each_file_into_its_expected_state(
    shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folders: tuple[str, ...]
) -> None:
    """End to end: copy, submit (no broker: screened in-process), read the Image rows.

    chest/ and broken/ are submitted to separate databases: broken/'s corrupt J2K is a damaged
    copy of a chest/ file with the same SOP Instance UID, so one database keeps only the first.
    """
    from pneumoscreen.db import Image, session_scope
    from pneumoscreen.worker.intake.submit import submit_folder

    monkeypatch.setenv("SCREEN_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    get_settings.cache_clear()
    settings = get_settings()
    root = tmp_path / "dicom"
    for name in folders:
        shutil.copytree(shared_dir / "dicom" / name, root / name)
    files = [(f, p) for f, p in _files(shared_dir) if f in folders]
    result = submit_folder(root, settings=settings)
    assert result.n_new == len(files) and result.n_not_images == 0
    with session_scope(settings.effective_database_url) as session:
        rows = {Path(s.source_path): (s.status.value, s.reason)
                for s in session.scalars(sa.select(Image))}
    for folder_name, path in files:
        status, reason = rows[(root / folder_name / path.name).resolve()]
        assert status == EXPECTED_STATE[folder_name], (path.name, reason)
        assert (reason is None) == (status == "done"), (path.name, reason)
        if path.name in EXPECTED_REASON:
            assert re.search(EXPECTED_REASON[path.name], reason or ""), reason
    again = submit_folder(root, settings=settings)  # dedupe by content hash / SOP Instance UID
    assert again.n_new == 0 and again.n_duplicate == len(files)

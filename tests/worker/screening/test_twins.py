"""Twins: two files with one SOP Instance UID, a copy cut inside its pixel data (header intact)
and a good copy. Whatever the order, in one submit or two, the study ends screened from the good
copy and both files are accounted for in ``study_files``."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from pneumoscreen.db import FileRole, Image, ImageFile, ImageStatus, Prediction, session_scope
from pneumoscreen.worker.intake.submit import submit_folder
from pneumoscreen.worker.settings import get_settings

SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "cr_chest_mono2_12bit_windowed.dcm"


@pytest.fixture
def settings(db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SCREEN_DATABASE_URL", db_url)
    get_settings.cache_clear()
    return get_settings()


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture
def copies() -> tuple[bytes, bytes]:
    good = SAMPLE.read_bytes()
    return good, good[: len(good) - len(good) // 3]  # cut inside the pixel data


def _accounted(url: str) -> tuple[Image, dict[str, tuple[FileRole, str | None]], int]:
    with session_scope(url) as s:
        study = s.scalars(sa.select(Image)).one()
        files = {Path(f.path).name: (f.role, f.reason) for f in s.scalars(sa.select(ImageFile))}
        n_pred = s.scalar(sa.select(sa.func.count()).select_from(Prediction))
        s.expunge(study)
    return study, files, n_pred


def _assert_screened_from_good(url: str, good: Path, broken: Path) -> None:
    study, files, n_pred = _accounted(url)
    assert study.status is ImageStatus.done and study.reason is None
    assert study.source_path == str(good.resolve()) and n_pred == 1
    assert files[good.name] == (FileRole.primary, None)
    role, reason = files[broken.name]
    assert role is FileRole.twin and reason  # why it was set aside


def test_broken_copy_sorted_first_in_one_submit(tmp_path: Path, settings, copies) -> None:
    good, broken = copies
    folder = tmp_path / "in"
    b = _write(folder, "a_broken.dcm", broken)
    g = _write(folder, "b_good.dcm", good)
    result = submit_folder(folder, settings=settings)
    assert (result.n_files, result.n_new, result.n_twins, result.n_replaced) == (2, 1, 1, 0)
    _assert_screened_from_good(settings.effective_database_url, g, b)


def test_good_copy_sorted_first_in_one_submit(tmp_path: Path, settings, copies) -> None:
    good, broken = copies
    folder = tmp_path / "in"
    g = _write(folder, "a_good.dcm", good)
    b = _write(folder, "b_broken.dcm", broken)
    result = submit_folder(folder, settings=settings)
    assert (result.n_new, result.n_twins, result.n_replaced) == (1, 1, 0)
    _assert_screened_from_good(settings.effective_database_url, g, b)


def test_broken_then_good_across_two_submits(tmp_path: Path, settings, copies) -> None:
    good, broken = copies
    url = settings.effective_database_url
    b = _write(tmp_path / "first", "x.dcm", broken)
    submit_folder(tmp_path / "first", settings=settings)
    assert _accounted(url)[0].status is ImageStatus.failed
    g = _write(tmp_path / "second", "y.dcm", good)
    second = submit_folder(tmp_path / "second", settings=settings)
    assert (second.n_new, second.n_replaced, second.n_twins) == (0, 1, 1)
    _assert_screened_from_good(url, g, b)
    again = submit_folder(tmp_path / "first", settings=settings)  # the damaged copy: seen before
    assert (again.n_new, again.n_duplicate, again.n_tasks) == (0, 1, 0)


def test_good_then_broken_across_two_submits(tmp_path: Path, settings, copies) -> None:
    good, broken = copies
    g = _write(tmp_path / "first", "x.dcm", good)
    submit_folder(tmp_path / "first", settings=settings)
    b = _write(tmp_path / "second", "y.dcm", broken)
    second = submit_folder(tmp_path / "second", settings=settings)
    # The phantom is an atypical image for the model (outside scope for an image reason), so a
    # later copy whose header reads is tried in its place, as for a failed study; it cannot be
    # decoded, and the study returns to the good copy with one prediction.
    assert (second.n_new, second.n_twins, second.n_replaced) == (0, 1, 1)
    _assert_screened_from_good(settings.effective_database_url, g, b)


def test_every_copy_unreadable_fails_naming_the_twins(tmp_path: Path, settings, copies) -> None:
    _, broken = copies
    folder = tmp_path / "in"
    _write(folder, "a.dcm", broken)
    _write(folder, "b.dcm", broken[:-100])  # another cut, other content: a second twin
    submit_folder(folder, settings=settings)
    study, files, _ = _accounted(settings.effective_database_url)
    assert study.status is ImageStatus.failed and "(and its 1 twin copy)" in study.reason
    assert sorted(role.value for role, _ in files.values()) == ["primary", "twin"]


def test_a_copy_failing_its_header_then_replaced_counts_once(tmp_path: Path, settings) -> None:
    """The failed copy registers, the good one replaces it in the same submit: one new study
    (it was counted twice: "534 new studies" for 516 rows)."""
    import pydicom

    folder = tmp_path / "in"
    folder.mkdir()
    ds = pydicom.dcmread(SAMPLE)
    ds.BitsAllocated = 7  # fails at the header probe, its SOP Instance UID known
    ds.save_as(folder / "a_bad_header.dcm")
    (folder / "b_good.dcm").write_bytes(SAMPLE.read_bytes())
    result = submit_folder(folder, settings=settings)
    assert (result.n_new, result.n_replaced, result.n_twins, result.n_to_screen) == (1, 0, 1, 1)
    assert (result.n_failed, result.queued_ids) == (0, [1])
    _assert_screened_from_good(settings.effective_database_url, folder / "b_good.dcm",
                               folder / "a_bad_header.dcm")


@pytest.mark.postgres
def test_a_concurrent_insert_falls_back_file_by_file(tmp_path: Path, pg_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Another submit commits one of this chunk's files first: the chunk's savepoint fails, the
    files go in one by one, and that file counts as already registered."""
    from live import make_pngs

    from pneumoscreen.worker.intake import submit as submit_mod

    monkeypatch.setenv("SCREEN_DATABASE_URL", pg_url)
    get_settings.cache_clear()
    settings = get_settings()
    make_pngs(tmp_path / "in", 3, size=16)
    original, raced = submit_mod._register_one, []

    def racing(cand, batch_id, **kw):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(cand.sha256)
            with session_scope(pg_url) as other:  # the other submit, committed meanwhile
                other.add(Image(sha256=cand.sha256, source_path="/elsewhere", format="png"))
        return original(cand, batch_id, **kw)

    monkeypatch.setattr(submit_mod, "_register_one", racing)
    result = submit_mod.register_folder(tmp_path / "in", settings=settings)
    assert (result.n_new, result.n_duplicate) == (2, 1)
    with session_scope(pg_url) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Image)) == 3
        assert s.scalar(sa.select(sa.func.count()).select_from(ImageFile)) == 2


def _blank_copy(good: bytes, tmp: Path) -> bytes:
    """The same image (same SOP Instance UID) with every pixel one value: no content."""
    import numpy as np
    import pydicom

    ds = pydicom.dcmread(_write(tmp, "src.dcm", good))
    ds.PixelData = np.full((ds.Rows, ds.Columns), 600, np.uint16).tobytes()
    out = tmp / "blank.dcm"
    ds.save_as(out)
    return out.read_bytes()


def test_a_blank_first_copy_gives_way_to_the_original(tmp_path: Path, settings) -> None:
    """The issue's case: a blank mutant received first, then the untouched original with the
    same SOP Instance UID: the study ends screened from the original."""
    good = SAMPLE.read_bytes()
    url = settings.effective_database_url
    b = _write(tmp_path / "first", "blank.dcm", _blank_copy(good, tmp_path / "tmp"))
    submit_folder(tmp_path / "first", settings=settings)
    study = _accounted(url)[0]
    assert study.status is ImageStatus.failed
    assert study.reason.startswith("pixel data decodes to a constant image")
    g = _write(tmp_path / "second", "original.dcm", good)
    second = submit_folder(tmp_path / "second", settings=settings)
    assert (second.n_new, second.n_replaced, second.n_twins) == (0, 1, 1)
    _assert_screened_from_good(url, g, b)


def _kermany_copy(good: bytes, kermany: Path, tmp: Path) -> bytes:
    """The same SOP Instance UID holding a real pediatric film (a Kermany training image)."""
    import numpy as np
    import pydicom
    from PIL import Image as PILImage

    ds = pydicom.dcmread(_write(tmp, "src.dcm", good))
    with PILImage.open(kermany) as im:
        grey = np.asarray(im.convert("L"), dtype=np.uint16) * 16  # 8 -> 12 bits
    ds.Rows, ds.Columns = grey.shape
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = grey.tobytes()
    out = tmp / "kermany.dcm"
    ds.save_as(out)
    return out.read_bytes()


def test_a_copy_screened_outside_scope_for_an_image_reason_is_replaced(
        tmp_path: Path, settings, shared_dir: Path) -> None:
    """The synthetic phantom is an atypical image for the model (out of scope, an image reason);
    a later copy with the same SOP Instance UID replaces it: its prediction is withdrawn (what
    it said is kept in the set-aside file's reason) and the study is screened again."""
    good = SAMPLE.read_bytes()
    url = settings.effective_database_url
    first = _write(tmp_path / "first", "phantom.dcm", good)
    submit_folder(tmp_path / "first", settings=settings)
    with session_scope(url) as s:
        pred = s.scalars(sa.select(Prediction)).one()
        assert pred.in_scope is False and pred.scope_reason.startswith("atypical image")
    kermany = sorted((shared_dir / "data/chest_xray/train/NORMAL").glob("*.jpeg"))[0]
    second = _write(tmp_path / "second", "film.dcm", _kermany_copy(good, kermany, tmp_path / "t"))
    result = submit_folder(tmp_path / "second", settings=settings)
    assert (result.n_new, result.n_replaced, result.n_twins) == (0, 1, 1)
    study, files, n_pred = _accounted(url)
    assert study.status is ImageStatus.done and study.source_path == str(second.resolve())
    assert n_pred == 1
    with session_scope(url) as s:
        pred = s.scalars(sa.select(Prediction)).one()
        assert pred.batch_id == result.batch_id  # the new copy's screening, not the old one
    role, reason = files[first.name]
    assert role is FileRole.twin
    assert reason.startswith("screened from it (p ") and "outside scope: atypical image" in reason


def test_an_age_out_of_scope_is_not_replaced(tmp_path: Path, settings) -> None:
    """An age is the patient's, not the copy's: another copy changes nothing."""
    import pydicom

    src = pydicom.dcmread(SAMPLE)
    src.PatientAge = "54"  # as real archives write it: a bare number of years
    adult = tmp_path / "adult.dcm"
    src.save_as(adult)
    _write(tmp_path / "first", "a.dcm", adult.read_bytes())
    submit_folder(tmp_path / "first", settings=settings)
    with session_scope(settings.effective_database_url) as s:
        pred = s.scalars(sa.select(Prediction)).one()
        assert pred.in_scope is False and pred.flagged is False
        assert "age 054Y" in pred.scope_reason


def test_the_same_instance_rewrapped_is_no_twin(tmp_path: Path) -> None:
    """Issue 21, item 12: a file submitted from a folder, then the same instance again in
    another file wrapping (as the listener writes what it receives: other file meta, the same
    dataset), is already registered, not a twin. Through `screen`."""
    import os
    import struct

    from live import run_screen
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    good = SAMPLE.read_bytes()
    body = good[144 + struct.unpack("<I", good[140:144])[0]:]
    meta = dcmread(SAMPLE, stop_before_pixels=True).file_meta
    meta.ImplementationVersionName = "OTHER_SENDER"
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    rewrapped = b"\0" * 128 + b"DICM" + buf.getvalue() + body
    assert rewrapped != good
    _write(tmp_path / "a", "first.dcm", good)
    _write(tmp_path / "b", "received.dcm", rewrapped)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREEN_")}
    env.update(SCREEN_DATA_DIR=str(tmp_path / "data"), SCREEN_CONFIG=str(tmp_path / "x.toml"),
               SCREEN_HEATMAPS="none")
    assert run_screen(env, "submit", str(tmp_path / "a"), timeout=600).returncode == 0
    out = run_screen(env, "submit", str(tmp_path / "b"), timeout=600)
    assert out.returncode == 0, out.stderr
    assert "0 new studies" in out.stdout and "1 already registered" in out.stdout, out.stdout
    assert "twin" not in out.stdout

"""Bounded fuzzing: byte mutations of small valid files end as done, rejected or failed; never as
an exception of another kind, and the in-process worker screens the rest of the batch."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_factories import (
    chest_like,
    jpeg_baseline_ds,
    jpeg_bytes,
    make_ds,
    patch_element,
    write,
)
from pydicom.uid import JPEG2000Lossless, RLELossless

from pneumoscreen.worker.ingest import IngestError, load_grey, probe
from pneumoscreen.worker.settings import Settings


def _seeds(folder: Path) -> list[bytes]:
    base = chest_like(64, 48, maximum=4095)  # J2K needs 64 px for its default 6 levels
    files = [
        write(make_ds(base, bits_stored=12, WindowCenter=2000, WindowWidth=3000), folder / "n.dcm"),
        write(make_ds(base, bits_stored=12), folder / "np", preamble=False),
        write(make_ds(base, bits_stored=12), folder / "raw", preamble=False, meta=False),
        write(jpeg_baseline_ds((base >> 4).astype(np.uint8)), folder / "j.dcm"),
    ]
    for ts in (RLELossless, JPEG2000Lossless):
        ds = make_ds(base, bits_stored=12, photometric="MONOCHROME1")
        ds.compress(ts, base)
        files.append(write(ds, folder / f"{ts.keyword}.dcm"))
    PIL.Image.fromarray((base >> 4).astype(np.uint8)).save(folder / "p.png")
    (folder / "j.jpg").write_bytes(jpeg_bytes((base >> 4).astype(np.uint8)))
    return [p.read_bytes() for p in [*files, folder / "p.png", folder / "j.jpg"]]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return _seeds(tmp_path_factory.mktemp("seeds"))


def mutate(data: bytes, ops: list[tuple[int, float, int]]) -> bytes:
    """Apply (kind, where, value) edits: flip, set, delete, insert, truncate."""
    buf = bytearray(data)
    for kind, where, value in ops:
        if not buf:
            break
        i = min(int(where * len(buf)), len(buf) - 1)
        if kind == 0:
            buf[i] ^= 1 << (value % 8)
        elif kind == 1:
            buf[i] = value % 256
        elif kind == 2:
            del buf[i : i + 1 + value % 64]
        elif kind == 3:
            buf[i:i] = bytes([value % 256]) * (1 + value % 16)
        else:
            del buf[i:]
    return bytes(buf)


OPS = st.lists(st.tuples(st.integers(0, 4), st.floats(0, 1), st.integers(0, 1 << 16)),
               min_size=1, max_size=6)
SETTINGS = Settings(max_pixels=1_000_000, reduced_min_side=64).ingest_config()


def _outcome(path: Path) -> str:
    for call in (probe, load_grey):
        try:
            result = call(path, SETTINGS)
        except IngestError as exc:
            assert exc.status in ("rejected", "failed") and str(exc).strip()
            return exc.status
    grey = result.grey  # type: ignore[union-attr]
    assert grey.ndim == 2 and grey.dtype == np.float32
    assert np.isfinite(grey).all() and grey.min() >= 0 and grey.max() <= 1
    return "done"


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 7), ops=OPS, suffix=st.sampled_from([".dcm", "", ".png", ".jpg"]))
def test_every_mutation_ends_in_a_final_state(
    seeds: list[bytes], index: int, ops: list[tuple[int, float, int]], suffix: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f{suffix}"
        path.write_bytes(mutate(seeds[index % len(seeds)], ops))
        assert _outcome(path) in ("done", "rejected", "failed")


def test_unmutated_seeds_are_done(seeds: list[bytes], tmp_path: Path) -> None:
    """The fuzz starts from valid files (or it would prove nothing)."""
    for i, data in enumerate(seeds):
        (tmp_path / f"s{i}").write_bytes(data)
        assert _outcome(tmp_path / f"s{i}") == "done", i


@pytest.mark.slow
def test_worker_survives_a_batch_of_mutants(
    seeds: list[bytes], tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through submit and the in-process screening task, on SQLite and PostgreSQL: mutants fail or
    reject alone. PostgreSQL enforces column widths (SQLite does not): a Transfer Syntax UID
    longer than its String(64) used to abort the whole registration there."""
    from pneumoscreen.db import Image, ImageStatus, session_scope
    from pneumoscreen.worker.intake.submit import submit_folder
    from pneumoscreen.worker.settings import get_settings

    monkeypatch.setenv("SCREEN_DATABASE_URL", db_url)
    get_settings.cache_clear()
    rng = random.Random(1234)
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "good.dcm").write_bytes(seeds[0])
    for i in range(12):
        data = seeds[rng.randrange(len(seeds))]
        ops = [(rng.randrange(5), rng.random(), rng.randrange(1 << 16)) for _ in range(3)]
        (folder / f"m{i}.dcm").write_bytes(mutate(data, ops))
    # A bit-flip is enough to lengthen a value past its column: these are the deterministic ones.
    long_ts = write(make_ds(chest_like(seed=2)), folder / "long_ts.dcm")
    patch_element(long_ts, 0x00020010, b"1.2.840.10008.1.2.1" + b"1" * 60)
    long_study = write(make_ds(chest_like(seed=3)), folder / "long_study_uid.dcm")
    patch_element(long_study, 0x0020000D, b"1.2.3." + b"4" * 70)
    long_maker = write(make_ds(chest_like(seed=4)), folder / "long_manufacturer.dcm")
    patch_element(long_maker, 0x00080070, b"M" * 130)
    settings_ = get_settings()
    submit_folder(folder, settings=settings_)
    with session_scope(settings_.effective_database_url) as session:
        studies = list(session.scalars(sa.select(Image)))
        states = {Path(s.source_path).name: (s.status, s.reason) for s in studies}
        assert all(s.status in ImageStatus.final() for s in studies)
        assert all(s.reason for s in studies if s.status != ImageStatus.done)
        maker = next(s for s in studies if s.source_path.endswith("long_manufacturer.dcm"))
        assert maker.manufacturer is None  # not valid for LO: not stored, never cut to fit
    assert states["good.dcm"][0] == ImageStatus.done
    assert states["long_manufacturer.dcm"][0] == ImageStatus.done
    assert states["long_ts.dcm"] == (
        ImageStatus.failed, "Transfer Syntax UID (0002,0010) is not a valid UID: an invalid "
        "value (79 characters; a UID is at most 64 digits and dots)")
    assert states["long_study_uid.dcm"][0] == ImageStatus.failed
    assert states["long_study_uid.dcm"][1].startswith(
        "Study Instance UID (0020,000D) is not a valid UID")

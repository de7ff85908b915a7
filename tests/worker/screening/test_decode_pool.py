"""Decoding in child processes: the same network input as in-process, a time limit that really
stops a C decoder, and a crashed decoder failing only its own file."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ingest_factories import chest_like, make_ds, write
from pydicom.uid import JPEG2000Lossless

from pneumoscreen.model.preprocess import preprocess
from pneumoscreen.worker.ingest import load_grey
from pneumoscreen.worker.screening.decode_pool import DecodePool
from pneumoscreen.worker.settings import Settings

CONFIG = Settings(reduced_resolution=False).ingest_config()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    small = chest_like(96, 80)
    big = chest_like(2048, 2048)  # full-resolution J2K: about a second of OpenJPEG
    ds = make_ds(big, bits_stored=12)
    ds.compress(JPEG2000Lossless, big)
    broken = make_ds(small, bits_stored=12)
    broken.PixelData = broken.PixelData[:100]
    return {"good": write(make_ds(small, bits_stored=12), tmp_path / "good.dcm"),
            "slow": write(ds, tmp_path / "slow.dcm"),
            "broken": write(broken, tmp_path / "broken.dcm")}


@pytest.fixture
def pool() -> Iterator[DecodePool]:
    pool = DecodePool(1, timeout=60)
    yield pool
    pool.close()


def test_child_gives_the_in_process_result(pool: DecodePool, files: dict[str, Path]) -> None:
    found = pool.run(files["good"], CONFIG, 32)
    expected = preprocess(load_grey(files["good"], CONFIG).grey, 32)
    assert found.tensor is not None and found.tensor.dtype == np.float32
    np.testing.assert_array_equal(found.tensor, expected)
    assert found.metadata["modality"] == "CR"
    bad = pool.run(files["broken"], CONFIG, 32)
    assert bad.tensor is None and bad.status == "failed"
    assert bad.reason and bad.reason.startswith("pixel data truncated")


@pytest.mark.slow
def test_an_overrunning_file_fails_alone(pool: DecodePool, files: dict[str, Path]) -> None:
    pool.run(files["good"], CONFIG, 32)  # the child has started: only decoding is timed
    first = pool._all[0]
    slow = pool.run(files["slow"], CONFIG, 32, timeout=0.05)  # a second or more of OpenJPEG
    assert slow.tensor is None and slow.status == "failed"
    assert slow.reason == "decoding took longer than 0.05 s"
    assert first.proc.poll() is not None  # really stopped, not left decoding
    assert pool.run(files["good"], CONFIG, 32).tensor is not None  # a fresh child took over


@pytest.mark.slow
def test_a_crashed_decoder_fails_only_its_file(pool: DecodePool, files: dict[str, Path]) -> None:
    pool.run(files["good"], CONFIG, 32)
    child = pool._all[0]
    killer = threading.Timer(0.2, child.proc.kill)  # a decoder crash, mid-file
    killer.start()
    crashed = pool.run(files["slow"], CONFIG, 32)
    killer.join()
    assert crashed.tensor is None and crashed.status == "failed"
    assert crashed.reason and crashed.reason.startswith("the decoder crashed on this file")
    assert pool.run(files["good"], CONFIG, 32).tensor is not None


def test_a_child_that_cannot_start_is_the_worker_s_fault_not_the_file_s(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """No verdict on the file: a transient error the task retries (its studies stay queued)."""
    from pneumoscreen.worker.screening import decode_pool

    monkeypatch.setattr(decode_pool.sys, "executable", "/bin/false")
    broken = DecodePool(1, timeout=10)
    try:
        with pytest.raises(decode_pool.DecoderUnavailable, match="did not start"):
            broken.run(files["good"], CONFIG, 32)
    finally:
        broken.close()

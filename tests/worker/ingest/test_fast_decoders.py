"""The faster decoders (CharLS, libjpeg-turbo, OpenJPH via imagecodecs) give pydicom's values,
and reduced decoding stays within the network-input tolerance of full decoding (0.02)."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from ingest_factories import chest_like, make_ds, write
from pydicom.encaps import encapsulate
from pydicom.uid import (
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from pneumoscreen.model.preprocess import preprocess
from pneumoscreen.worker.ingest import load_grey
from pneumoscreen.worker.ingest.dicom_decode import block_mean
from pneumoscreen.worker.settings import Settings

BASE = chest_like(600, 520, maximum=4095)
FULL = Settings(reduced_resolution=False).ingest_config()


def _encapsulated(ts: str, frame: bytes, tmp_path: Path) -> Path:
    ds = make_ds(BASE, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = ts
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return write(ds, tmp_path / "enc.dcm")


@pytest.fixture
def reference(tmp_path: Path) -> np.ndarray:
    return load_grey(write(make_ds(BASE, bits_stored=12), tmp_path / "ref.dcm"), FULL).grey


@pytest.mark.parametrize("ts", [JPEGLSLossless, JPEGLosslessSV1])
def test_lossless_fast_decoders_give_the_stored_values(
    tmp_path: Path, reference: np.ndarray, ts: str
) -> None:
    if ts == JPEGLosslessSV1:
        path = _encapsulated(ts, imagecodecs.jpeg8_encode(BASE, lossless=True, predictor=1,
                                                          bitspersample=12), tmp_path)
    else:
        ds = make_ds(BASE, bits_stored=12)
        ds.compress(ts, BASE)
        path = write(ds, tmp_path / "ls.dcm")
    got = load_grey(path, FULL)
    np.testing.assert_allclose(got.grey, reference, atol=1e-6)
    by = "CharLS" if ts == JPEGLSLossless else "libjpeg-turbo"
    assert any(step.endswith(f"(600 x 520, {by})") for step in got.steps), got.steps


def test_near_lossless_jpeg_ls_matches_pydicom(tmp_path: Path) -> None:
    ds = make_ds(BASE, bits_stored=12)
    ds.compress(JPEGLSNearLossless, BASE, jls_error=3)
    path = write(ds, tmp_path / "near.dcm")
    stored = write(make_ds(ds.pixel_array.astype(np.uint16), bits_stored=12),
                   tmp_path / "pydicom.dcm")  # pydicom's own decoding, stored natively
    np.testing.assert_allclose(load_grey(path, FULL).grey, load_grey(stored, FULL).grey,
                               atol=1e-6)


def test_htj2k_decodes_at_a_resolution_level(tmp_path: Path, reference: np.ndarray) -> None:
    path = _encapsulated(HTJ2KLossless, imagecodecs.htj2k_encode(BASE, reversible=True), tmp_path)
    full = load_grey(path, FULL)
    np.testing.assert_allclose(full.grey, reference, atol=1e-6)
    red = load_grey(path, Settings(reduced_min_side=128).ingest_config())
    assert red.grey.shape == (150, 130)
    assert any("HTJ2K resolution level 1/4" in step for step in red.steps), red.steps
    assert np.abs(preprocess(red.grey, 96) - preprocess(full.grey, 96)).mean() < 0.02


def test_full_resolution_decodes_shrink_by_block_means(tmp_path: Path) -> None:
    ds = make_ds(BASE, bits_stored=12)
    ds.compress(JPEGLSLossless, BASE)
    path = write(ds, tmp_path / "ls.dcm")
    red = load_grey(path, Settings(reduced_min_side=128).ingest_config())
    assert red.grey.shape == (150, 130)
    assert "block mean 1/4 of the stored values: 600 x 520 -> 150 x 130" in red.steps
    full = load_grey(path, FULL)
    assert np.abs(preprocess(red.grey, 96) - preprocess(full.grey, 96)).mean() < 0.02


@pytest.mark.parametrize("dtype, low, high", [
    (np.uint8, 0, 256), (np.uint16, 0, 65536), (np.int16, -32768, 32768),
    (np.int32, -2**17, 2**17), (np.int8, -128, 128)])
@pytest.mark.parametrize("k", [2, 4, 8])
def test_block_means_are_the_rounded_float_means(dtype: type, low: int, high: int,
                                                 k: int) -> None:
    """Integer sums give what a float mean over blocks, rounded half to even, gives: random
    values and values made of exact halves (0, 2, 4 averaged give .5 often), odd edges dropped."""
    rng = np.random.default_rng(k)
    for shape in [(203, 190), (37, 21)]:
        noisy = rng.integers(low, high, shape).astype(dtype)
        halves = (rng.integers(-1 if low < 0 else 0, 3, shape) * 2).astype(dtype)
        for arr in (noisy, halves):
            rows, cols = shape[0] // k * k, shape[1] // k * k
            blocks = arr[:rows, :cols].reshape(rows // k, k, cols // k, k)
            want = np.rint(blocks.astype(np.float64).mean(axis=(1, 3))).astype(dtype)
            got = block_mean(arr, k)
            assert got.dtype == arr.dtype
            np.testing.assert_array_equal(got, want)


def test_block_means_do_not_overflow_at_extreme_values_or_large_blocks() -> None:
    """The accumulator is wide enough for k * k of the dtype's largest value: 16-bit frames at
    k = 256 (a 16384-px film reduced to 64 px) and 32-bit values near their limits."""
    for dtype, k in ((np.uint16, 256), (np.uint32, 4), (np.int32, 4), (np.int16, 256)):
        info = np.iinfo(dtype)
        for value in (info.max, info.min):
            arr = np.full((2 * k, k), value, dtype)
            np.testing.assert_array_equal(block_mean(arr, k), np.full((2, 1), value, dtype))


def test_padding_keeps_full_resolution(tmp_path: Path) -> None:
    """Averaging would mix padding with anatomy: the mask needs the stored values as they are."""
    padded = BASE.copy()
    padded[:, :20] = 4095
    path = write(make_ds(padded, bits_stored=12, PixelPaddingValue=4095), tmp_path / "p.dcm")
    got = load_grey(path, Settings(reduced_min_side=128).ingest_config())
    assert got.grey.shape == (600, 520)


def test_odd_sized_jpeg_2000_decodes_at_the_planned_level(tmp_path: Path) -> None:
    """Pillow sizes a reduced image by rounding (465 / 4 -> 116) where OpenJPEG takes the ceiling
    (117) and then refused levels >= 2 of odd-sized films: they fell back to level 1."""
    base = chest_like(521, 465, maximum=4095)
    ds = make_ds(base, bits_stored=12)
    ds.compress(JPEG2000Lossless, base)
    path = write(ds, tmp_path / "odd.dcm")
    red = load_grey(path, Settings(reduced_min_side=64).ingest_config())
    assert any("JPEG 2000 resolution level 1/4: 521 x 465 -> 131 x 117" in s for s in red.steps), \
        red.steps
    assert red.grey.shape == (131, 117)
    full = load_grey(path, FULL)
    assert np.abs(preprocess(red.grey, 64) - preprocess(full.grey, 64)).mean() < 0.02

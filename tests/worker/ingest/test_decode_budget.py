"""Memory per decode is bounded from the headers, before decoding: tiny files claiming huge images
fail fast with a reason; reduced decoding is preferred where the codec allows; a corrupt
codestream does not end up screened."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ingest_factories import chest_like, jpeg_baseline_ds, make_ds, write
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless

from pneumoscreen.worker.ingest import FailedImage, IngestConfig, load_grey
from pneumoscreen.worker.settings import Settings

ROWS, COLS = 7000, 8000  # 56 M pixels: under max_pixels (60 M), as in the fuzz campaign


def cfg(**kw: object) -> IngestConfig:
    return Settings(**kw).ingest_config()  # type: ignore[arg-type]


def _claim(frame: bytes, rows: int, cols: int) -> bytes:
    """The codestream with its own header patched to claim ``rows`` x ``cols``."""
    if frame[:4] == b"\xff\x4f\xff\x51":  # J2K SIZ: Xsiz, Ysiz after Lsiz, Rsiz
        return frame[:8] + struct.pack(">II", cols, rows) + frame[16:]
    for sof in (b"\xff\xc0", b"\xff\xf7"):  # baseline JPEG, JPEG-LS: P, Y, X after the length
        pos = frame.find(sof)
        if pos > 0:
            return frame[:pos + 5] + struct.pack(">HH", rows, cols) + frame[pos + 9:]
    raise AssertionError("no SOF/SIZ to patch")


def _tiny_claiming_huge(kind: str, tmp_path: Path) -> Path:
    base = chest_like(64, 64, maximum=255 if kind == "jpeg" else 4095)
    if kind == "jpeg":
        ds = jpeg_baseline_ds(base)
    else:
        ds = make_ds(base, bits_stored=12)
        ds.compress({"j2k": JPEG2000Lossless, "jpegls": JPEGLSLossless}[kind], base)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([_claim(frame, ROWS, COLS)])
    ds.Rows, ds.Columns = ROWS, COLS  # both headers agree: only the size gives it away
    return write(ds, tmp_path / f"{kind}.dcm")


def _deflated_claiming_huge(tmp_path: Path) -> Path:
    arr = np.zeros((ROWS, COLS), np.uint16)
    arr[::97, ::89] = 4095  # not constant, and deflates to almost nothing
    ds = make_ds(arr, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return write(ds, tmp_path / "deflated.dcm")


def _load_in_subprocess(path: Path) -> dict:
    """``load_grey`` in a fresh interpreter: its reason and how much its peak RSS grew."""
    code = f"""
import json, resource
from pathlib import Path
from pneumoscreen.worker.ingest import IngestError, load_grey
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_grey(Path({str(path)!r}))
    reason = None
except IngestError as exc:
    reason = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"reason": reason, "grew_mb": (after - before) / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["jpeg", "j2k", "jpegls"])
def test_tiny_codestream_claiming_56_m_pixels_is_refused_before_decoding(
    tmp_path: Path, kind: str
) -> None:
    path = _tiny_claiming_huge(kind, tmp_path)
    assert path.stat().st_size < 20_000
    codec = "JPEG 2000" if kind == "j2k" else "JPEG"
    with pytest.raises(FailedImage, match=rf"^implausible pixel data: a \d+-byte {codec} "
                                          rf"codestream cannot hold {ROWS} x {COLS} pixels$"):
        load_grey(path)


@pytest.mark.slow
def test_huge_claims_cost_little_memory(tmp_path: Path) -> None:
    """Before the budget, each of these needed 1.8-2 GB: now the peak grows by a bounded amount
    (the deflated file's 107 MiB of inflated pixel bytes are read before they can be refused)."""
    for path, limit_mb in [(_tiny_claiming_huge("jpegls", tmp_path), 60),
                           (_tiny_claiming_huge("j2k", tmp_path), 60),
                           (_deflated_claiming_huge(tmp_path), 200)]:
        found = _load_in_subprocess(path)
        assert found["reason"], path.name
        assert found["grew_mb"] < limit_mb, (path.name, found)


def test_deflated_file_claiming_56_m_pixels_exceeds_the_budget(tmp_path: Path) -> None:
    path = _deflated_claiming_huge(tmp_path)
    assert path.stat().st_size < 200_000
    with pytest.raises(FailedImage, match=rf"^decoding {ROWS} x {COLS} pixels needs 107 MiB, "
                                          r"beyond the budget of 64 MiB \(decode_budget_mb\)$"):
        load_grey(path)


def test_codec_without_reduced_mode_is_held_to_the_budget(tmp_path: Path) -> None:
    base = chest_like(1024, 600)
    ds = make_ds(base, bits_stored=12)
    ds.compress(JPEGLSLossless, base)
    path = write(ds, tmp_path / "ls.dcm")
    with pytest.raises(FailedImage, match=r"^decoding 1024 x 600 pixels needs 1.17 MiB, beyond "
                                          r"the budget of 1 MiB \(decode_budget_mb\)$"):
        load_grey(path, cfg(decode_budget_mb=1))
    assert load_grey(path, cfg()).grey.shape == (512, 300)  # full decode, then block means


def test_reduced_decoding_fits_a_budget_that_full_decoding_exceeds(tmp_path: Path) -> None:
    base = chest_like(1024, 1024)
    ds = make_ds(base, bits_stored=12)
    ds.compress(JPEG2000Lossless, base)
    path = write(ds, tmp_path / "j2k.dcm")
    small = cfg(decode_budget_mb=1, reduced_min_side=256)  # 1024² x 2 bytes = 2 MiB
    got = load_grey(path, small)
    assert got.grey.shape == (256, 256)
    with pytest.raises(FailedImage, match=r"^decoding 1024 x 1024 pixels needs 2 MiB, beyond "
                                          r"the budget of 1 MiB \(decode_budget_mb\)$"):
        load_grey(path, small, reduced=False)


def test_codestream_cut_before_its_end_marker_fails(tmp_path: Path) -> None:
    base = chest_like(256, 256)
    ds = make_ds(base, bits_stored=12)
    ds.compress(JPEGLSLossless, base)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) * 2 // 3]])
    with pytest.raises(FailedImage, match=r"^pixel data truncated: the JPEG codestream ends "
                                          r"before its end marker$"):
        load_grey(write(ds, tmp_path / "cut.dcm"))


def test_codestream_decoding_to_a_constant_fails(tmp_path: Path) -> None:
    flat = np.full((64, 64), 1000, np.uint16)
    ds = make_ds(flat, bits_stored=12)
    ds.compress(JPEGLSLossless, flat)
    with pytest.raises(FailedImage, match=r"^pixel data decodes to a constant image \(every "
                                          r"pixel is 1000\)"):
        load_grey(write(ds, tmp_path / "flat.dcm"))


def test_a_jp2_file_in_pixel_data_is_held_to_its_codestream_header(tmp_path: Path) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(chest_like(300, 280, maximum=255).astype(np.uint8)).save(
        buf, format="JPEG2000", irreversible=False)  # a JP2 file, boxes and all
    ds = make_ds(chest_like(16, 16, maximum=255).astype(np.uint8))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    with pytest.raises(FailedImage, match=r"^codestream is 300 x 280 but Rows x Columns is "
                                          r"16 x 16$"):
        load_grey(write(ds, tmp_path / "jp2.dcm"))

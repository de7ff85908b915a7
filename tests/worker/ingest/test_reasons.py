"""Specific reasons where catch-alls used to be, on made and real files; nothing a database
refuses in a reason; header reads reserve no more than the file holds."""

from __future__ import annotations

import io
import random
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ingest_factories import chest_like, jpeg_baseline_ds, make_ds, patch_element, write
from PIL import Image

from pneumoscreen.worker.ingest import FailedImage, IngestError, load_grey, probe
from pneumoscreen.worker.ingest.errors import safe_text
from pneumoscreen.worker.ingest.jpeg_check import libjpeg_words

RSNA = "dicom/chest/CR_chest_JPEG_baseline_rsna_003d8fa0.dcm"


def _both(path: Path) -> list[str]:
    """The reasons probe and load_grey give (probe may accept: then only load_grey's)."""
    out = []
    for read in (probe, load_grey):
        try:
            read(path)
        except IngestError as exc:
            out.append(str(exc))
    return out


def test_png_with_a_damaged_header_names_it_not_the_file_object(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(chest_like(64, 64, maximum=255).astype(np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[12:16] = b"IHDX"  # the first chunk's type: the signature is fine, the header is not
    path = tmp_path / "a.png"
    path.write_bytes(data)
    assert _both(path) == ["cannot read PNG: its signature is PNG but Pillow cannot identify the "
                           "rest (a damaged header)"] * 2


def test_an_infinite_number_names_its_tag(tmp_path: Path) -> None:
    ds = make_ds(chest_like(64, 64))
    ds.NumberOfFrames = 1
    path = write(ds, tmp_path / "f.dcm")
    patch_element(path, 0x00280008, b"1e999")  # IS: converts to an infinite float, then int()
    assert _both(path) == ["Number of Frames (0028,0008) holds an invalid value for its VR (IS): "
                           "it cannot be read (OverflowError)"] * 2


def test_rows_that_are_no_number_are_named(tmp_path: Path) -> None:
    path = write(make_ds(chest_like(64, 512)), tmp_path / "r.dcm")
    patch_element(path, 0x00280010, b"\x00\x02\x00\x02")  # two values where one number belongs
    assert _both(path) == ["Rows (0028,0010) is an invalid value, not a number of pixels"] * 2


def _corrupt_jpeg_dicom(src: Path, tmp_path: Path) -> Path:
    ds = pydicom.dcmread(src)
    frame = bytearray(next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)))
    rng = random.Random(3)
    for _ in range(6):  # inside the entropy-coded data, clear of the headers and the EOI
        frame[rng.randrange(len(frame) // 3, len(frame) - 4)] = rng.randrange(256)
    ds.PixelData = pydicom.encaps.encapsulate([bytes(frame)])
    out = tmp_path / "corrupt.dcm"
    ds.save_as(out)
    return out


def test_corrupt_jpeg_fails_with_the_decoders_words(shared_dir: Path, tmp_path: Path) -> None:
    """A real film with bytes flipped in its entropy-coded data: libjpeg-turbo's warning, as the
    reason, at reduced and at full resolution (it used to be screened as a chest)."""
    path = _corrupt_jpeg_dicom(shared_dir / RSNA, tmp_path)
    want = "corrupt JPEG data: premature end of data segment (libjpeg-turbo)"
    for reduced in (True, False):
        with pytest.raises(FailedImage) as caught:
            load_grey(path, reduced=reduced)
        assert str(caught.value) == want


def test_corrupt_jpeg_file_fails_too(shared_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(_corrupt_jpeg_dicom(shared_dir / RSNA, tmp_path))
    path = tmp_path / "c.jpg"
    path.write_bytes(next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)))
    with pytest.raises(FailedImage, match=r"^corrupt JPEG data: premature end of data segment "
                                          r"\(libjpeg-turbo\)$"):
        load_grey(path)


def test_libjpeg_words_keep_the_code() -> None:
    message = ("libjpeg error code '-1038' returned from Decode(): A misplaced marker segment "
               "was found - AC coefficient decoding out of sync")
    assert libjpeg_words(message) == ("libjpeg: A misplaced marker segment was found - AC "
                                      "coefficient decoding out of sync (error code -1038)")
    assert libjpeg_words("something else") is None
    # pydicom joins every plugin's words; Pillow's names its file object, never quoted back
    joined = ("pylibjpeg: libjpeg error code '-1038' returned from Decode(): A misplaced marker "
              "segment was found - decoder out of sync pillow: cannot identify image file "
              "<_io.BytesIO object at 0x7f1276051990>")
    assert libjpeg_words(joined) == ("libjpeg: A misplaced marker segment was found - decoder "
                                     "out of sync (error code -1038)")


def test_jpeg_cut_short_is_a_premature_end(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(chest_like(256, 256, maximum=255).astype(np.uint8)).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[:-300])
    with pytest.raises(FailedImage, match=r"^(corrupt JPEG data: premature end|cannot decode "
                                          r"JPEG: image file is truncated)"):
        load_grey(path)
    ds = jpeg_baseline_ds(chest_like(256, 256, maximum=255))
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = pydicom.encaps.encapsulate([frame[:-300]])
    with pytest.raises(FailedImage, match=r"^pixel data truncated: the JPEG codestream ends "
                                          r"before its end marker"):
        load_grey(write(ds, tmp_path / "cut.dcm"))


def test_nul_in_the_transfer_syntax_is_not_quoted(shared_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(shared_dir / RSNA)
    ds.file_meta.TransferSyntaxUID = "1.2.840\x00.10008.1.2.4.50"
    path = tmp_path / "nul.dcm"
    ds.save_as(path)
    reasons = _both(path)
    assert reasons and all("\x00" not in r for r in reasons)
    assert reasons[0].startswith("Transfer Syntax UID (0002,0010) is not a valid UID: an invalid "
                                 "value")


def test_reasons_never_hold_what_a_database_refuses() -> None:
    assert safe_text("a\x00b\x1b[31mc\udcff") == "a\ufffdb\ufffd[31mc\ufffd"
    assert str(FailedImage("bad \x00 value")) == "bad \ufffd value"


def test_a_huge_declared_length_reserves_nothing(tmp_path: Path) -> None:
    """Under an address-space limit, an element declaring ~4 GB in a small file is read as the
    file's remaining bytes (it used to be "unreadable DICOM (MemoryError)")."""
    path = write(make_ds(chest_like(64, 64)), tmp_path / "h.dcm")
    data = bytearray(path.read_bytes())
    at = data.index(b"\xe0\x7f\x10\x00")  # Pixel Data (7FE0,0010), explicit VR OW
    data[at + 8:at + 12] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(data[:-1000])  # and the file lacks 1000 of its pixel bytes
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from pneumoscreen.worker.ingest import IngestError, load_grey\n"
        "limit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + (1200 << 20)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit * 2, limit * 2))\n"
        "try:\n    load_grey(Path(sys.argv[1]))\n    print('done')\n"
        "except IngestError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip()
    assert "MemoryError" not in out and "out of memory" not in out, out
    assert out.startswith("pixel data truncated"), out
    assert resource  # the limit is set in the child, never here

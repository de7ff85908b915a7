"""Main-header facts of JPEG and JPEG 2000 codestreams, read without decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from ingest_factories import jpeg_bytes
from PIL import Image

from pneumoscreen.worker.ingest.codestream import codestream_info, j2k_info, jpeg_info


def _j2k(arr: np.ndarray, levels: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG2000", irreversible=False, no_jp2=True,
                              num_resolutions=levels + 1)
    return buf.getvalue()


class TestJ2k:
    def test_dimensions_precision_and_levels(self) -> None:
        arr = np.random.default_rng(0).integers(0, 255, (70, 90), np.uint8)
        info = j2k_info(_j2k(arr, 3))
        assert info is not None and info.kind == "j2k"
        assert (info.rows, info.columns, info.components) == (70, 90, 1)
        assert (info.precision, info.signed, info.levels) == (8, False, 3)

    @pytest.mark.parametrize("data", [b"", b"\xff\x4f\xff\x51", b"\x00" * 100])
    def test_not_a_codestream(self, data: bytes) -> None:
        assert j2k_info(data) is None

    def test_a_jp2_file_is_read_from_its_codestream_box(self) -> None:
        """OpenJPEG decodes JP2 files too: their dimensions must be checked like a raw stream's."""
        arr = np.random.default_rng(0).integers(0, 255, (70, 90), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG2000", irreversible=False)  # JP2 boxes
        assert buf.getvalue()[4:8] == b"jP  "
        info = codestream_info(buf.getvalue())
        assert info is not None and (info.kind, info.rows, info.columns) == ("j2k", 70, 90)


class TestJpeg:
    def test_sof_dimensions(self) -> None:
        arr = np.random.default_rng(1).integers(0, 255, (40, 56), np.uint8)
        info = jpeg_info(jpeg_bytes(arr))
        assert info is not None and info.kind == "jpeg"
        assert (info.rows, info.columns, info.components, info.precision) == (40, 56, 1, 8)

    def test_scan_before_frame_is_malformed(self) -> None:
        assert jpeg_info(b"\xff\xd8\xff\xda\x00\x02") is None

    def test_truncated_stream(self) -> None:
        data = jpeg_bytes(np.zeros((16, 16), np.uint8))
        assert jpeg_info(data[:3]) is None


def test_codestream_info_dispatches() -> None:
    arr = np.zeros((20, 30), np.uint8)
    assert codestream_info(_j2k(arr, 1)).kind == "j2k"  # type: ignore[union-attr]
    assert codestream_info(jpeg_bytes(arr)).kind == "jpeg"  # type: ignore[union-attr]
    assert codestream_info(b"GIF89a") is None

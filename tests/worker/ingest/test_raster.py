"""PNG and JPEG inputs (pneumoscreen.worker.ingest.raster) through load_grey and probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ingest_factories import chest_like
from PIL import Image

from pneumoscreen.model.preprocess import preprocess
from pneumoscreen.worker.ingest import FailedImage, load_grey, probe, sniff_format
from pneumoscreen.worker.settings import Settings


@pytest.fixture
def grey8() -> np.ndarray:
    return chest_like(40, 30, maximum=255).astype(np.uint8)


def _save(arr_or_im: np.ndarray | Image.Image, path: Path, **kw: object) -> Path:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    im.save(path, **kw)
    return path


class TestLoadRaster:
    def test_png_8bit_is_value_over_255_without_stretching(self, tmp_path: Path) -> None:
        arr = (chest_like(40, 30, maximum=100) + 50).astype(np.uint8)  # 50..150: not stretched
        got = load_grey(_save(arr, tmp_path / "a.png"))
        assert got.format == "png"
        np.testing.assert_array_equal(got.grey, arr.astype(np.float32) / 255.0)
        preprocess(got.grey, 16)

    def test_rgb_grey_jpeg_is_unchanged_by_the_colour_conversion(
        self, tmp_path: Path, grey8: np.ndarray
    ) -> None:
        # The training images: grey stored as three equal RGB channels in an 8-bit JPEG.
        path = _save(np.stack([grey8] * 3, -1), tmp_path / "a.jpeg", quality=100)
        with Image.open(path) as im:
            expected = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        np.testing.assert_array_equal(load_grey(path).grey, expected)

    def test_rgb_colour_is_luma(self, tmp_path: Path) -> None:
        arr = np.zeros((4, 4, 3), np.uint8)
        arr[..., 0] = 255
        got = load_grey(_save(arr, tmp_path / "red.png")).grey
        np.testing.assert_allclose(got, 76 / 255.0, atol=1 / 255)  # 0.299 * 255

    def test_rgba_ignores_alpha(self, tmp_path: Path, grey8: np.ndarray) -> None:
        rgba = np.dstack([grey8, grey8, grey8, np.full_like(grey8, 10)])
        np.testing.assert_array_equal(load_grey(_save(rgba, tmp_path / "a.png")).grey,
                                      grey8 / np.float32(255.0))

    def test_palette(self, tmp_path: Path, grey8: np.ndarray) -> None:
        im = Image.fromarray(grey8).convert("P")
        got = load_grey(_save(im, tmp_path / "p.png")).grey
        np.testing.assert_allclose(got, grey8 / 255.0, atol=1e-6)

    def test_16bit_grey_over_65535(self, tmp_path: Path) -> None:
        arr = chest_like(40, 30, maximum=65535)
        got = load_grey(_save(Image.fromarray(arr), tmp_path / "a.png"))  # uint16 → I;16
        np.testing.assert_allclose(got.grey, arr / 65535.0, atol=1e-7)
        assert got.steps[-1].endswith("value/65535")

    def test_truncated_jpeg_fails(self, tmp_path: Path, grey8: np.ndarray) -> None:
        path = _save(np.stack([grey8] * 3, -1), tmp_path / "a.jpg")
        path.write_bytes(path.read_bytes()[:200])
        with pytest.raises(FailedImage, match=r"^cannot (decode|read) JPEG"):
            load_grey(path)

    def test_pixel_limit(self, tmp_path: Path, grey8: np.ndarray) -> None:
        path = _save(grey8, tmp_path / "a.png")
        with pytest.raises(FailedImage, match=r"^PNG size 30 x 40 is outside 1\.\.100 pixels"):
            probe(path, Settings(max_pixels=100).ingest_config())

    def test_png_named_jpg_is_read_by_content(self, tmp_path: Path, grey8: np.ndarray) -> None:
        path = _save(grey8, tmp_path / "a.jpg", format="PNG")
        assert sniff_format(path) == "png" and load_grey(path).format == "png"

    def test_probe_has_the_metadata_keys(self, tmp_path: Path, grey8: np.ndarray) -> None:
        found = probe(_save(grey8, tmp_path / "a.png"))
        assert found.sop_instance_uid is None
        assert found.metadata["modality"] is None and found.metadata["meta"]["mode"] == "L"

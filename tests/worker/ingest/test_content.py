"""No content, no screening: real films pass, uniform and tiny images fail with their cause, a
window that shows nothing gives way to the stored range (and ``inspect`` says so)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ingest_factories import chest_like, make_ds, write
from PIL import Image

from pneumoscreen.worker.ingest import FailedImage, load_grey, probe
from pneumoscreen.worker.ingest.content import (
    MIN_LEVELS,
    MIN_SPREAD,
    content_problem,
    levels_and_spread,
)
from pneumoscreen.worker.ingest.inspection import inspect_file

REPO = Path(__file__).resolve().parents[3]
RSNA = "chest/CR_chest_JPEG_baseline_rsna_003d8fa0.dcm"


def test_real_films_are_far_from_the_bounds(shared_dir: Path) -> None:
    """The thresholds' margin, on real films: every chest DICOM, the samples, 40 Kermany images."""
    rng = random.Random(0)
    kermany = sorted((shared_dir / "data/chest_xray/train").glob("*/*.jpeg"))
    files = [*sorted((shared_dir / "dicom/chest").glob("*.dcm")),
             *(REPO / "samples" / n for n in ("chest_export.png", "chest_export_opacity.jpg",
                                               "cr_chest_jpeg_baseline.dcm")),
             *rng.sample(kermany, min(40, len(kermany)))]
    for path in files:
        grey = load_grey(path).grey
        levels, spread = levels_and_spread(grey)
        assert levels >= 4 * MIN_LEVELS and spread >= 4 * MIN_SPREAD, path.name


def _png(arr: np.ndarray, path: Path, fmt: str = "PNG") -> Path:
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.mark.parametrize(("size", "fmt"), [((1, 1), "JPEG"), ((3, 3), "PNG"), ((20, 300), "PNG")])
def test_tiny_png_and_jpeg_fail_at_probe_and_decode(tmp_path: Path, size: tuple[int, int],
                                                     fmt: str) -> None:
    arr = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    path = _png(arr, tmp_path / f"tiny.{fmt.lower()}", fmt)
    want = (f"image is {size[0]} x {size[1]} pixels, smaller than a radiograph can be "
            "(at least 32 a side): nothing to screen")
    for read in (probe, load_grey):
        with pytest.raises(FailedImage) as caught:
            read(path)
        assert str(caught.value) == want


def test_tiny_dicom_fails_after_decoding(tmp_path: Path) -> None:
    path = write(make_ds(chest_like(3, 3)), tmp_path / "t.dcm")
    with pytest.raises(FailedImage, match=r"^image is 3 x 3 pixels, smaller than a radiograph"):
        load_grey(path)


def test_uniform_and_nearly_uniform_rasters_fail(tmp_path: Path) -> None:
    grey = _png(np.full((224, 224), 128, np.uint8), tmp_path / "grey.png")
    with pytest.raises(FailedImage, match=r"^no content: the image is one uniform grey \(0\.502"):
        load_grey(grey)
    two = np.full((224, 224), 100, np.uint8)
    two[::7] = 140  # stripes: two levels, a wide spread, no anatomy
    with pytest.raises(FailedImage, match=r"^no content: the image is nearly uniform \(2 grey "
                                          r"levels of 256"):
        load_grey(_png(two, tmp_path / "two.png"))
    faint = (120 + np.random.default_rng(1).integers(0, 4, (224, 224))).astype(np.uint8)
    assert content_problem(faint / 255.0) is not None  # 4 levels, spread 0.012


def _windowed(src: Path, tmp_path: Path, **tags: object) -> Path:
    ds = pydicom.dcmread(src)
    for key, value in tags.items():
        setattr(ds, key, value)
    out = tmp_path / "w.dcm"
    ds.save_as(out)
    return out


def test_window_covering_none_of_the_values_gives_way_to_the_stored_range(
        shared_dir: Path, tmp_path: Path) -> None:
    src = shared_dir / "dicom" / RSNA
    plain = load_grey(src).grey
    path = _windowed(src, tmp_path, WindowCenter=5000, WindowWidth=100)  # 8-bit data: all black
    got = load_grey(path)
    np.testing.assert_array_equal(got.grey, plain)
    assert any(s.startswith("window centre 5000 width 100 LINEAR ignored: it clips 100.0% of "
                            "the pixels to black") for s in got.steps), got.steps
    listed = inspect_file(path)
    assert listed.decision == "done"
    assert any("ignored: it clips 100.0% of the pixels to black" in s for s in listed.steps)


def test_huge_window_width_gives_way_too(shared_dir: Path, tmp_path: Path) -> None:
    path = _windowed(shared_dir / "dicom" / RSNA, tmp_path, WindowCenter=128, WindowWidth=1e38)
    got = load_grey(path)
    assert content_problem(got.grey) is None
    assert any("ignored: it leaves the image nearly uniform (1 grey levels" in s
               for s in got.steps), got.steps


def test_a_window_that_shows_anatomy_is_kept(shared_dir: Path, tmp_path: Path) -> None:
    path = _windowed(shared_dir / "dicom" / RSNA, tmp_path, WindowCenter=128, WindowWidth=256)
    assert "window centre 128 width 256 LINEAR" in load_grey(path).steps


def test_still_empty_after_the_stretch_fails(tmp_path: Path) -> None:
    values = np.full((64, 64), 1000, np.uint16)
    values[::9, ::9] = 3000  # two stored levels: the stretch has nothing more to show
    path = write(make_ds(values, bits_stored=12, WindowCenter=40000, WindowWidth=10),
                 tmp_path / "two.dcm")
    with pytest.raises(FailedImage, match=r"^no content: the image is nearly uniform \(2 grey"):
        load_grey(path)


def test_samples_folder_untouched(tmp_path: Path) -> None:
    """The bundled samples keep their outcomes (copied, so nothing is written beside them)."""
    folder = shutil.copytree(REPO / "samples", tmp_path / "s")
    for name in ("chest_export.png", "cr_chest_mono2_12bit_windowed.dcm",
                 "dx_chest_mono1_14bit.dcm", "cr_chest_jpeg_baseline.dcm"):
        assert content_problem(load_grey(folder / name).grey) is None

"""Pure pixel steps (pneumoscreen.worker.ingest.pixels): one class per function."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from pneumoscreen.worker.ingest import pixels


def _ds(**tags: object) -> Dataset:
    ds = Dataset()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


class TestApplyWindowing:
    def test_linear_follows_the_standard_formula(self) -> None:
        # PS3.3 C.11.2.1.2.1: c=100, w=51 → x <= 74.5 is 0, x > 124.5 is 1, centre ≈ 0.5.
        out = pixels.window_to_unit(np.array([74.5, 75.0, 99.5, 124.5, 125.0]), 100, 51, "LINEAR")
        assert out[0] == 0.0 and out[-1] == 1.0
        assert out[2] == pytest.approx(0.5)
        assert out[1] == pytest.approx(0.5 / 50)

    def test_linear_exact(self) -> None:
        out = pixels.window_to_unit(np.array([75.0, 100.0, 125.0]), 100, 50, "LINEAR_EXACT")
        np.testing.assert_allclose(out, [0.0, 0.5, 1.0])

    def test_sigmoid_is_half_at_the_centre_and_monotonic(self) -> None:
        x = np.linspace(-1000, 1000, 101)
        out = pixels.window_to_unit(x, 0, 200, "SIGMOID")
        assert out[50] == pytest.approx(0.5)
        assert np.all(np.diff(out) >= 0) and out[0] < 1e-6 and out[-1] > 1 - 1e-6

    def test_width_one_linear_is_a_threshold(self) -> None:
        out = pixels.window_to_unit(np.array([9.0, 9.5, 10.0]), 10, 1, "LINEAR")
        np.testing.assert_array_equal(out, [0.0, 0.0, 1.0])


class TestChooseVoi:
    def test_first_window_of_several(self) -> None:
        window, note = pixels.choose_voi(_ds(WindowCenter=[40, 400], WindowWidth=[80, 2000]))
        assert window is not None and (window.center, window.width) == (40, 80) and note is None

    def test_voi_lut_sequence_wins_over_window(self) -> None:
        item = _ds(LUTDescriptor=[4, 0, 8], LUTData=[0, 85, 170, 255])
        ds = _ds(WindowCenter=40, WindowWidth=80, VOILUTSequence=[item])
        window, _ = pixels.choose_voi(ds)
        assert window is not None and window.kind == "lut"

    @pytest.mark.parametrize(("width", "function"), [(0, "LINEAR"), (0.5, "LINEAR"),
                                                      (0, "SIGMOID"), (-3, "LINEAR_EXACT")])
    def test_invalid_width_falls_back_with_a_note(self, width: float, function: str) -> None:
        window, note = pixels.choose_voi(
            _ds(WindowCenter=10, WindowWidth=width, VOILUTFunction=function)
        )
        assert window is None
        assert note is not None and note.startswith(f"Window Width {width:g} is invalid")

    def test_unknown_function_is_linear_with_a_note(self) -> None:
        window, note = pixels.choose_voi(
            _ds(WindowCenter=10, WindowWidth=20, VOILUTFunction="CUBIC")
        )
        assert window is not None and window.function == "LINEAR"
        assert note is not None and "VOI LUT Function CUBIC is unknown" in note

    def test_nothing_present(self) -> None:
        assert pixels.choose_voi(_ds()) == (None, None)


class TestApplyVoiLutSequence:
    def test_scaled_by_the_lut_bit_depth(self) -> None:
        item = _ds(LUTDescriptor=[4, 10, 8], LUTData=[0, 85, 170, 255])
        item["LUTData"].VR = "US"
        ds = _ds(VOILUTSequence=[item])
        out = pixels.apply_voi_lut_sequence(np.array([5.0, 10, 11, 12, 13, 99]), ds)
        np.testing.assert_allclose(out, [0, 0, 85 / 255, 170 / 255, 1, 1])


class TestPaddingMask:
    def test_value(self) -> None:
        arr = np.array([[0, 5], [0, 7]])
        mask = pixels.padding_mask(arr, _ds(PixelPaddingValue=0))
        np.testing.assert_array_equal(mask, [[True, False], [True, False]])

    def test_range_limit(self) -> None:
        arr = np.array([1, 2, 3, 50])
        mask = pixels.padding_mask(arr, _ds(PixelPaddingValue=3, PixelPaddingRangeLimit=1))
        np.testing.assert_array_equal(mask, [True, True, True, False])

    def test_absent_or_unused(self) -> None:
        assert pixels.padding_mask(np.arange(4), _ds()) is None
        assert pixels.padding_mask(np.arange(4), _ds(PixelPaddingValue=99)) is None


class TestApplyModalityLut:
    def test_rescale(self) -> None:
        out = pixels.apply_modality_lut(np.array([0, 1000], dtype=np.int16),
                                        _ds(RescaleSlope=2, RescaleIntercept=-1024))
        np.testing.assert_array_equal(out, [-1024.0, 976.0])
        assert out.dtype == np.float64

    def test_absent_is_identity(self) -> None:
        out = pixels.apply_modality_lut(np.array([3, 4], dtype=np.uint16), _ds())
        np.testing.assert_array_equal(out, [3.0, 4.0])


class TestRobustRange:
    def test_ignores_outliers_and_padding(self) -> None:
        arr = np.concatenate([np.linspace(100, 200, 10_000), [0] * 40, [65535] * 5])
        lo, hi = pixels.robust_range(arr, (1, 99), arr == 0)
        assert 100 <= lo < 102 and 198 < hi <= 200

    def test_uniform_percentiles_fall_back_to_min_max(self) -> None:
        arr = np.array([5.0] * 1000 + [9.0])
        assert pixels.robust_range(arr, (1, 99)) == (5.0, 9.0)


class TestApplyInversion:
    def test_monochrome1_only(self) -> None:
        arr = np.array([0.0, 0.25, 1.0])
        np.testing.assert_allclose(
            pixels.apply_inversion(arr, _ds(PhotometricInterpretation="MONOCHROME1")), 1 - arr
        )
        assert pixels.apply_inversion(arr, _ds(PhotometricInterpretation="MONOCHROME2")) is arr


class TestColourToGrey:
    def test_rgb_luma_without_stretching(self) -> None:
        arr = np.array([[[255, 0, 0], [100, 100, 100]]], dtype=np.uint8)
        out = pixels.colour_to_grey(arr, _ds(PhotometricInterpretation="RGB", BitsStored=8))
        np.testing.assert_allclose(out, [[0.299, 100 / 255]], atol=1e-9)

"""``screen bench shift``: the acquisition changes do what they say, and the check runs on the
bundled model's internal test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoscreen.worker.bench.shift import SHIFTS, blur, shift_check, shift_down, zoom


def _x() -> np.ndarray:
    return np.random.default_rng(0).random((2, 40, 40, 1), dtype=np.float32)


def test_zooming_out_frames_the_film_in_black_and_in_enlarges_the_centre() -> None:
    x = _x()
    out = zoom(x, 0.5)
    assert out.shape == x.shape
    assert out[:, :10].max() == 0 and out[:, 30:].max() == 0 and out[:, :, :10].max() == 0
    assert out[:, 10:30, 10:30].min() > 0  # the whole film, shrunk into the middle
    x[:, 10:30, 10:30] = 1.0  # the centre white, the rest random
    assert zoom(x, 2.0).min() == pytest.approx(1.0)


def test_moving_down_keeps_the_film_below_a_black_band() -> None:
    x = _x()
    out = shift_down(x, 0.25)
    assert out[:, :10].max() == 0
    np.testing.assert_array_equal(out[:, 10:], x[:, :30])


def test_blur_keeps_a_flat_film_and_softens_an_edge() -> None:
    flat = np.full((1, 8, 8, 1), 0.3, np.float32)
    np.testing.assert_allclose(blur(flat), flat, atol=1e-6)
    edge = np.zeros((1, 8, 8, 1), np.float32)
    edge[:, :, 4:] = 1.0
    soft = blur(edge)
    assert 0 < soft[0, 4, 3, 0] < 1 and 0 < soft[0, 4, 4, 0] < 1


def test_every_shift_keeps_the_input_contract() -> None:
    x = _x()
    for name, change in SHIFTS.items():
        out = np.clip(change(x.copy()), 0, 1)
        assert out.shape == x.shape and out.dtype == np.float32, name


@pytest.mark.shared
@pytest.mark.slow
def test_shift_check_on_the_bundled_model(shared_dir: Path) -> None:
    from pneumoscreen.model.bundle import load_model

    out = shift_check(load_model(), shared_dir / "data" / "chest_xray", limit=80)
    assert set(out["shifts"]) == set(SHIFTS) and out["n"] <= 80
    stored = out["shifts"]["as stored"]
    assert stored["auc"] > 0.9 and 0 <= stored["false_positives"] <= out["normal"]


def test_bench_shift_says_what_is_wrong_with_a_folder_in_one_line(tmp_path: Path) -> None:
    from live import run_screen, screen_env

    env = screen_env(data_dir=tmp_path / "data", database_url="", broker_url="",
                     SCREEN_MODEL_PATH="bundled:cnn-s", COLUMNS="300")
    out = run_screen(env, "bench", "shift", str(tmp_path))
    assert out.returncode == 1, out.stderr
    # TensorFlow's own start-up line about CUDA may come first on stderr.
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "neither train/NORMAL|PNEUMONIA" in errors[0], out.stderr
    assert "Traceback" not in out.stderr

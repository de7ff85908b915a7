"""Registration of a film to the mean chest (``--register-chest``): it finds a known shift and
scale, moves the chest back, survives a model file, and refuses a bad template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from made_chest import chest as _base_chest
from made_chest import moved as _moved

from pneumoscreen.model import registration as R

SIZE = 112


def _chest(size: int = SIZE) -> np.ndarray:
    return _base_chest(size)


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    return R.mean_chest(_chest()[None, ..., None])


@pytest.mark.parametrize(("scale", "dy", "dx"), [(1.0, 0.0, 0.0), (1.0, 0.125, 0.0),
                                                 (1.0, -0.07, 0.05), (0.857, 0.0, 0.0),
                                                 (1.143, 0.036, -0.036)])
def test_the_shift_and_scale_of_a_moved_chest_are_found(template: np.ndarray, scale: float,
                                                       dy: float, dx: float) -> None:
    film = _moved(_chest(), scale, dy, dx)
    est = np.asarray(R.estimate(film[None, ..., None], R.template_terms(template)))[0]
    cell = 1 / R.GRID
    assert est[0] == pytest.approx(dy, abs=1.5 * cell)
    assert est[1] == pytest.approx(dx, abs=1.5 * cell)
    assert est[2] == pytest.approx(scale, abs=0.04)


def test_the_layer_puts_the_chest_back(template: np.ndarray) -> None:
    chest = _chest()
    film = _moved(chest, 0.9, 0.1, -0.05)
    back = np.asarray(R.layer(template)(film[None, ..., None]))[0, ..., 0]
    centre = slice(SIZE // 5, SIZE - SIZE // 5)
    before = np.abs(film - chest)[centre, centre].mean()
    after = np.abs(back - chest)[centre, centre].mean()
    assert after < before / 4, (before, after)


def test_affine_and_its_inverse_undo_each_other() -> None:
    img = _chest()[None, ..., None]
    there = R.affine(img, [1.1], [0.05], [-0.03])
    back = np.asarray(R.affine(there, [1.1], [0.05], [-0.03], inverse=True))
    inner = slice(20, SIZE - 20)
    moved = np.abs(np.asarray(there) - img)[0, inner, inner, 0].mean()
    undone = np.abs(back - img)[0, inner, inner, 0].mean()  # what is left: bilinear blur
    assert undone < moved / 5, (moved, undone)
    assert np.array_equal(np.asarray(R.affine(img, [1.0], [0.0], [0.0])), img)


def test_a_blank_film_stays_blank(template: np.ndarray) -> None:
    """Nothing to match: whatever move wins, the film is never made non-blank and never NaN
    (the guard, not the registration, turns a blank film away)."""
    blank = np.zeros((2, SIZE, SIZE, 1), np.float32)
    out = np.asarray(R.layer(template)(blank))
    assert np.isfinite(out).all() and not out.any()


def test_a_registering_model_survives_its_file_with_its_template(tmp_path: Path,
                                                                 template: np.ndarray) -> None:
    from pneumoscreen.model.architectures import LUNG_CROP, build, load_keras

    model = build("mobilenetv2", 64, "none", crop=LUNG_CROP, template=template)
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_keras(path)
    layer = R.register_layer(again)
    assert layer is not None and np.array_equal(layer.template, template)
    x = np.stack([_moved(_chest(64), 0.9, 0.05, 0.0)[..., None], _chest(64)[..., None]])
    np.testing.assert_allclose(np.asarray(again(x)["pneumonia"]),
                               np.asarray(model(x)["pneumonia"]), atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((56, 56)), np.full((56, 56), np.nan),
                                 np.ones((8, 8)) * np.eye(8), [["a"]], np.full((56, 56), 7.0)])
def test_a_bad_template_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="chest template"):
        R.layer_class()(bad if isinstance(bad, list) else np.asarray(bad).tolist())


def test_a_model_file_with_a_bad_template_does_not_load(tmp_path: Path,
                                                        template: np.ndarray) -> None:
    """The template is data in the file's configuration: a tampered one is refused on load, as
    a clear model-file error, before anything is screened."""
    import json
    import zipfile

    from pneumoscreen.model.architectures import LUNG_CROP, build
    from pneumoscreen.model.bundle import ModelFileError, load_model, read_spec, write_sidecar

    good = tmp_path / "good.keras"
    model = build("mobilenetv2", 64, "none", crop=LUNG_CROP, template=template)
    model.save(good)
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                text = json.dumps(config).replace('"template": [[', '"template": [[1e9, ', 1)
                assert text != json.dumps(config)
                data = text.encode()
            dst.writestr(item, data)
    from pneumoscreen.model.bundle import ModelSpec

    write_sidecar(bad, ModelSpec(name="t", version="1", input_size=64, threshold=0.5,
                                trained=True))
    assert read_spec(bad).input_size == 64
    with pytest.raises(ModelFileError, match="cannot load"):
        load_model(bad, verify=False)


def test_a_registering_model_is_never_compiled_with_xla(template: np.ndarray) -> None:
    """On a GPU Keras compiles training with XLA when every layer allows it; XLA has no kernel
    for the image transform, so a registering network must say no (checked here on the CPU,
    with the function Keras itself asks)."""
    from keras.src.trainers.trainer import model_supports_jit

    from pneumoscreen.model.architectures import LUNG_CROP, build

    assert model_supports_jit(build("mobilenetv2", 64, "none", crop=LUNG_CROP))
    assert not model_supports_jit(build("mobilenetv2", 64, "none", crop=LUNG_CROP,
                                        template=template))


def test_the_layer_computes_in_float32_under_mixed_precision(template: np.ndarray) -> None:
    """``--mixed-precision`` sets Keras' float16 policy: the match still runs in float32."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        out = R.layer(template)(_moved(_chest(), 1.0, 0.1, 0.0)[None, ..., None])
    finally:
        keras.mixed_precision.set_global_policy(before)
    assert out.dtype == "float32" and np.isfinite(np.asarray(out)).all()


def test_a_sidecar_describes_the_registration() -> None:
    d = R.describe()
    assert d["grid"] == R.GRID and d["scales"][0] < 1 < d["scales"][-1]
    assert d["max_shift"] == pytest.approx(R.MAX_SHIFT / R.GRID, abs=1e-3)


def _masked_ncc_by_hand(film: np.ndarray, template: np.ndarray) -> tuple[float, float, float]:
    """The match written out window by window (no FFT, no summed-area table, nothing computed
    ahead): the reference the fast :func:`R.estimate` must agree with."""
    import tensorflow as tf
    from numpy.lib.stride_tricks import sliding_window_view as windows

    small = np.asarray(tf.image.resize(film[None, ..., None], (R.GRID, R.GRID),
                                       method="area"))[0, ..., 0].astype(np.float64)
    pad = R.MAX_SHIFT + (max(R.SIZES) - R.GRID) // 2
    p = np.pad(small, pad)
    on = np.pad(np.ones((R.GRID, R.GRID)), pad)
    best, arg = -np.inf, (0.0, 0.0, 0.0)
    for m in R.SIZES:
        t = np.asarray(tf.image.resize(template[None, ..., None], (m, m), method="bilinear",
                                       antialias=True))[0, ..., 0].astype(np.float64)
        t = t - t.mean()
        start = pad + (R.GRID - m) // 2 - R.MAX_SHIFT
        span = slice(start, start + 2 * R.MAX_SHIFT + 1)
        w, k = windows(p, (m, m))[span, span], windows(on, (m, m))[span, span]
        n = np.maximum(k.sum(axis=(2, 3)), 1.0)
        s_f, s_ff = w.sum(axis=(2, 3)), (w * w).sum(axis=(2, 3))
        s_t, s_tt = (k * t).sum(axis=(2, 3)), (k * t * t).sum(axis=(2, 3))
        num = (w * t).sum(axis=(2, 3)) - s_f * s_t / n
        var = np.maximum(s_ff - s_f ** 2 / n, 1e-6) * np.maximum(s_tt - s_t ** 2 / n, 1e-6)
        ncc = num / np.sqrt(var) * (n / m ** 2) ** R.OVERLAP_POWER
        i, j = np.unravel_index(np.argmax(ncc), ncc.shape)
        if ncc[i, j] > best:
            best, arg = ncc[i, j], ((i - R.MAX_SHIFT) / R.GRID, (j - R.MAX_SHIFT) / R.GRID,
                                    m / R.GRID)
    return arg


@pytest.mark.parametrize(("scale", "dy", "dx"), [(1.0, 0.0, 0.0), (0.9, 0.1, -0.05),
                                                 (1.12, -0.06, 0.04)])
def test_the_fast_match_is_the_match_written_out(template: np.ndarray, scale: float, dy: float,
                                                 dx: float) -> None:
    film = _moved(_chest(), scale, dy, dx).astype(np.float32)
    layer = R.layer(template)  # the template's terms computed once, as a model file's layer
    fast = np.asarray(layer.transforms(film[None, ..., None]))[0]
    assert tuple(fast) == pytest.approx(_masked_ncc_by_hand(film, template), abs=1e-6)

"""Every ``--arch``: one input contract, two heads, the layers Grad-CAM and the guard need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoscreen.model.architectures import (
    ARCHITECTURES,
    FEATURES_LAYER,
    InitError,
    backbone_layers,
    build,
)

FROM_SCRATCH = [name for name, a in ARCHITECTURES.items() if a.imagenet is not None or
                a.family == "cnn"]
WEIGHTS = "weights/mobilenet_v2_0.35_224_imagenet_notop.weights.h5"


@pytest.mark.parametrize("name", FROM_SCRATCH)
def test_random_init_builds_with_both_heads(name: str) -> None:
    model = build(name, 32, "none")
    x = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    out = model(x, training=False)
    assert set(out) == {"pneumonia", "viral"}
    for key in out:
        values = np.asarray(out[key])
        assert values.shape == (3, 1) and np.all((values >= 0) & (values <= 1))
    names = {layer.name for layer in model.layers}
    assert {FEATURES_LAYER, ARCHITECTURES[name].last_conv, "pneumonia_logit"} <= names


def test_backbone_scaling_maps_the_network_input_to_imagenet_range() -> None:
    import keras

    model = build("mobilenetv2", 32, "none")
    scaled = keras.Model(model.input, model.get_layer("backbone_scaling").output)
    out = np.asarray(scaled(np.array([[[[0.0]], [[1.0]]]], np.float32).reshape(1, 2, 1, 1)
                            .repeat(16, 1).repeat(32, 2)))
    assert out.shape[-1] == 3  # grey replicated to RGB
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)


def test_cnn_has_no_imagenet_weights() -> None:
    with pytest.raises(InitError, match="trained from scratch"):
        build("cnn-s", 32, "some.weights.h5")


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InitError, match="no such weights file"):
        build("mobilenetv2", 32, str(tmp_path / "absent.weights.h5"))


def test_efficientnet_lite0_needs_its_file() -> None:
    with pytest.raises(InitError, match="needs its Keras file"):
        build("efficientnet-lite0", 32, "none")


def test_backbone_layers_exclude_the_head() -> None:
    model = build("mobilenetv2", 32, "none")
    names = {layer.name for layer in backbone_layers(model)}
    assert "pneumonia_logit" not in names and "grey_to_rgb" not in names and "Conv1" in names


@pytest.mark.shared
def test_imagenet_weights_load_into_the_flat_graph(shared_dir: Path) -> None:
    """The weights file from ../shared lands in our graph exactly as Keras Applications loads it."""
    import keras

    path = shared_dir / WEIGHTS
    ours = build("mobilenetv2", 96, str(path))
    ref = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                         include_top=False, weights=str(path))
    compared = 0
    for layer in (lay for lay in ref.layers if lay.weights):
        for a, b in zip(layer.get_weights(), ours.get_layer(layer.name).get_weights(),
                        strict=True):
            np.testing.assert_array_equal(a, b)
            compared += 1
    assert compared == len(ref.weights)


@pytest.mark.shared
def test_efficientnet_lite0_from_the_shared_file(shared_dir: Path) -> None:
    model = build("efficientnet-lite0", 64, str(shared_dir /
                                                "weights/efficientnet_lite0_imagenet_notop.keras"))
    out = model(np.zeros((1, 64, 64, 1), np.float32), training=False)
    assert np.asarray(out["pneumonia"]).shape == (1, 1)


def test_lung_crop_cuts_the_box_inside_the_model() -> None:
    """``--lung-crop``: the model takes the full frame, the network sees only the box, and what
    lies outside the box cannot change the output."""
    import keras

    from pneumoscreen.model.architectures import CROP_LAYER, LUNG_CROP, crop_pixels

    size = 64
    model = build("mobilenetv2", size, "none", crop=LUNG_CROP)
    assert model.input.shape[1:] == (size, size, 1)
    (top, bottom), (left, right) = crop_pixels(size, LUNG_CROP)
    seen = keras.Model(model.input, model.get_layer(CROP_LAYER).output)
    assert seen.output.shape[1:] == (size - top - bottom, size - left - right, 1)
    x = np.random.default_rng(0).random((2, size, size, 1), dtype=np.float32)
    marked = x.copy()
    marked[:, :top, :] = 1.0  # a bright "marker" above the box ...
    marked[:, :, :left] = 0.0  # ... and a dark edge left of it
    a, b = model(x, training=False), model(marked, training=False)
    np.testing.assert_allclose(np.asarray(a["pneumonia"]), np.asarray(b["pneumonia"]), atol=1e-6)
    assert CROP_LAYER not in {layer.name for layer in backbone_layers(model)}


def test_crop_box_is_checked() -> None:
    from pneumoscreen.model.architectures import crop_pixels

    assert crop_pixels(100, (0.15, 0.08, 0.93, 0.92)) == ((15, 7), (8, 8))
    with pytest.raises(ValueError, match="fractions"):
        crop_pixels(100, (0.5, 0.1, 0.4, 0.9))
    with pytest.raises(ValueError, match="less than 32 px"):
        crop_pixels(64, (0.0, 0.0, 0.3, 1.0))
    with pytest.raises(ValueError, match="no --lung-crop"):
        build("cnn-s", 64, "none", crop=(0.1, 0.1, 0.9, 0.9))

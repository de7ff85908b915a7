"""The network families ``screen train --arch`` builds, all with the same input and outputs.

Input: ``(size, size, 1)`` float32 in [0, 1], the output of :func:`pneumoscreen.model.preprocess`.
Grey is replicated to three channels and scaled to each ImageNet backbone's own range *inside* the
model, so serving needs one preprocessing function whatever the architecture. Outputs (a dict):
``pneumonia`` (probability of pneumonia) and ``viral`` (probability that a pneumonia is viral
rather than bacterial; trained on pneumonia images only). Each head is a linear logit layer
followed by a sigmoid layer of its own, so calibration can rescale the logit
(:mod:`pneumoscreen.model.calibration`).

The backbone's layers are built into one flat functional graph (``input_tensor=``), so Grad-CAM
and the feature-space guard can reach the last convolutional block and the pooled features by
layer name (:data:`FEATURES_LAYER`, :attr:`Architecture.last_conv`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumoscreen.model import registration

FEATURES_LAYER = "features"
OUTPUTS = ("pneumonia", "viral")
#: the layer that cuts the lung-field box out of the input (``--lung-crop``)
CROP_LAYER = "lung_crop"
#: a box (y0, x0, y1, x1) in fractions of the square input
Box = tuple[float, float, float, float]
#: ``--lung-crop``'s box: both lung fields with their apices and costophrenic angles on a
#: frontal paediatric film squashed to a square, but not the film's corners and edges, where the
#: "R" and "A-P" markers sit (drawn on 24 random training films before it was chosen; wider
#: than ``augment.LUNG_BOX``, which clipped some apices)
LUNG_CROP: Box = (0.15, 0.08, 0.93, 0.92)


@dataclass(frozen=True)
class Architecture:
    """One ``--arch`` choice: how to build it and how it is fine-tuned."""

    name: str
    family: str  # "cnn" (trained from scratch) or "backbone" (ImageNet transfer)
    last_conv: str  # the layer whose activations Grad-CAM weighs
    default_input_size: int
    settings: dict[str, Any] = field(default_factory=dict)
    #: what ``--init imagenet`` means; None: the family has no ImageNet weights
    imagenet: str | None = None
    #: file suffix a ``--init PATH`` must have
    weights_suffix: str = ".weights.h5"

    @property
    def pretrainable(self) -> bool:
        return self.family == "backbone"


ARCHITECTURES: dict[str, Architecture] = {
    "cnn-s": Architecture("cnn-s", "cnn", "b3_relu1", 96,
                          {"widths": (8, 16, 32, 64), "dense": 32, "dropout": 0.3}),
    "cnn-m": Architecture("cnn-m", "cnn", "b3_relu1", 96,
                          {"widths": (16, 32, 64, 128), "dense": 64, "dropout": 0.3}),
    "cnn-xs": Architecture("cnn-xs", "cnn", "b3_relu1", 128,
                           {"widths": (4, 8, 16, 32), "dense": 16, "dropout": 0.2}),
    "mobilenetv2": Architecture("mobilenetv2", "backbone", "out_relu", 224,
                                {"alpha": 0.35, "dropout": 0.2}, imagenet="imagenet"),
    "mobilenet": Architecture("mobilenet", "backbone", "conv_pw_13_relu", 224,
                              {"alpha": 0.25, "dropout": 0.2}, imagenet="imagenet"),
    "efficientnet-lite0": Architecture("efficientnet-lite0", "backbone", "", 224,
                                       {"dropout": 0.2}, imagenet=None,
                                       weights_suffix=".keras"),
}


class InitError(ValueError):
    """``--init`` does not fit the architecture (a missing or wrong weights file)."""


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from "
                         f"{', '.join(ARCHITECTURES)}") from None


def _weights_arg(arch: Architecture, init: str) -> str | None:
    """``weights=`` for Keras Applications: None, "imagenet" or a checked file path."""
    if init == "none":
        return None
    if init == "imagenet":
        if arch.imagenet is None:
            raise InitError(f"{arch.name} has no Keras Applications ImageNet weights: pass the "
                            "weights file with --init PATH")
        return arch.imagenet
    path = Path(init)
    if not path.is_file():
        raise InitError(f"--init {init}: no such weights file")
    if not path.name.endswith(arch.weights_suffix):
        raise InitError(f"--init {init}: {arch.name} takes a {arch.weights_suffix} file")
    return str(path)


def _heads(features: Any, dropout: float, name: str, inputs: Any) -> Any:
    import keras
    from keras import layers

    x = layers.Dropout(dropout, name="head_dropout")(features)
    outputs = {}
    for out in OUTPUTS:
        logit = layers.Dense(1, name=f"{out}_logit")(x)
        # float32 even under mixed precision, so probabilities stay exact.
        outputs[out] = layers.Activation("sigmoid", dtype="float32", name=out)(logit)
    return keras.Model(inputs, outputs, name=name)


def _cnn(arch: Architecture, size: int, init: str) -> Any:
    import keras
    from keras import layers

    if init not in ("none", "imagenet"):
        raise InitError(f"{arch.name} is trained from scratch: --init must be none")
    s = arch.settings
    inputs = keras.Input((size, size, 1), name="image")
    x = inputs
    for i, width in enumerate(s["widths"]):
        for j in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"b{i}_bn{j}")(x)
            x = layers.Activation("relu", name=f"b{i}_relu{j}")(x)
        x = layers.MaxPooling2D(name=f"b{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(s["dense"], activation="relu", name=FEATURES_LAYER)(x)
    return _heads(x, s["dropout"], f"pneumoscreen_{arch.name.replace('-', '_')}", inputs)


def is_box(value: Any) -> bool:
    """``value`` is four numbers (y0, x0, y1, x1), fractions with y0 < y1 and x0 < x1."""
    if not isinstance(value, list | tuple) or len(value) != 4 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return False
    y0, x0, y1, x1 = value
    return 0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1


def crop_pixels(size: int, box: Box) -> tuple[tuple[int, int], tuple[int, int]]:
    """``Cropping2D``'s ((top, bottom), (left, right)) for a ``box`` of fractions on a square
    input of ``size`` pixels."""
    if not is_box(box):
        raise ValueError(f"crop box {box!r} must be (y0, x0, y1, x1) fractions with y0 < y1, "
                         "x0 < x1")
    y0, x0, y1, x1 = box
    top, left = round(y0 * size), round(x0 * size)
    bottom, right = size - round(y1 * size), size - round(x1 * size)
    if size - top - bottom < 32 or size - left - right < 32:
        raise ValueError(f"crop box {box!r} leaves less than 32 px of a {size} px input")
    return (top, bottom), (left, right)


def _input(size: int, crop: Box | None, template: Any = None) -> tuple[Any, Any]:
    """The model's full-frame input and what the network sees: the input itself, or (``crop``)
    the fixed lung-field box cut out of it; with ``template`` (``--register-chest``), out of the
    film first moved and scaled so its chest lies where the mean training chest lies. Cutting inside
    the model keeps one preprocessing function for every model, and the network never sees the
    film's corners and edges, where the training hospital's markers sit."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name="image")
    if crop is None:
        return inputs, inputs
    film = inputs if template is None else registration.layer(template)(inputs)
    return inputs, layers.Cropping2D(crop_pixels(size, crop), name=CROP_LAYER)(film)


def _rgb(inputs: Any, scale: float, offset: float) -> Any:
    from keras import layers

    x = layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])
    return layers.Rescaling(scale, offset=offset, name="backbone_scaling")(x)


def _keras_app(arch: Architecture, size: int, init: str, crop: Box | None,
               template: Any) -> Any:
    import keras
    from keras import layers

    weights = _weights_arg(arch, init)
    inputs, seen = _input(size, crop, template)
    # MobileNet (v1, v2): RGB in [-1, 1], i.e. x/127.5 - 1 on 0..255; ours is in [0, 1].
    x = _rgb(seen, 2.0, -1.0)
    app = {"mobilenetv2": keras.applications.MobileNetV2,
           "mobilenet": keras.applications.MobileNet}[arch.name]
    try:
        base = app(input_tensor=x, alpha=arch.settings["alpha"], include_top=False,
                   weights=weights)
    except (OSError, ValueError) as exc:
        raise InitError(f"cannot load {arch.name} weights ({init}): {exc}") from exc
    feats = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(base.output)
    return _heads(feats, arch.settings["dropout"], f"pneumoscreen_{arch.name}", inputs)


def _efficientnet_lite0(arch: Architecture, size: int, init: str, crop: Box | None,
                        template: Any) -> Any:
    """EfficientNet-Lite0 from its Keras file (``--init PATH``; ``none`` re-initialises it)."""
    import keras
    from keras import layers

    if init in ("none", "imagenet"):
        raise InitError("efficientnet-lite0 needs its Keras file for the architecture: --init "
                        "PATH (efficientnet_lite0_imagenet_notop.keras)")
    path = _weights_arg(arch, init)
    try:
        donor = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a bad archive
        raise InitError(f"cannot load {path}: {exc}") from exc
    inputs, seen = _input(size, crop, template)
    # EfficientNet-Lite: RGB (x - 127) / 128 on 0..255.
    x = _rgb(seen, 255.0 / 128.0, -127.0 / 128.0)
    y = donor(x)
    feats = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(y)
    return _heads(feats, arch.settings["dropout"], "pneumoscreen_efficientnet_lite0", inputs)


def check_crop(name: str, crop: Box | None, register: bool = False) -> Architecture:
    """The architecture ``name``, if it can take ``crop`` (``--lung-crop`` is for an ImageNet
    backbone; a network trained from scratch has its own size) and ``register``
    (``--register-chest`` moves the box with the chest: it needs a box)."""
    arch = get_architecture(name)
    if crop is not None and arch.family == "cnn":
        raise ValueError(f"{name} is trained from scratch at its own size: no --lung-crop")
    if register and crop is None:
        raise ValueError("--register-chest moves the lung-field box with the chest: it needs "
                         "--lung-crop")
    return arch


def build(name: str, input_size: int, init: str = "none", crop: Box | None = None,
          template: Any = None) -> Any:
    """The Keras model for ``--arch name --input-size N --init init`` (not compiled); ``crop``
    (``--lung-crop``): the network sees only that box of its input (a backbone only);
    ``template`` (``--register-chest``, a :func:`registration.mean_chest`): the box follows the
    chest."""
    arch = check_crop(name, crop, template is not None)
    if input_size < 32:
        raise ValueError(f"input size {input_size} is below the 32 px every network needs")
    if arch.family == "cnn":
        return _cnn(arch, input_size, init)
    if arch.name == "efficientnet-lite0":
        return _efficientnet_lite0(arch, input_size, init, crop, template)
    return _keras_app(arch, input_size, init, crop, template)


def load_keras(path: Any, *, safe_mode: bool = True) -> Any:
    """A model file read back (not compiled), with this module's own layers known to Keras.
    ``safe_mode`` stays on: no lambda layers, no arbitrary code from the archive."""
    import keras

    registration.layer_class()
    return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)


def backbone_layers(model: Any) -> list[Any]:
    """The layers that belong to the pretrained backbone (everything before the pooled features,
    excluding the input replication and scaling)."""
    skip = {"image", registration.REGISTER_LAYER, CROP_LAYER, "grey_to_rgb", "backbone_scaling",
            FEATURES_LAYER, "head_dropout", *OUTPUTS, *(f"{o}_logit" for o in OUTPUTS)}
    return [layer for layer in model.layers if layer.name not in skip]


__all__ = ["ARCHITECTURES", "CROP_LAYER", "FEATURES_LAYER", "LUNG_CROP", "OUTPUTS", "Architecture",
           "InitError", "backbone_layers", "build", "check_crop", "crop_pixels", "get_architecture",
           "is_box", "load_keras"]

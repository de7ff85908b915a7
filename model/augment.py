"""Radiograph augmentation for the training split, run batched inside tf.data.

Only changes a film from another hospital or machine could show: a different crop and zoom, a
small rotation, another exposure (brightness, contrast, gamma), some blur and detector noise. No
flips: the heart sits on the left on every film, and a mirrored chest is not a chest X-ray the
model will ever see.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each change; 0 (or a (1, 1) range) turns one off."""

    rotation_deg: float = 7.0
    shift: float = 0.06
    zoom: float = 0.10
    brightness: float = 0.10
    contrast: float = 0.15
    #: random resized crop: the crop's share of the image area and its aspect ratio range
    crop_area: tuple[float, float] = (1.0, 1.0)
    crop_aspect: tuple[float, float] = (1.0, 1.0)
    #: gamma drawn log-uniformly from [1 / (1 + gamma), 1 + gamma]
    gamma: float = 0.0
    blur_probability: float = 0.0
    noise_std: float = 0.0


#: ``--augment standard``: wave 1's recipe (the shipped ``cnn-s`` was trained with it)
STANDARD = AugmentConfig()
#: ``--augment strong``: for robustness to new patients and other machines
STRONG = AugmentConfig(rotation_deg=7.0, shift=0.0, zoom=0.0, brightness=0.10, contrast=0.20,
                       crop_area=(0.70, 1.0), crop_aspect=(0.85, 1.18), gamma=0.35,
                       blur_probability=0.25, noise_std=0.03)
PRESETS = {"standard": STANDARD, "strong": STRONG, "none": None}


def _random_resized_crop(x: Any, cfg: AugmentConfig, gen: Any) -> Any:
    import tensorflow as tf

    n = tf.shape(x)[0]
    size = tf.shape(x)[1:3]
    lo, hi = cfg.crop_area
    area = gen.uniform([n], lo, hi)
    log_r = gen.uniform([n], math.log(cfg.crop_aspect[0]), math.log(cfg.crop_aspect[1]))
    ratio = tf.exp(log_r)
    h = tf.minimum(tf.sqrt(area / ratio), 1.0)
    w = tf.minimum(tf.sqrt(area * ratio), 1.0)
    y0 = gen.uniform([n]) * (1.0 - h)
    x0 = gen.uniform([n]) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    return tf.image.crop_and_resize(x, boxes, tf.range(n), size)


def _gaussian_blur(x: Any) -> Any:
    import tensorflow as tf

    k = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0])
    k = tf.tensordot(k, k, axes=0)
    k = tf.reshape(k / tf.reduce_sum(k), (5, 5, 1, 1))
    return tf.nn.depthwise_conv2d(x, k, strides=[1, 1, 1, 1], padding="SAME")


def make_augmenter(cfg: AugmentConfig, seed: int) -> Callable[[Any], Any]:
    """A function ``images -> images`` on ``(n, s, s, 1)`` batches in [0, 1]."""
    import keras
    import tensorflow as tf
    from keras import layers

    geometric = []
    if cfg.rotation_deg:
        geometric.append(layers.RandomRotation(cfg.rotation_deg / 360.0, fill_mode="constant",
                                               seed=seed))
    if cfg.shift:
        geometric.append(layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="constant",
                                                  seed=seed + 1))
    if cfg.zoom:
        geometric.append(layers.RandomZoom(cfg.zoom, cfg.zoom, fill_mode="constant",
                                           seed=seed + 2))
    photometric = []
    if cfg.brightness:
        photometric.append(layers.RandomBrightness(cfg.brightness, value_range=(0.0, 1.0),
                                                   seed=seed + 3))
    if cfg.contrast:
        photometric.append(layers.RandomContrast(cfg.contrast, seed=seed + 4))
    stack = keras.Sequential(geometric + photometric, name="augment") if (
        geometric or photometric) else None
    gen = tf.random.Generator.from_seed(seed + 5)
    crop = cfg.crop_area != (1.0, 1.0) or cfg.crop_aspect != (1.0, 1.0)

    def augment(x: Any) -> Any:
        x = tf.convert_to_tensor(x, tf.float32)
        if crop:
            x = _random_resized_crop(x, cfg, gen)
        if stack is not None:
            x = stack(x, training=True)
        x = tf.clip_by_value(x, 0.0, 1.0)
        n = tf.shape(x)[0]
        if cfg.gamma:
            g = tf.exp(gen.uniform([n, 1, 1, 1], -math.log1p(cfg.gamma), math.log1p(cfg.gamma)))
            x = tf.pow(x + 1e-6, g)
        if cfg.blur_probability:
            pick = gen.uniform([n, 1, 1, 1]) < cfg.blur_probability
            x = tf.where(pick, _gaussian_blur(x), x)
        if cfg.noise_std:
            std = gen.uniform([n, 1, 1, 1], 0.0, cfg.noise_std)
            x = x + gen.normal(tf.shape(x)) * std
        # Clip so the network never sees values serving cannot produce.
        return tf.clip_by_value(x, 0.0, 1.0)

    return augment

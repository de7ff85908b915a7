"""Radiograph augmentation for the training split, run batched inside tf.data.

Only changes a film from another hospital or machine could show: a different crop and zoom, a
small rotation, another exposure (brightness, contrast, gamma), some blur and detector noise; and
(``antishortcut``) films without the hospital's corner markers. No
flips: the heart sits on the left on every film, and a mirrored chest is not a chest X-ray the
model will ever see.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    #: anti-shortcut: chance that each corner is inpainted (a rectangle of ``corner_size`` of
    #: the side, drawn per image), before any geometric change
    corner_probability: float = 0.0
    corner_size: tuple[float, float] = (0.10, 0.25)
    #: anti-shortcut: chance that bright text-like blobs outside the lung field are inpainted
    blob_probability: float = 0.0
    #: crops must keep this box (y0, x0, y1, x1, in fractions of the image): the lung fields
    keep_box: tuple[float, float, float, float] | None = None


#: where the lung fields lie on a frontal paediatric film squashed to a square (y0, x0, y1, x1):
#: generous, so a crop that keeps this box keeps both lungs and the costophrenic angles
LUNG_BOX = (0.18, 0.12, 0.90, 0.88)
#: the central part that anti-shortcut erasing never touches (blobs are looked for outside it)
CENTRE_BOX = (0.25, 0.25, 0.75, 0.75)

#: ``--augment standard``: wave 1's recipe (the shipped ``cnn-s`` was trained with it)
STANDARD = AugmentConfig()
#: ``--augment strong``: for robustness to new patients and other machines
STRONG = AugmentConfig(rotation_deg=7.0, shift=0.0, zoom=0.0, brightness=0.10, contrast=0.20,
                       crop_area=(0.70, 1.0), crop_aspect=(0.85, 1.18), gamma=0.35,
                       blur_probability=0.25, noise_std=0.03)
#: ``--augment antishortcut``: ``strong`` plus inpainted corners and text-like blobs (the "R"
#: and "A-P" markers of the training hospital sit in the top corners) and crops that keep the
#: lung fields, so the marker cannot stand in for the lungs
ANTISHORTCUT = AugmentConfig(rotation_deg=7.0, shift=0.0, zoom=0.0, brightness=0.10,
                             contrast=0.20, crop_area=(0.70, 1.0), crop_aspect=(0.85, 1.18),
                             gamma=0.35, blur_probability=0.25, noise_std=0.03,
                             corner_probability=0.5, corner_size=(0.10, 0.25),
                             blob_probability=0.5, keep_box=LUNG_BOX)
#: ``--augment framing``: ``antishortcut`` plus films framed differently (the child higher or
#: lower, nearer or farther: shifts of up to 8 % and zoom in or out by up to 15 %), for a
#: network that sees a fixed box of the film (``--lung-crop``)
FRAMING = replace(ANTISHORTCUT, shift=0.08, zoom=0.15)
PRESETS = {"standard": STANDARD, "strong": STRONG, "antishortcut": ANTISHORTCUT,
           "framing": FRAMING, "none": None}


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
    y0 = _offset(gen.uniform([n]), h, cfg.keep_box, 0)
    x0 = _offset(gen.uniform([n]), w, cfg.keep_box, 1)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    return tf.image.crop_and_resize(x, boxes, tf.range(n), size)


def _offset(u: Any, extent: Any, keep: tuple[float, ...] | None, axis: int) -> Any:
    """The crop's start along one axis: uniform, or (with ``keep``) within the starts whose crop
    still holds ``keep``'s span; centred on it when the crop is too small to hold it."""
    import tensorflow as tf

    if keep is None:
        return u * (1.0 - extent)
    k0, k1 = keep[axis], keep[axis + 2]
    lo = tf.maximum(0.0, k1 - extent)
    hi = tf.minimum(1.0 - extent, k0)
    centred = tf.clip_by_value((k0 + k1) / 2 - extent / 2, 0.0, 1.0 - extent)
    return tf.where(hi >= lo, lo + u * (hi - lo), centred)


def _inpaint_fill(x: Any) -> Any:
    """A smooth stand-in for the image: a wide box blur (what is around a marker, without it)."""
    import tensorflow as tf

    size = tf.shape(x)[1:3]
    small = tf.nn.avg_pool2d(x, ksize=8, strides=8, padding="SAME")
    small = tf.nn.avg_pool2d(small, ksize=3, strides=1, padding="SAME")
    return tf.image.resize(small, size, method="bilinear")


def _grid(x: Any) -> tuple[Any, Any]:
    """Pixel-centre coordinates in [0, 1], shaped ``(1, h, 1, 1)`` and ``(1, 1, w, 1)``."""
    import tensorflow as tf

    h, w = tf.shape(x)[1], tf.shape(x)[2]
    yy = (tf.cast(tf.range(h), tf.float32) + 0.5) / tf.cast(h, tf.float32)
    xx = (tf.cast(tf.range(w), tf.float32) + 0.5) / tf.cast(w, tf.float32)
    return tf.reshape(yy, (1, -1, 1, 1)), tf.reshape(xx, (1, 1, -1, 1))


def outside_centre(x: Any) -> Any:
    """1 outside :data:`CENTRE_BOX`, 0 inside; ``(1, h, w, 1)``."""
    import tensorflow as tf

    yy, xx = _grid(x)
    y0, x0, y1, x1 = CENTRE_BOX
    inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
    return 1.0 - tf.cast(inside, tf.float32)


def corner_mask(x: Any, cfg: AugmentConfig, gen: Any) -> Any:
    """``(n, h, w, 1)``: 1 on the corner rectangles drawn for each image, else 0."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    yy, xx = _grid(x)
    lo, hi = cfg.corner_size
    # Never past the centre box, so the lungs are never erased.
    hi = min(hi, CENTRE_BOX[0], CENTRE_BOX[1])
    lo = min(lo, hi)
    mask = tf.zeros_like(x[..., :1])
    for top in (True, False):
        for left in (True, False):
            on = tf.cast(gen.uniform([n, 1, 1, 1]) < cfg.corner_probability, tf.float32)
            # The bottom corners hold the costophrenic angles: erase less there.
            scale = 1.0 if top else 0.5
            h = gen.uniform([n, 1, 1, 1], lo, hi) * scale
            w = gen.uniform([n, 1, 1, 1], lo, hi) * scale
            in_y = yy < h if top else yy >= 1.0 - h
            in_x = xx < w if left else xx >= 1.0 - w
            mask = tf.maximum(mask, on * tf.cast(in_y & in_x, tf.float32))
    return mask


def outside_lungs(x: Any) -> Any:
    """1 outside :data:`LUNG_BOX`, 0 inside; ``(1, h, w, 1)``: where markers sit, and where no
    lung does (erasing there cannot remove evidence of pneumonia)."""
    import tensorflow as tf

    yy, xx = _grid(x)
    y0, x0, y1, x1 = LUNG_BOX
    inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
    return 1.0 - tf.cast(inside, tf.float32)


def _band(n: Any, taps: list[float], normalise: bool) -> Any:
    """``(n, n)`` matrix ``B`` with ``(B @ v)[i] = sum_k taps[k] * v[i + k - r]`` (zero past the
    ends); ``normalise``: each row divided by the taps that fall inside, as a "SAME" average
    pool counts only the pixels it covers."""
    import tensorflow as tf

    if len(taps) % 2 == 0:
        raise ValueError("a centred filter has an odd number of taps")
    r = len(taps) // 2
    d = tf.range(n)[None, :] - tf.range(n)[:, None]
    inside = tf.cast(tf.abs(d) <= r, tf.float32)
    band = tf.gather(tf.constant(taps, tf.float32), tf.clip_by_value(d + r, 0, 2 * r)) * inside
    return band / tf.reduce_sum(band, axis=1, keepdims=True) if normalise else band


def separable_filter(x: Any, taps: list[float], *, normalise: bool = False) -> Any:
    """``(n, h, w, c)`` filtered by ``taps`` along rows then columns, as two matrix products.

    Why not ``avg_pool2d`` or ``depthwise_conv2d``: on one channel, on some CPUs (seen: AMD
    EPYC, TensorFlow 2.21), a 15 x 15 average pool of 32 films took 5 s, the matrix products
    tens of milliseconds; the results are the same to float rounding."""
    import tensorflow as tf

    rows = _band(tf.shape(x)[1], taps, normalise)
    cols = _band(tf.shape(x)[2], taps, normalise)
    return tf.einsum("bhjc,kj->bhkc", tf.einsum("ij,bjwc->biwc", rows, x), cols)


def max_filter(x: Any, size: int) -> Any:
    """A ``size x size`` "SAME" max pool of ``(n, h, w, c)``, as shifted maxima along rows then
    columns (for the same reason as :func:`separable_filter`)."""
    import tensorflow as tf

    if size % 2 == 0:
        raise ValueError("a centred maximum has an odd size")
    r = size // 2
    for axis in (1, 2):
        pad = [[0, 0]] * 4
        pad[axis] = [r, r]
        padded = tf.pad(x, pad, constant_values=-1e9)
        n = tf.shape(x)[axis]
        x = tf.reduce_max(tf.stack([tf.gather(padded, tf.range(k, k + n), axis=axis)
                                    for k in range(2 * r + 1)]), axis=0)
    return x


def blob_mask(x: Any) -> Any:
    """``(n, h, w, 1)``: 1 on small, bright, text-like blobs outside the lung box.

    A white top-hat (brighter than its 15-px neighbourhood by 0.25, and not dark), grown by a
    few pixels so each letter's edge goes too. Only outside :data:`LUNG_BOX`: inside it the same
    test also finds rib and lung edges, which are evidence, not markers."""
    import tensorflow as tf

    local = separable_filter(x, [1.0] * 15, normalise=True)
    hot = tf.cast((x - local > 0.25) & (x > 0.4), tf.float32) * outside_lungs(x)
    return max_filter(hot, 7) * outside_lungs(x)


def erase_shortcuts(x: Any, cfg: AugmentConfig, gen: Any) -> Any:
    """Inpaint the corners and the text-like blobs picked for each image; the centre box is
    left exactly as it was."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    mask = tf.zeros_like(x)
    if cfg.corner_probability:
        mask = tf.maximum(mask, corner_mask(x, cfg, gen))
    if cfg.blob_probability:
        on = tf.cast(gen.uniform([n, 1, 1, 1]) < cfg.blob_probability, tf.float32)
        mask = tf.maximum(mask, on * blob_mask(x))
    mask = mask * outside_centre(x)
    fill = _inpaint_fill(x)
    # A little texture, so an inpainted patch is not itself a flat, learnable sign.
    fill = fill + gen.normal(tf.shape(x)) * 0.02
    return mask * tf.clip_by_value(fill, 0.0, 1.0) + (1.0 - mask) * x


def _gaussian_blur(x: Any) -> Any:
    """A 5 x 5 binomial blur, zeros past the edges."""
    return separable_filter(x, [v / 16.0 for v in (1.0, 4.0, 6.0, 4.0, 1.0)])


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
    erase = bool(cfg.corner_probability or cfg.blob_probability)

    def augment(x: Any) -> Any:
        x = tf.convert_to_tensor(x, tf.float32)
        if erase:
            x = erase_shortcuts(x, cfg, gen)
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

"""Where the chest lies on the film: each film registered to the mean training chest.

A network that sees a fixed box of its input (``--lung-crop``) is brittle when a film is framed
differently: the child higher or lower, nearer or farther. ``--register-chest`` puts a
:class:`RegisterChest` layer before the box. It finds the shift (up to :data:`MAX_SHIFT` of the
side) and scale (:data:`SIZES`) at which the film best matches the mean chest of the training
split (normalised cross-correlation at :data:`GRID` cells a side), and moves and scales the
film so its chest lies where the mean chest lies. The box then follows the child, within the
search range (21 % of the side, 0.86-1.14 times the size).

It is a simple lung-region estimate, not a segmentation: one template, one similarity, no
learned parameters. The template is the training split's mean film, stored in the layer's
configuration inside the model file, so the file holds everything it needs and serving needs
no change.
The match runs in the Fourier domain (a few small FFTs per film), not as a large convolution,
so it adds little to the model call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the layer's name in every model that registers its input
REGISTER_LAYER = "register_chest"
#: cells a side at which films are matched to the template
GRID = 56
#: largest shift tried, in cells of :data:`GRID` each way (12 of 56: 21 % of the side)
MAX_SHIFT = 12
#: template sizes tried, in cells: the chest from 0.86 to 1.14 times the mean's size (even
#: sizes keep the template centred on a cell; five keep the match cheap beside the network)
SIZES = (48, 52, 56, 60, 64)
#: the similarity is multiplied by (share of the template on the film) ** this: a little
#: preference for the whole chest on the film, so films as taken are not moved on a whim, yet
#: a chest moved or cut off is still followed (set by recovering known shifts of 200 films)
OVERLAP_POWER = 0.5
#: zeros around the film so every shift of every size is a valid match position
_PAD = MAX_SHIFT + (max(SIZES) - GRID) // 2
#: the padded film's side
_SIDE = GRID + 2 * _PAD


def mean_chest(x: np.ndarray) -> np.ndarray:
    """The template: the mean of ``(n, s, s, 1)`` films in [0, 1] at :data:`GRID` cells a side
    (the same area averaging the layer uses)."""
    import tensorflow as tf

    small = tf.image.resize(np.asarray(x, np.float32), (GRID, GRID), method="area")
    return np.asarray(tf.reduce_mean(small, axis=0)[..., 0], np.float32)


def affine(images: Any, scale: Any, dy: Any, dx: Any, *, inverse: bool = False) -> Any:
    """``(n, h, w, c)`` images resampled (bilinear, zeros outside) so output pixel ``p`` shows
    the input at ``centre + (p - centre) * scale + shift`` (``dy``, ``dx`` in fractions of the
    side); ``inverse``: the other way round, for maps drawn on the registered film."""
    import tensorflow as tf

    images = tf.cast(images, tf.float32)  # float16 under mixed precision
    # The size as a tensor: inside training's tf.data graph it is not known when traced.
    hw = tf.shape(images)[1:3]
    h, w = tf.cast(hw[0], tf.float32), tf.cast(hw[1], tf.float32)
    scale = tf.cast(tf.reshape(scale, [-1]), tf.float32)
    ty = tf.cast(tf.reshape(dy, [-1]), tf.float32) * h
    tx = tf.cast(tf.reshape(dx, [-1]), tf.float32) * w
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    if inverse:  # q = c + (p - c) * s + t  <=>  p = c + (q - c - t) / s
        scale, ty, tx = 1.0 / scale, -ty / scale, -tx / scale
    zero = tf.zeros_like(scale)
    # ImageProjectiveTransform maps output (x, y) to input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    transforms = tf.stack([scale, zero, cx - cx * scale + tx,
                           zero, scale, cy - cy * scale + ty, zero, zero], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=hw, fill_value=tf.constant(0.0),
        interpolation="BILINEAR", fill_mode="CONSTANT")
    out.set_shape(images.shape)
    return out


def _integral(p: Any) -> Any:
    """The summed-area table of ``(n, L, L)``, ``(n, L + 1, L + 1)`` with a zero first row and
    column. Two products with a triangular matrix: on a CPU far faster than ``cumsum``."""
    import tensorflow as tf

    side = p.shape[1] + 1
    lower = tf.constant(np.tril(np.ones((side, side), np.float32)))
    padded = tf.pad(p, [[0, 0], [1, 0], [1, 0]])
    return tf.matmul(tf.matmul(lower[None], padded), lower[None], transpose_b=True)


def _box_sums(c: Any, m: int) -> Any:
    """Sums over every ``m x m`` window, at its top-left corner, from a summed-area table."""
    return c[:, m:, m:] - c[:, :-m, m:] - c[:, m:, :-m] + c[:, :-m, :-m]


def _correlate(fa: Any, conj_fb: Any, side: int, m: int) -> Any:
    """Cross-correlation of an image (``fa``: its 2-D FFT) with an ``(m, m)`` image
    (``conj_fb``: the conjugate FFT of it, zero-padded to ``side``) at every top-left position.
    Circular, but every position :func:`estimate` reads is one without wrap-around."""
    import tensorflow as tf

    return tf.signal.irfft2d(fa * conj_fb, fft_length=[side, side])[
        ..., :side - m + 1, :side - m + 1]


def _conj_fft(b: Any, side: int) -> Any:
    import tensorflow as tf

    m = b.shape[0]
    return tf.math.conj(tf.signal.rfft2d(tf.pad(b, [[0, side - m], [0, side - m]])))


def _window(a: Any, m: int) -> Any:
    """The match positions :func:`estimate` reads (shifts up to :data:`MAX_SHIFT` each way)."""
    start = _PAD + (GRID - m) // 2 - MAX_SHIFT
    return a[..., start:start + 2 * MAX_SHIFT + 1, start:start + 2 * MAX_SHIFT + 1]


def template_terms(template: Any) -> tuple[dict[str, np.ndarray], ...]:
    """What the match needs of the template alone, one entry per size of :data:`SIZES`: its
    conjugate FFT, and at each match position the template cells on the film (``n``), their
    sum (``s_t``), spread (``var_t``) and the overlap factor. None of it depends on the films,
    so a layer computes it once, not in every model call."""
    import tensorflow as tf

    with tf.init_scope():  # eager even when first called while a graph is traced
        on_film = tf.pad(tf.ones((1, GRID, GRID)), [[0, 0], [_PAD, _PAD], [_PAD, _PAD]])
        fm, cm = tf.signal.rfft2d(on_film), _integral(on_film)
        terms = []
        for m in SIZES:
            t = tf.image.resize(tf.reshape(tf.cast(template, tf.float32), (1, GRID, GRID, 1)),
                                (m, m), method="bilinear", antialias=True)[0, ..., 0]
            t = t - tf.reduce_mean(t)  # better conditioned; NCC does not change with an offset
            n = tf.maximum(_box_sums(cm, m), 1.0)  # template cells on the film, per position
            conj_ft = _conj_fft(t, _SIDE)
            s_t = _correlate(fm, conj_ft, _SIDE, m)
            s_tt = _correlate(fm, _conj_fft(t * t, _SIDE), _SIDE, m)
            var_t = tf.maximum(s_tt - s_t * s_t / n, 1e-6)
            terms.append({"m": m, "conj_ft": conj_ft.numpy(),
                          **{k: _window(v, m).numpy() for k, v in (
                              ("n", n), ("s_t", s_t), ("var_t", var_t),
                              ("overlap", (n / float(m * m)) ** OVERLAP_POWER))}})
    return tuple(terms)


def estimate(x: Any, terms: tuple[dict[str, np.ndarray], ...]) -> Any:
    """``(n, 3)``: the shift (rows, columns, fractions of the side) and scale at which each film
    of ``(n, s, s, 1)`` best matches the template whose :func:`template_terms` are ``terms``.

    The similarity is the normalised cross-correlation over the part of the template that lies
    on the film (masked NCC, Padfield 2012): a chest moved down, or larger than the film, is
    matched by what is on the film, times (share on the film) ** :data:`OVERLAP_POWER`, a mild
    preference for the whole chest on the film. Where nothing matches (a blank film) the
    first candidate wins, an extreme move of nothing; the guard turns such films away."""
    import tensorflow as tf

    small = tf.image.resize(tf.cast(x, tf.float32), (GRID, GRID), method="area")
    p = tf.pad(small[..., 0], [[0, 0], [_PAD, _PAD], [_PAD, _PAD]])
    fp = tf.signal.rfft2d(p)
    c1, c2 = _integral(p), _integral(p * p)
    scores = []
    for k in terms:
        m = k["m"]
        s_f, s_ff = _window(_box_sums(c1, m), m), _window(_box_sums(c2, m), m)
        num = _window(_correlate(fp, k["conj_ft"], _SIDE, m), m) - s_f * k["s_t"] / k["n"]
        var_f = tf.maximum(s_ff - s_f * s_f / k["n"], 1e-6)
        scores.append(num / tf.sqrt(var_f * k["var_t"]) * k["overlap"])
    window = 2 * MAX_SHIFT + 1
    flat = tf.reshape(tf.stack(scores, axis=1), [tf.shape(p)[0], -1])
    best = tf.argmax(flat, axis=1, output_type=tf.int32)
    per_size = window * window
    size_i, rest = best // per_size, best % per_size
    dy = tf.cast(rest // window - MAX_SHIFT, tf.float32) / GRID
    dx = tf.cast(rest % window - MAX_SHIFT, tf.float32) / GRID
    scale = tf.gather(tf.constant(SIZES, tf.float32), size_i) / GRID
    return tf.stop_gradient(tf.stack([dy, dx, scale], axis=1))


_layer_cls: Any = None


def layer_class() -> Any:
    """The :class:`RegisterChest` Keras layer class, registered for loading (Keras is imported
    only here, on first use: ``screen --help`` does not pay for it). Call it before loading a
    model file that may hold the layer."""
    global _layer_cls
    if _layer_cls is not None:
        return _layer_cls
    import keras

    @keras.saving.register_keras_serializable(package="pneumoscreen")
    class RegisterChest(keras.layers.Layer):
        """The film moved and scaled so its chest lies where the training split's mean chest
        lies (see the module). The template is part of the layer's configuration, not a
        weight: ImageNet weight files, which know nothing of it, load into the network as
        before, and it can never be trained."""

        def __init__(self, template: Any, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.template = checked_template(template)
            self.terms = template_terms(self.template)
            # XLA has no kernel for the image transform: Keras' "auto" compiles a train step
            # with XLA on a GPU unless a layer says no.
            self.supports_jit = False

        def transforms(self, x: Any) -> Any:
            """``(n, 3)`` (dy, dx, scale) for films ``x``."""
            return estimate(x, self.terms)

        def call(self, x: Any) -> Any:
            t = self.transforms(x)
            return affine(x, t[:, 2], t[:, 0], t[:, 1])

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "template": self.template.tolist()}

    _layer_cls = RegisterChest
    return _layer_cls


def checked_template(template: Any) -> np.ndarray:
    """``template`` as a ``GRID x GRID`` float32 array; a model file's value is checked like
    any other input (shape, finite, in [0, 1], not constant)."""
    try:
        t = np.asarray(template, np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a chest template is a {GRID} x {GRID} image: {exc}") from exc
    if (t.shape != (GRID, GRID) or not np.isfinite(t).all() or t.min() < 0 or t.max() > 1
            or np.ptp(t) <= 0):
        raise ValueError(f"a chest template is a non-constant {GRID} x {GRID} image in [0, 1]")
    return t


def layer(template: np.ndarray) -> Any:
    """A ``RegisterChest`` layer holding ``template`` (from :func:`mean_chest`)."""
    # float32 whatever the global policy: the match needs it, and mixed precision would cast
    # the film to float16 on the way in.
    return layer_class()(np.asarray(template, np.float32).tolist(), name=REGISTER_LAYER,
                         dtype="float32")


def describe() -> dict[str, Any]:
    """What a sidecar says of the registration (documentation: the layer holds its template)."""
    return {"template": "mean training film", "grid": GRID,
            "max_shift": round(MAX_SHIFT / GRID, 3),
            "scales": [round(m / GRID, 3) for m in SIZES], "similarity": "normalised "
            "cross-correlation"}


def register_layer(net: Any) -> Any | None:
    """``net``'s registration layer, or None."""
    return next((lay for lay in net.layers if lay.name == REGISTER_LAYER), None)


__all__ = ["GRID", "MAX_SHIFT", "REGISTER_LAYER", "SIZES", "affine", "checked_template",
           "describe", "estimate", "layer", "layer_class", "mean_chest", "register_layer",
           "template_terms"]

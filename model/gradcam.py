"""Grad-CAM (Selvaraju et al., 2017) on the last convolutional block, many images per call.

For some network inputs, the map of each image is ``relu(sum_c a_c * A_c)`` where ``A`` is
the last convolutional block's activation and ``a_c`` the spatial mean of the gradient of the
pneumonia output with respect to ``A_c``. Maps are scaled to [0, 1] per image (a flat map stays
0). For an ensemble the map is the mean of its members' maps, each computed on the member's own
output. The result is small (the block's grid, e.g. 7 x 7 at 224 px) and stored as float16.

A network that sees only a box of its input (``--lung-crop``) has its map placed where that box
lies in the full frame, on a grid of :data:`FRAME_GRID` cells a side, zero outside the box: every
map covers the whole film, whatever the network saw. The box is read from the network's own
crop layer, in pixels (never from the sidecar), and each cell of its grid is put over the
pixels it covers: a 174-px box through a stride-32 network gives 6 cells covering 192 px, the
last one partly over the zero padding past the box. A network that registers its input first
(``--register-chest``: the box follows the chest) has that frame moved back onto the film as it was
sent, with the shift and scale its registration layer finds for each film.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumoscreen.model import registration

#: cells a side of a full-frame map of a cropping network (a cell is 2 % of the side)
FRAME_GRID = 50
#: (input size, top, bottom, left, right) in pixels: what a cropping network cuts off its input
PixelCrop = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class CamTarget:
    """One network whose map is computed: its input, the conv block and the scalar to explain.

    For a registering network ``model`` starts after the registration layer (it takes the
    registered film): :func:`compute` registers each film once, with the transforms it then
    uses to move the map back, instead of the model finding them and the map finding them
    again."""

    model: Any  # keras.Model: input (registered, if ``register``) -> [activations, score]
    #: what the network cuts off its input (its crop layer's); None: it sees all of it
    crop: PixelCrop | None = None
    #: the network's registration layer (``--register-chest``), or None
    register: Any = None


def crop_of(net: Any) -> PixelCrop | None:
    """The pixels ``net``'s crop layer cuts off its square input, or None (no crop layer)."""
    from pneumoscreen.model.architectures import CROP_LAYER

    if CROP_LAYER not in _layer_names(net):
        return None
    (top, bottom), (left, right) = net.get_layer(CROP_LAYER).cropping
    return int(net.input.shape[1]), int(top), int(bottom), int(left), int(right)


def _layer_names(model: Any) -> set[str]:
    return {layer.name for layer in model.layers}


def _score_tensor(model: Any) -> Any:
    """The pneumonia score to explain: the logit where the network has one, else its output."""
    names = _layer_names(model)
    for name in ("temperature", "pneumonia_logit"):
        if name in names:
            return model.get_layer(name).output
    out = model.output
    return out["pneumonia"] if isinstance(out, dict) else out


def last_conv_name(model: Any, hint: str | None = None) -> str:
    """``hint`` when the model has that layer, else the last layer with a 4-D output."""
    names = _layer_names(model)
    if hint and hint in names:
        return hint
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and not layer.name.startswith("image"):
            return layer.name
    raise ValueError(f"{model.name} has no convolutional block to explain")


def _networks(keras_model: Any) -> list[Any]:
    """The model itself, or each member of an ensemble."""
    members = [layer for layer in keras_model.layers if layer.name.startswith("member_")]
    return members or [keras_model]


def targets(keras_model: Any, spec_extra: dict[str, Any]) -> list[CamTarget]:
    """The networks to explain: the model itself, or each member of an ensemble."""
    import keras

    arch = spec_extra.get("architecture") or {}
    nets = _networks(keras_model)
    hints = ([m.get("last_conv") for m in arch.get("members") or []] if nets[0] is not keras_model
             else [arch.get("last_conv")])
    out = []
    for i, net in enumerate(nets):
        hint = hints[i] if i < len(hints) else None
        conv = net.get_layer(last_conv_name(net, hint)).output
        register = registration.register_layer(net)
        start = net.input if register is None else register.output
        out.append(CamTarget(keras.Model(start, [conv, _score_tensor(net)]), crop_of(net),
                             register))
    return out


def registered(register: Any, inputs: np.ndarray) -> tuple[Any, np.ndarray]:
    """The films as ``register`` moves them, and its ``(n, 3)`` transforms (dy, dx, scale)."""
    t = register.transforms(inputs)
    return registration.affine(inputs, t[:, 2], t[:, 0], t[:, 1]), np.asarray(t)


def on_film(maps: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` maps drawn on the registered films moved back onto the films as sent
    (``transforms``: the registration's, from :func:`registered`)."""
    t = np.asarray(transforms)
    moved = registration.affine(maps[..., None], t[:, 2], t[:, 0], t[:, 1], inverse=True)
    return np.asarray(moved)[..., 0]


def seen_region(keras_model: Any, shape: tuple[int, int],
                inputs: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``shape`` mask of the map cells (their centres) inside what some network of the
    model sees: all of them, unless every network crops its input (then the union of their
    boxes). Outside it a map is zero by construction (a registering network's, moved back onto
    the film, but for its bilinear edge), so comparisons of maps (the randomisation check)
    leave it out. Where a network registers its input the box moves with each film:
    then ``(n, h, w)``, one mask per film of ``inputs``."""
    nets = _networks(keras_model)
    crops = [crop_of(net) for net in nets]
    if any(c is None for c in crops):
        return np.ones(shape, bool)
    h, w = shape
    masks = []
    for net, (size, top, bottom, left, right) in zip(nets, crops, strict=True):  # type: ignore[misc]
        rows = (np.arange(h) + 0.5) * size / h
        cols = (np.arange(w) + 0.5) * size / w
        mask = ((rows >= top) & (rows < size - bottom))[:, None] \
            & ((cols >= left) & (cols < size - right))[None, :]
        register = registration.register_layer(net)
        if register is not None:
            if inputs is None:
                raise ValueError("a registering network's box moves with the film: pass inputs")
            tiled = np.repeat(mask[None].astype(np.float32), len(inputs), axis=0)
            mask = on_film(tiled, np.asarray(register.transforms(inputs))) >= 0.5
        masks.append(mask)
    out = np.logical_or.reduce(np.broadcast_arrays(*masks))
    return np.array(out)


def in_frame(maps: np.ndarray, crop: PixelCrop, grid: int = FRAME_GRID) -> np.ndarray:
    """``(n, grid, grid)``: a cropping network's ``(n, gh, gw)`` maps placed over the pixels each
    cell covers in the full frame, zero outside the box.

    The network's stride is the power of two that makes ``gh`` cells cover the box (``gh =
    ceil(box / stride)`` for "same" padding); the cells cover ``gh * stride`` pixels from the
    box's top, the part past the box (padding) is cut off."""
    size, top, bottom, left, right = crop
    box_h, box_w = size - top - bottom, size - left - right
    gh, gw = maps.shape[1:]
    sy = 2 ** math.ceil(math.log2(box_h / gh))
    sx = 2 ** math.ceil(math.log2(box_w / gw))
    covered = resize_maps(maps, gh * sy, gw * sx)[:, :box_h, :box_w]
    frame = np.zeros((len(maps), size, size), np.float32)
    frame[:, top:top + box_h, left:left + box_w] = covered
    return resize_maps(frame, grid, grid, area=True)


def _normalise(cams: np.ndarray) -> np.ndarray:
    peak = cams.reshape(len(cams), -1).max(axis=1)
    peak[peak <= 0] = 1.0
    return cams / peak[:, None, None]


def compute(cam_targets: list[CamTarget], inputs: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` float32 maps in [0, 1] for ``(n, size, size, 1)`` inputs."""
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(inputs, np.float32))
    maps = []
    for target in cam_targets:
        seen, t = (x, None) if target.register is None else registered(target.register, x)
        with tf.GradientTape() as tape:
            conv, score = target.model(seen, training=False)
            total = tf.reduce_sum(score)
        grads = tape.gradient(total, conv)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(conv * weights, axis=-1)).numpy().astype(np.float32)
        if target.crop is not None:
            cam = in_frame(cam, target.crop)
        if t is not None:
            cam = on_film(cam, t)
        maps.append(_normalise(cam))
    shapes = {m.shape for m in maps}
    if len(shapes) > 1:  # members with different grids: bring them to the finest one
        h, w = max(s[1] for s in shapes), max(s[2] for s in shapes)
        maps = [resize_maps(m, h, w) for m in maps]
    return _normalise(np.mean(maps, axis=0))


def resize_maps(maps: np.ndarray, h: int, w: int, *, area: bool = False) -> np.ndarray:
    """Bilinear resize of ``(n, h0, w0)`` maps to ``(n, h, w)``; ``area``: each new cell the
    mean of what it covers (for shrinking: nothing leaks into a cell from outside it)."""
    from PIL import Image

    how = Image.Resampling.BOX if area else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(m.astype(np.float32)).resize((w, h), how),
                                np.float32) for m in maps])


def to_bytes(cam: np.ndarray) -> bytes:
    """A map as float16 bytes (row-major), for the database."""
    return np.asarray(cam, np.float16).tobytes()


def from_bytes(data: bytes, h: int, w: int) -> np.ndarray:
    return np.frombuffer(data, np.float16).astype(np.float32).reshape(h, w)


def border_mass(cams: np.ndarray, border: float = 0.10) -> dict[str, np.ndarray]:
    """Per map, the share of its mass in the outer ``border`` of the image and in the two top
    corners (where text markers sit), measured on maps brought to 100 x 100."""
    big = resize_maps(cams, 100, 100)
    total = big.reshape(len(big), -1).sum(axis=1)
    total[total <= 0] = 1.0
    b = round(100 * border)
    inner = big[:, b:100 - b, b:100 - b].reshape(len(big), -1).sum(axis=1)
    corner = big[:, :20, :20].reshape(len(big), -1).sum(axis=1) + big[:, :20, 80:].reshape(
        len(big), -1).sum(axis=1)
    return {"border": 1.0 - inner / total, "top_corners": corner / total}


def overlay(image: np.ndarray, cam: np.ndarray, *, size: int = 512, alpha: float = 0.4,
            label: str | None = "AI heatmap, not for diagnosis") -> np.ndarray:
    """The map over the network's own input, at display resolution: an RGB uint8 image.

    ``image``: the ``(s, s, 1)`` or ``(s, s)`` network input in [0, 1]; ``cam``: its map."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    grey = np.asarray(image, np.float32).reshape(image.shape[0], image.shape[1])
    base = np.asarray(Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR),
                      np.float32)
    heat = resize_maps(np.asarray(cam, np.float32)[None], size, size)[0].clip(0, 1)
    colour = colormaps["jet"](heat)[..., :3]
    rgb = (1 - alpha * heat[..., None]) * base[..., None] + alpha * heat[..., None] * colour
    out = Image.fromarray((rgb.clip(0, 1) * 255).astype(np.uint8), "RGB")
    if label:
        draw = ImageDraw.Draw(out)
        draw.rectangle([0, size - 18, size, size], fill=(0, 0, 0))
        draw.text((4, size - 16), label, fill=(255, 255, 255))
    return np.asarray(out)


def save_overlay(path: Any, image: np.ndarray, cam: np.ndarray, **kw: Any) -> None:
    from PIL import Image

    Image.fromarray(overlay(image, cam, **kw)).save(path)

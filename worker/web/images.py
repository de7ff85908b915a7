"""The pictures of the image page: the film at display resolution, the Grad-CAM overlay as a
transparent layer of the same size, and the overlay's colour scale."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

DISPLAY_SIDE = 1024  # the longer side of the film on the page
OVERLAY_ALPHA = 0.55  # the overlay's opacity where the map is hottest
COLOURMAP = "jet"  # the one `screen heatmap` and the heatmap SC use


def display_size(height: int, width: int, side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """(height, width) with the longer side at most ``side``, aspect kept."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _png(array: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()


@functools.lru_cache(maxsize=16)
def _film(path: str, mtime_ns: int, size: int, config: Any) -> bytes:
    from PIL import Image

    from pneumoscreen.worker.ingest import load_grey

    grey = load_grey(Path(path), config).grey
    h, w = display_size(*grey.shape, side=size)
    small = Image.fromarray(np.asarray(grey, np.float32)).resize((w, h),
                                                                 Image.Resampling.BILINEAR)
    return _png((np.clip(np.asarray(small), 0, 1) * 255).astype(np.uint8), "L")


def film_png(path: str, config: Any, size: int = DISPLAY_SIDE) -> bytes:
    """The film decoded as screening decoded it (MONOCHROME2, windowed), as a grey PNG.

    Raises the ingestion errors (RejectedImage, FailedImage) and OSError."""
    return _film(path, Path(path).stat().st_mtime_ns, size, config)


def overlay_png(cam: np.ndarray, height: int, width: int) -> bytes:
    """The map stretched over the whole film (the network saw the film resized to a square), as
    an RGBA PNG: colour from the colour map, opacity growing with the map's value."""
    from matplotlib import colormaps

    from pneumoscreen.model.gradcam import resize_maps

    heat = resize_maps(np.asarray(cam, np.float32)[None], height, width)[0].clip(0, 1)
    rgba = colormaps[COLOURMAP](heat)
    rgba[..., 3] = OVERLAY_ALPHA * heat
    return _png((rgba * 255).astype(np.uint8), "RGBA")


@functools.lru_cache(maxsize=1)
def colour_scale_png() -> bytes:
    """A horizontal bar of the colour map from 0 (no weight) to 1 (most weight), labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 0.55), dpi=100)
    ax.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap=COLOURMAP)
    ax.set_yticks([])
    ax.set_xticks([0, 127.5, 255], ["0 (no weight)", "0.5", "1 (most weight)"], fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.88, bottom=0.45, top=0.98)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

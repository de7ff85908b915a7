"""How the model holds up when films are taken differently, printed by ``screen bench shift``.

The internal test split (the model's own patient split) scored as stored and again after one
acquisition change at a time: another exposure (gamma, contrast), other framing (the child
nearer or farther, higher or lower on the film) and a softer image. For each: AUC, and recall
and specificity at the model's own threshold. The changes are made on the network's input, so
every model is measured on the same films; they stand in for another hospital's or machine's
films, which are not available here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model.bundle import LoadedModel
from pneumoscreen.model.gradcam import resize_maps
from pneumoscreen.worker.bench.explain import _predict_all, figures_at, internal_test


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(n, s, s, 1)`` films resized (bilinear) to ``(n, h, w, 1)``."""
    return resize_maps(x[..., 0], h, w)[..., None]


def zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """``factor`` > 1: the centre of the film enlarged to fill it (the child nearer); < 1: the
    film shrunk into a black frame (farther)."""
    s = x.shape[1]
    if factor >= 1:
        m = round(s / factor)
        o = (s - m) // 2
        return _resize(x[:, o:o + m, o:o + m], s, s)
    m = round(s * factor)
    o = (s - m) // 2
    out = np.zeros_like(x)
    out[:, o:o + m, o:o + m] = _resize(x, m, m)
    return out


def shift_down(x: np.ndarray, fraction: float) -> np.ndarray:
    """The film moved down by ``fraction`` of its height, black above."""
    k = round(fraction * x.shape[1])
    out = np.zeros_like(x)
    out[:, k:] = x[:, :x.shape[1] - k]
    return out


def blur(x: np.ndarray) -> np.ndarray:
    """A 3 x 3 box blur (edges repeated)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    s = x.shape[1]
    return sum(p[:, i:i + s, j:j + s] for i in range(3) for j in range(3)) / 9.0


def changed(x: np.ndarray, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``change`` applied to a copy of the films, kept in the network's [0, 1] float32."""
    return np.clip(change(x.copy()), 0.0, 1.0).astype(np.float32)


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as stored": lambda x: x,
    "gamma 0.7 (brighter mid-tones)": lambda x: x ** 0.7,
    "gamma 1.4 (darker mid-tones)": lambda x: x ** 1.4,
    "contrast x 0.8": lambda x: (x - 0.5) * 0.8 + 0.5,
    "zoomed out to 85 % (farther)": lambda x: zoom(x, 0.85),
    "zoomed in 15 % (nearer)": lambda x: zoom(x, 1.15),
    "moved down 8 %": lambda x: shift_down(x, 0.08),
    "softer (3 x 3 blur)": blur,
}


def shift_check(model: LoadedModel, data_dir: Path, limit: int | None = None) -> dict[str, Any]:
    """AUC, recall and specificity at the threshold on the internal test (about ``limit``
    films spread over it; default all) under each shift."""
    arrays = internal_test(model, data_dir, limit)
    y, t = arrays.y, model.spec.threshold
    rows = {}
    for name, change in SHIFTS.items():
        p, _ = _predict_all(model, changed(arrays.x, change))
        rows[name] = figures_at(y, p, t)
    return {"model": model.spec.label, "threshold": t, "n": len(y),
            "normal": int((y == 0).sum()), "shifts": rows}

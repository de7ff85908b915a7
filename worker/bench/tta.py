"""Test-time augmentation (no flips), measured: does scoring each film as a few mildly changed
copies, averaged, pay for its cost? Printed by ``screen bench tta``.

The views were set before anything was measured: the film as stored, 5 % farther and nearer,
gamma 0.85 and 1.2, each milder than what training's augmentation makes. No flips: a chest's
left and right differ (the heart), and a flipped film is not a film the network should accept.
The views' calibrated probabilities are averaged as logits. The threshold is chosen again on
the validation split's averaged scores, at the model's own target recall (the internal test
chooses nothing), and both scorings are measured at their own thresholds on the validation
split, the internal test and the internal test under each of ``screen bench shift``'s changes.
The cost is one model call per view, and making the views: ``ms_per_film`` times the whole
scoring of the internal test, views included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model import metrics as M
from pneumoscreen.model.bundle import LoadedModel
from pneumoscreen.model.calibration import logit
from pneumoscreen.worker.bench.explain import _predict_all, figures_at, internal_test
from pneumoscreen.worker.bench.shift import SHIFTS, changed, zoom

View = Callable[[np.ndarray], np.ndarray]

VIEWS: dict[str, View] = {
    "as stored": lambda x: x,
    "zoomed out to 95 %": lambda x: zoom(x, 0.95),
    "zoomed in 5 %": lambda x: zoom(x, 1.05),
    "gamma 0.85": lambda x: x ** 0.85,
    "gamma 1.2": lambda x: x ** 1.2,
}


def averaged(model: LoadedModel, x: np.ndarray, views: dict[str, View]) -> np.ndarray:
    """The calibrated pneumonia probability of each film, its views' logits averaged."""
    logits = [logit(_predict_all(model, changed(x, view))[0]) for view in views.values()]
    return 1.0 / (1.0 + np.exp(-np.mean(logits, axis=0)))


def scored(model: LoadedModel, val: Any, test: Any, views: dict[str, View]) -> dict[str, Any]:
    """One scoring (these views): its validation-chosen threshold and figures, and the seconds
    a film its scoring took on the internal test."""
    s_val = averaged(model, val.x, views)
    threshold = M.select_threshold(val.y, s_val, model.spec.target_recall)
    start = time.perf_counter()
    s_test = averaged(model, test.x, views)
    per_film = (time.perf_counter() - start) / max(len(test.x), 1)
    shifted = {name: figures_at(test.y, averaged(model, changed(test.x, change), views),
                                threshold)
               for name, change in SHIFTS.items() if name != "as stored"}
    return {"views": list(views), "threshold": threshold,
            "validation": figures_at(val.y, s_val, threshold),
            "internal_test": figures_at(test.y, s_test, threshold),
            "shift_false_positives": sum(r["false_positives"] for r in shifted.values()),
            # A lower threshold buys fewer misses with more false alarms: count both.
            "shift_false_negatives": sum(r["false_negatives"] for r in shifted.values()),
            "shifts": shifted, "ms_per_film": round(1000 * per_film, 2)}


def tta_check(model: LoadedModel, data_dir: Path, limit: int | None = None,
              views: dict[str, View] | None = None) -> dict[str, Any]:
    """The model scored once and with test-time augmentation (``views``, default
    :data:`VIEWS`), each at its own validation-chosen threshold (about ``limit`` films of each
    split, spread over it; default all)."""
    val = internal_test(model, data_dir, limit, part_name="validation")
    test = internal_test(model, data_dir, limit)
    views = views or VIEWS
    one = scored(model, val, test, {"as stored": VIEWS["as stored"]})
    many = scored(model, val, test, views)
    return {"model": model.spec.label, "target_recall": model.spec.target_recall,
            "validation_films": len(val.y), "internal_test_films": len(test.y),
            "one_view": one, "tta": many,
            "cost": round(many["ms_per_film"] / one["ms_per_film"], 2)
            if one["ms_per_film"] else None}

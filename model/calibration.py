"""Temperature scaling of the pneumonia output, fitted on validation and built into the model.

Calibration makes a probability mean the same from model to model (and from member to ensemble),
so a threshold of 0.8 is not "0.8 of whatever this network happens to output". The temperature
divides the logit: ``p = sigmoid(logit / T)``. It is monotone, so it changes no AUC and no
ranking; the threshold is tuned afterwards on the calibrated validation scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def nll(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logit(p) / temperature))).astype(np.float32)


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The temperature minimising validation NLL (grid on log T, then a finer grid around it)."""
    y = np.asarray(y, np.float64)
    if len(np.unique(y)) < 2:
        return 1.0
    lo, hi = np.log(0.05), np.log(20.0)
    best = 0.0
    for _ in range(3):
        grid = np.linspace(lo, hi, 81)
        losses = [nll(y, apply_temperature(p, float(np.exp(t)))) for t in grid]
        i = int(np.argmin(losses))
        best = float(grid[i])
        step = grid[1] - grid[0]
        lo, hi = best - step, best + step
    return float(np.exp(best))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def calibrated_model(model: Any, temperature: float) -> Any:
    """A model with the same input and outputs whose ``pneumonia`` is ``sigmoid(logit / T)``.

    Built from the trained model's own layers, so the result is one standard Keras graph (loads
    with ``safe_mode``) and one file.
    """
    import keras
    from keras import layers

    logit_out = model.get_layer("pneumonia_logit").output
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logit_out)
    prob = layers.Activation("sigmoid", dtype="float32", name="pneumonia")(scaled)
    outputs = {k: v for k, v in dict(model.output).items() if k != "pneumonia"}
    outputs["pneumonia"] = prob  # the other outputs (viral, atypicality) pass through
    return keras.Model(model.input, outputs, name=model.name)

"""The untrained placeholder: loadable, and saying everywhere that it is untrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumoscreen.model.bundle import load_model, read_spec
from pneumoscreen.model.placeholder import make_placeholder


def test_placeholder_is_marked_untrained_and_serves(tmp_path: Path) -> None:
    path = tmp_path / "placeholder.keras"
    spec = make_placeholder(path, 32)
    assert not spec.trained and spec.threshold == 0.5 and spec.input_size == 32
    assert read_spec(path).label.endswith("(untrained)")
    loaded = load_model(path)
    probs = loaded.pneumonia_probabilities(np.zeros((2, 32, 32, 1), np.float32))
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))

"""The one preprocessing function: its size always comes from the model."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from pneumoscreen.model.preprocess import InputRangeError, preprocess


def test_there_is_no_default_size() -> None:
    """A stale default (128 beside a 96 px model) cannot creep back: the size is required."""
    assert inspect.signature(preprocess).parameters["size"].default is inspect.Parameter.empty
    with pytest.raises(TypeError):
        preprocess(np.zeros((8, 8), np.float32))  # type: ignore[call-arg]


def test_serving_uses_the_models_own_size() -> None:
    from pneumoscreen.model.bundle import bundled_model_path, read_spec

    spec = read_spec(bundled_model_path())
    out = preprocess(np.random.default_rng(0).random((50, 70), dtype=np.float32),
                     spec.input_size)
    assert out.shape == (spec.input_size, spec.input_size, 1) and out.dtype == np.float32


def test_out_of_range_input_is_refused() -> None:
    with pytest.raises(InputRangeError, match=r"must lie in \[0, 1\]"):
        preprocess(np.full((8, 8), 2.0, np.float32), 8)

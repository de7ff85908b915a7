"""The measured sanity of heatmaps and the guard, on the bundled model and the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoscreen.model.bundle import load_model
from pneumoscreen.worker.bench.explain import (
    heatmap_sanity,
    made_images,
    rank_correlations,
    scope_check,
)


def test_rank_correlations() -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert rank_correlations(a, a)[0] == pytest.approx(1.0)
    assert rank_correlations(a, -a)[0] == pytest.approx(-1.0)
    assert rank_correlations(a, np.zeros_like(a))[0] == 0.0


def test_made_images_keep_the_input_contract() -> None:
    x = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    for name, made in made_images(x).items():
        assert made.shape == x.shape and made.min() >= 0 and made.max() <= 1, name


@pytest.mark.shared
@pytest.mark.slow
def test_maps_do_not_survive_randomisation(shared_dir: Path) -> None:
    """Adebayo et al.'s check: re-initialising the last layers must change the maps."""
    out = heatmap_sanity(load_model(), shared_dir / "data" / "chest_xray", n=16, limit=120)
    assert out["randomisation"]["spearman_mean"] < 0.6
    assert out["shortcut"]["true_positives"]["n"] > 0
    assert out["internal_test_images"] <= 120 and out["randomisation"]["n"] == 16


@pytest.mark.shared
@pytest.mark.slow
def test_the_guard_passes_the_internal_test_and_stops_made_films(shared_dir: Path) -> None:
    out = scope_check(load_model(), shared_dir / "data" / "chest_xray", shared_dir / "dicom",
                      n_made=20)
    groups = out["groups"]
    assert groups["internal test split (in distribution)"]["rate"] <= 0.02
    assert groups["made: blank film"]["rate"] >= 0.9
    assert groups["made: inverted (negative)"]["rate_by_inversion"] >= 0.95
    assert groups["internal test split (in distribution)"]["rate_by_inversion"] <= 0.005
    assert groups["non-chest DICOMs, decoded anyway"]["rate"] >= 0.5
    # The middle block sees what the features miss: 4 of the 5 adult films (features alone: 2).
    assert groups["adult chest DICOMs, age blanked"]["marked_out_of_scope"] >= 4

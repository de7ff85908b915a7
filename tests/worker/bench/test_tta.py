"""Test-time augmentation, measured: the averaging itself and the bench on the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoscreen.model.bundle import load_model
from pneumoscreen.worker.bench.shift import SHIFTS
from pneumoscreen.worker.bench.tta import VIEWS, averaged, tta_check

SAMPLES = Path(__file__).resolve().parents[3] / "samples"


def test_identical_views_average_to_the_single_score() -> None:
    """Averaging logits of one view repeated gives that view's probability back; a changed
    view moves it."""
    from pneumoscreen.worker.ingest import IngestConfig, load_grey

    model = load_model()
    # Real chest films (on noise the network may saturate, and every view give one value).
    x = np.stack([model.preprocess(load_grey(SAMPLES / name, IngestConfig()).grey)
                  for name in ("chest_export.png", "chest_export_opacity.jpg")])
    one = averaged(model, x, {"as stored": VIEWS["as stored"]})
    same = averaged(model, x, {"a": VIEWS["as stored"], "b": VIEWS["as stored"]})
    np.testing.assert_allclose(same, one, atol=1e-6)
    direct = np.asarray(model.predict(x).pneumonia).reshape(-1)
    np.testing.assert_allclose(one, direct, atol=1e-5)
    assert not np.allclose(averaged(model, x, {"gamma": VIEWS["gamma 1.2"]}), one, atol=1e-4)


@pytest.mark.shared
@pytest.mark.slow
def test_each_scoring_meets_its_target_on_validation(shared_dir: Path) -> None:
    model = load_model()
    out = tta_check(model, shared_dir / "data" / "chest_xray", limit=40)
    assert out["tta"]["views"] == list(VIEWS) and out["one_view"]["views"] == ["as stored"]
    for key in ("one_view", "tta"):
        r = out[key]
        assert r["validation"]["recall"] >= model.spec.target_recall
        assert set(r["shifts"]) == set(SHIFTS) - {"as stored"}
        assert r["shift_false_positives"] == sum(s["false_positives"]
                                                 for s in r["shifts"].values())
        assert r["shift_false_negatives"] == sum(s["false_negatives"]
                                                 for s in r["shifts"].values())
    assert out["cost"] > 1.5  # five model calls a film, not one

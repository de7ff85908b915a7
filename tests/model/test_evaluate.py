"""Evaluation records: NaN becomes null without touching any text that contains "NaN"."""

from __future__ import annotations

import math

import pytest

from pneumoscreen.model.evaluate import json_safe, record


def test_json_safe_replaces_only_numbers() -> None:
    data = {"auc": float("nan"), "ci95": {"auc": [float("inf"), 0.5]},
            "dataset": "/data/NaN-cohort/test", "n": 3}
    assert json_safe(data) == {"auc": None, "ci95": {"auc": [None, 0.5]},
                               "dataset": "/data/NaN-cohort/test", "n": 3}


def test_a_path_with_nan_in_it_is_stored_as_it_is(isolated_settings) -> None:
    """The old text replacement turned '/data/NaN-cohort' into '/data/null-cohort'."""
    import sqlalchemy as sa

    from pneumoscreen.db import EvaluationReport, session_scope
    from pneumoscreen.model.bundle import bundled_model_path, verified_spec

    url = f"sqlite:///{isolated_settings / 'eval.sqlite3'}"
    spec = verified_spec(bundled_model_path())
    metrics = {"n": 2, "auc": float("nan"), "dataset": "/data/NaN-cohort/test"}
    report_id = record(spec, metrics, url=url, dataset="/data/NaN-cohort/test",
                       report_path=None)
    with session_scope(url) as session:
        row = session.scalars(sa.select(EvaluationReport)
                              .where(EvaluationReport.id == report_id)).one()
        assert row.metrics["dataset"] == "/data/NaN-cohort/test"
        assert row.metrics["auc"] is None and row.dataset == "/data/NaN-cohort/test"
    assert math.isnan(metrics["auc"])  # the caller's dict is left alone
    with pytest.raises(KeyError):
        record(spec, {}, url=url, dataset="x", report_path=None)  # n is required

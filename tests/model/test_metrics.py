"""Threshold selection and metrics, checked against scikit-learn and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from pneumoscreen.model import metrics as M


class TestSelectThreshold:
    def test_picks_the_highest_threshold_reaching_the_target(self) -> None:
        # 10 positives scored 0.1..1.0, 5 negatives below 0.35.
        pos = np.linspace(0.1, 1.0, 10)
        neg = np.array([0.05, 0.12, 0.22, 0.27, 0.33])
        y = np.r_[np.ones(10), np.zeros(5)]
        s = np.r_[pos, neg]
        # recall >= 0.8 needs 8 of 10 positives: scores 0.3..1.0, so the cut is 0.3, and the
        # threshold lies midway to the next lower score (the negative at 0.27).
        assert M.select_threshold(y, s, 0.8) == pytest.approx(0.285)
        # recall >= 0.75 also needs 8 of 10 (7 give 0.7): same answer.
        assert M.select_threshold(y, s, 0.75) == pytest.approx(0.285)
        # recall 1.0 needs every positive: the lowest positive score, 0.1 (0.05 below it).
        assert M.select_threshold(y, s, 1.0) == pytest.approx(0.075)
        # recall 0.1: the single top score suffices (0.9 below it).
        assert M.select_threshold(y, s, 0.1) == pytest.approx(0.95)
        # nothing below the cut: midway to zero
        assert M.select_threshold(np.array([1, 1]), np.array([0.4, 0.6]), 1.0) == \
            pytest.approx(0.2)

    def test_the_chosen_threshold_meets_the_target_and_any_higher_one_does_not(self) -> None:
        rng = np.random.default_rng(3)
        y = rng.integers(0, 2, 400)
        s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
        for target in (0.8, 0.9, 0.95):
            t = M.select_threshold(y, s, target)
            assert skm.recall_score(y, s >= t) >= target
            # the cut is the lowest score above the threshold; the next score up misses
            higher = np.unique(s[s > t])
            if len(higher) > 1:
                assert skm.recall_score(y, s >= higher[1]) < target

    def test_the_room_is_the_float32_distance_to_the_nearest_scores(self) -> None:
        s = np.array([0.1, 0.3, 0.35, 0.9])
        room = M.threshold_room(s, M.select_threshold(np.array([0, 0, 1, 1]), s, 1.0))
        assert room["lowest_flagged"] == pytest.approx(0.35)
        assert room["highest_not_flagged"] == pytest.approx(0.3)
        assert room["room_above"] == pytest.approx(0.025) == room["room_below"]
        # a threshold on a score: no room above (the score is flagged, as serving flags it)
        assert M.threshold_room(s, 0.3)["room_above"] == 0.0
        assert M.threshold_room(s, 0.05) == {"lowest_flagged": pytest.approx(0.1),
                                             "highest_not_flagged": None,
                                             "room_above": pytest.approx(0.05),
                                             "room_below": None}

    def test_ties_count_as_flagged(self) -> None:
        y = np.array([1, 1, 0, 0])
        s = np.array([0.7, 0.7, 0.7, 0.1])
        assert M.select_threshold(y, s, 1.0) == pytest.approx(0.4)
        assert M.metrics_at(y, s, M.select_threshold(y, s, 1.0))["fp"] == 1

    def test_the_film_at_the_cut_stays_flagged_when_scored_a_little_lower(self) -> None:
        # Serving's float32 graph, another CPU or another batch size moves a score by ulps; the
        # film that decides the recall must not fall below the threshold for it.
        rng = np.random.default_rng(5)
        y = rng.integers(0, 2, 500)
        s = rng.random(500).astype(np.float32).astype(np.float64)
        for target in (0.9, 0.95, 0.98):
            t = M.select_threshold(y, s, target)
            jittered = s * (1 - 4 * np.finfo(np.float32).eps)
            assert skm.recall_score(y, jittered >= t) >= target
            # the same counts as at the cut itself: no score lies between
            cut = s[(s >= t)].min()
            assert M.metrics_at(y, s, t) == {**M.metrics_at(y, s, cut), "threshold": t}

    def test_no_room_between_two_adjacent_float32_scores_keeps_the_cut(self) -> None:
        # Serving rounds the threshold to float32: a midpoint that rounds onto the negative's
        # score would flag it. With no room between the two scores, the cut is the threshold.
        cut = np.float32(0.3)
        below = np.nextafter(cut, np.float32(0))
        y, s = np.array([1, 0]), np.array([cut, below], np.float64)
        t = M.select_threshold(y, s, 1.0)
        assert t == float(cut)
        assert M.metrics_at(y, s, t)["fp"] == 0
        assert (np.array([cut, below], np.float32) >= t).tolist() == [True, False]

    def test_needs_positives(self) -> None:
        with pytest.raises(ValueError, match="no positive cases"):
            M.select_threshold(np.zeros(4), np.linspace(0, 1, 4), 0.95)

    @pytest.mark.parametrize("target", [0.0, 1.2])
    def test_rejects_impossible_targets(self, target: float) -> None:
        with pytest.raises(ValueError, match="target recall"):
            M.select_threshold(np.array([0, 1]), np.array([0.1, 0.9]), target)


class TestMetricsAt:
    def test_matches_sklearn(self) -> None:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 300)
        s = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
        m = M.metrics_at(y, s, 0.45)
        pred = (s >= 0.45).astype(int)
        tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
        assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
        assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
        assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
        assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))

    def test_known_counts(self) -> None:
        y = np.array([1, 1, 1, 0, 0, 0, 0])
        s = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.2, 0.3])
        m = M.metrics_at(y, s, 0.5)
        assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 3)
        assert m["recall"] == pytest.approx(2 / 3)
        assert m["specificity"] == pytest.approx(3 / 4)


class TestSummarize:
    def test_auc_and_report_match_sklearn(self) -> None:
        rng = np.random.default_rng(1)
        y = rng.integers(0, 2, 200)
        s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
        out = M.summarize(y, s, 0.5, n_boot=200, seed=0)
        assert out["auc"] == pytest.approx(skm.roc_auc_score(y, s))
        assert out["average_precision"] == pytest.approx(skm.average_precision_score(y, s))
        assert out["brier"] == pytest.approx(skm.brier_score_loss(y, s))
        assert out["classification_report"]["PNEUMONIA"]["recall"] == pytest.approx(out["recall"])
        assert out["n"] == 200 and out["n_pneumonia"] == int(y.sum())

    def test_bootstrap_is_seeded_and_brackets_the_estimate(self) -> None:
        rng = np.random.default_rng(2)
        y = rng.integers(0, 2, 300)
        s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
        a = M.bootstrap_ci(y, s, 0.5, n_boot=300, seed=7)
        b = M.bootstrap_ci(y, s, 0.5, n_boot=300, seed=7)
        assert a == b
        m = M.metrics_at(y, s, 0.5)
        for key in ("recall", "specificity"):
            lo, hi = a[key]
            assert lo < m[key] < hi
            assert hi - lo < 0.25  # 150 cases per class: a few points either side, not the range

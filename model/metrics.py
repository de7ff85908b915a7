"""Screening metrics: the recall-tuned threshold, metrics at a threshold, bootstrap intervals.

Everything is computed with scikit-learn; this module only decides which figures to compute and
what "flagged" means (``probability >= threshold``, the same rule serving uses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def flagged(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Serving's rule: an image is flagged when its probability reaches the threshold."""
    return (np.asarray(scores) >= threshold).astype(np.int32)


#: how :func:`select_threshold` chooses, as sidecars record it
THRESHOLD_RULE = ("midway between the highest cut whose validation recall reaches the target and "
                  "the next lower score")


def select_threshold(y_true: np.ndarray, scores: np.ndarray, target_recall: float = 0.95) -> float:
    """A threshold with the highest cut whose recall (sensitivity) on these labels reaches
    ``target_recall``: midway between the lowest score it must flag and the next lower score.

    ``roc_curve`` lists every distinct score as a candidate cut with its true positive rate;
    recall only falls as the cut rises, so the cut is the largest candidate with
    ``tpr >= target``. The threshold is not that score itself but the midpoint below it: the
    film at the cut is then flagged even when another machine, batch size or float32 graph
    scores it a few ulps lower, up to half the gap to the next lower score (seen: a shipped
    threshold 4e-7 above its film's score on another CPU, one validation miss), and the counts
    are the same, since no score lies between. Where the two scores are adjacent in float32
    there is no room: the threshold is the cut. Call it with validation labels and scores only.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall must lie in (0, 1], got {target_recall}")
    if y_true.sum() == 0:
        raise ValueError("no positive cases: recall is undefined, cannot tune a threshold")
    _, tpr, thresholds = skm.roc_curve(y_true, scores, drop_intermediate=False)
    ok = (tpr >= target_recall - 1e-12) & np.isfinite(thresholds)
    cut = float(np.max(thresholds[ok]))
    below = scores[scores < cut]
    low = float(below.max()) if below.size else min(cut, 0.0)
    mid = (cut + low) / 2.0
    # Serving compares float32 scores with the threshold rounded to float32: the midpoint must
    # lie strictly between the two scores there as well, or nothing lies between them and the
    # cut itself is the threshold.
    if low < mid < cut and np.float32(low) < np.float32(mid) < np.float32(cut):
        return mid
    return cut


def threshold_room(scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """How far the scores nearest a threshold lie from it, as served (float32): the lowest
    score it flags and the highest it does not, and the room each leaves. A film whose score
    moves by more than its room on another CPU or batch size changes side; a sidecar records
    this so a thin margin is seen, not found by a missed film."""
    s = np.asarray(scores, np.float32).reshape(-1)
    t = np.float32(threshold)
    above, below = s[s >= t], s[s < t]
    low = float(above.min()) if above.size else None
    high = float(below.max()) if below.size else None
    return {"lowest_flagged": low, "highest_not_flagged": high,
            "room_above": None if low is None else float(low - t),
            "room_below": None if high is None else float(t - high)}


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def metrics_at(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Confusion counts and the usual rates at one threshold (NaN where undefined)."""
    y_true = np.asarray(y_true).astype(int)
    pred = flagged(scores, threshold)
    tn, fp, fn, tp = (int(v) for v in skm.confusion_matrix(y_true, pred, labels=[0, 1]).ravel())
    return {
        "threshold": float(threshold),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "recall": float(skm.recall_score(y_true, pred, zero_division=np.nan)),
        "specificity": _safe_div(tn, tn + fp),
        "precision": float(skm.precision_score(y_true, pred, zero_division=np.nan)),
        "npv": _safe_div(tn, tn + fn),
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "f1": float(skm.f1_score(y_true, pred, zero_division=np.nan)),
    }


def bootstrap_ci(y_true: np.ndarray, scores: np.ndarray, threshold: float, *,
                 n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals (resampling images) for recall, specificity and AUC."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pred = flagged(scores, threshold)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    rec, spec, auc = [], [], []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        yt, yp = y_true[idx], pred[idx]
        pos, neg = yt == 1, yt == 0
        if pos.any():
            rec.append(yp[pos].mean())
        if neg.any():
            spec.append(1.0 - yp[neg].mean())
        if pos.any() and neg.any():
            auc.append(skm.roc_auc_score(yt, scores[idx]))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def ci(vals: list[float]) -> list[float]:
        return [float(np.percentile(vals, lo)), float(np.percentile(vals, hi))] if vals else []

    return {"recall": ci(rec), "specificity": ci(spec), "auc": ci(auc)}


# Fewer images than this in either class: the bootstrap's intervals are too narrow to trust
# (on 16 perfectly separated images it gives "AUC 1.0000 (1.0000 to 1.0000)").
SMALL_CLASS = 30
OPERATING_RECALLS = (0.90, 0.95, 0.98, 0.99)


def wilson(k: int, n: int, level: float = 0.95) -> list[float]:
    """The Wilson score interval of the proportion k/n (empty when n is 0)."""
    from statistics import NormalDist

    if n <= 0:
        return []
    z = NormalDist().inv_cdf((1 + level) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def operating_points(y_true: np.ndarray, scores: np.ndarray,
                     recalls: tuple[float, ...] = OPERATING_RECALLS) -> list[dict[str, Any]]:
    """For each target recall: the threshold :func:`select_threshold` chooses here, and the
    recall and specificity it gives (what each choice of threshold would cost)."""
    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0 or (y_true == 0).sum() == 0:
        return []
    rows = []
    for target in recalls:
        threshold = select_threshold(y_true, scores, target)
        at = metrics_at(y_true, scores, threshold)
        rows.append({"target_recall": target, "threshold": threshold, "recall": at["recall"],
                     "specificity": at["specificity"], "tp": at["tp"], "fp": at["fp"],
                     "tn": at["tn"], "fn": at["fn"]})
    return rows


def calibration_bins(y_true: np.ndarray, scores: np.ndarray, n_bins: int = 10
                     ) -> list[dict[str, Any]]:
    """Equal-count (quantile) bins of the scores: range, count, mean predicted probability and
    observed fraction with pneumonia; bins with no image are left out."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        return []
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        inside = which == b
        if not inside.any():
            continue
        rows.append({"low": float(edges[b]), "high": float(edges[min(b + 1, len(edges) - 1)]),
                     "n": int(inside.sum()), "mean_predicted": float(scores[inside].mean()),
                     "fraction_positive": float(y_true[inside].mean())})
    return rows


def _widest(a: list[float], b: list[float]) -> list[float]:
    if not a or not b:
        return a or b
    return [min(a[0], b[0]), max(a[1], b[1])]


def reported_intervals(m: dict[str, Any]) -> tuple[dict[str, list[float]], str]:
    """The intervals a report shows and how they were made: the bootstrap's, or, when either
    class has fewer than ``SMALL_CLASS`` images, the wider of the bootstrap's and Wilson's."""
    boot = m.get("ci95") or {}
    if not m.get("small_sample"):
        return boot, m.get("ci_method", "")
    wil = m.get("ci95_wilson") or {}
    shown = {k: _widest(boot.get(k) or [], wil.get(k) or []) for k in ("recall", "specificity",
                                                                      "auc")}
    return shown, ("small sample: the wider of the percentile bootstrap and the Wilson score "
                   "interval (recall: pneumonia images, specificity: normal images; AUC: "
                   "Wilson on the smaller class, an approximation)")


def summarize(y_true: np.ndarray, scores: np.ndarray, threshold: float, *,
              n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """All figures of an evaluation: AUC, average precision, Brier, metrics at the tuned
    threshold and at 0.5, 95% bootstrap intervals (with Wilson intervals and a small-sample
    flag), the operating points, calibration bins and the classification report."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    both = len(set(y_true.tolist())) == 2
    out: dict[str, Any] = {
        "n": len(y_true),
        "n_pneumonia": int(y_true.sum()),
        "n_normal": int((y_true == 0).sum()),
        "auc": float(skm.roc_auc_score(y_true, scores)) if both else float("nan"),
        "average_precision": (float(skm.average_precision_score(y_true, scores))
                              if y_true.any() else float("nan")),
        "brier": float(skm.brier_score_loss(y_true, scores)) if len(y_true) else float("nan"),
    }
    out.update(metrics_at(y_true, scores, threshold))
    out["at_0.5"] = metrics_at(y_true, scores, 0.5)
    out["ci95"] = (bootstrap_ci(y_true, scores, threshold, n_boot=n_boot, seed=seed)
                   if n_boot else {})
    out["ci_method"] = f"percentile bootstrap over images, {n_boot} resamples, seed {seed}"
    n_pos, n_neg = out["n_pneumonia"], out["n_normal"]
    smaller = min(n_pos, n_neg)
    out["small_sample"] = smaller < SMALL_CLASS
    out["ci95_wilson"] = {
        "recall": wilson(out["tp"], out["tp"] + out["fn"]),
        "specificity": wilson(out["tn"], out["tn"] + out["fp"]),
        # AUC as a proportion of the smaller class: no exact small-sample interval is simple,
        # and this one does not collapse to a point when the classes separate perfectly.
        "auc": wilson(round(out["auc"] * smaller), smaller) if both else [],
    }
    out["operating_points"] = operating_points(y_true, scores)
    out["calibration_bins"] = calibration_bins(y_true, scores)
    out["classification_report"] = skm.classification_report(
        y_true, flagged(scores, threshold), labels=[0, 1], target_names=["NORMAL", "PNEUMONIA"],
        output_dict=True, zero_division=0)
    return out


def subtype_metrics(viral: np.ndarray, p_viral: np.ndarray, *, n_boot: int = 2000,
                    seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Viral-vs-bacterial AUC on pneumonia images (1 = viral) with a percentile bootstrap CI."""
    viral = np.asarray(viral).astype(int)
    p = np.asarray(p_viral, dtype=np.float64)
    out: dict[str, Any] = {"n": len(viral), "n_viral": int(viral.sum()),
                           "n_bacterial": int((viral == 0).sum()),
                           "auc": float(skm.roc_auc_score(viral, p)), "ci95": None}
    if n_boot:
        rng = np.random.default_rng(seed)
        aucs = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(viral), len(viral))
            if 0 < viral[idx].sum() < len(idx):
                aucs.append(skm.roc_auc_score(viral[idx], p[idx]))
        lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
        out["ci95"] = [float(np.percentile(aucs, lo)), float(np.percentile(aucs, hi))]
    return out

"""The score distribution a model was validated with, and how far production has moved from it.

The sidecar carries ``score_histogram``: counts of the validation split's calibrated
probabilities in fixed bins (``bins``: the edges; ``edges`` is read too), with the validation
flag rate and out-of-scope rate when known. Monitoring
compares the scores seen in production with it by the population stability index (PSI) and
the Kolmogorov-Smirnov distance between the two binned distributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 20  # equal-width bins over [0, 1]
# PSI reading, by the usual convention of credit scoring where the index comes from.
PSI_STABLE, PSI_SHIFT = 0.1, 0.25
_EPS = 1e-4  # an empty bin counts as this share (the log of zero is undefined)


def edges(bins: int = BINS) -> list[float]:
    return [round(float(e), 6) for e in np.linspace(0.0, 1.0, bins + 1)]


def bin_edges_of(histogram: dict[str, Any]) -> list[float]:
    """A sidecar histogram's bin edges (``bins``, or ``edges`` as first written)."""
    return list(histogram.get("bins") or histogram["edges"])


def histogram_counts(values: Sequence[float] | np.ndarray, bin_edges: Sequence[float]) -> list[int]:
    """Counts of ``values`` in the bins (the last bin includes 1.0; values are clipped)."""
    arr = np.clip(np.asarray(values, np.float64), bin_edges[0], bin_edges[-1])
    counts, _ = np.histogram(arr, bins=np.asarray(bin_edges, np.float64))
    return [int(c) for c in counts]


def score_histogram(probabilities: Sequence[float] | np.ndarray, *, threshold: float,
                    atypicality: Sequence[float] | np.ndarray | None = None,
                    atypicality_threshold: float | None = None, split: str = "validation",
                    bins: int = BINS) -> dict[str, Any]:
    """What the sidecar carries: the split's probabilities binned, with its flag rate and (when
    the atypicality scores are given) its out-of-scope rate by the atypicality guard alone."""
    probs = np.asarray(probabilities, np.float64)
    if probs.size == 0:
        raise ValueError("no scores to make a histogram of")
    out: dict[str, Any] = {"split": split, "n": int(probs.size), "bins": edges(bins),
                           "of": "calibrated pneumonia probability",
                           "counts": histogram_counts(probs, edges(bins)),
                           "flag_rate": round(float((probs >= threshold).mean()), 6)}
    if atypicality is not None and atypicality_threshold is not None:
        out["out_of_scope_rate"] = round(float(
            (np.asarray(atypicality, np.float64) > atypicality_threshold).mean()), 6)
    return out


def psi(reference: Sequence[int], observed: Sequence[int]) -> float:
    """Population stability index of ``observed`` counts against ``reference`` counts (same
    bins): sum over bins of (o - r) * ln(o / r) on shares; 0 means the same distribution."""
    r = np.asarray(reference, np.float64)
    o = np.asarray(observed, np.float64)
    if r.shape != o.shape or r.sum() <= 0 or o.sum() <= 0:
        raise ValueError("psi needs two non-empty histograms over the same bins")
    r = np.maximum(r / r.sum(), _EPS)
    o = np.maximum(o / o.sum(), _EPS)
    return float(np.sum((o - r) * np.log(o / r)))


def ks_distance(reference: Sequence[int], observed: Sequence[int]) -> float:
    """The largest gap between the two cumulative distributions at the bin edges."""
    r = np.asarray(reference, np.float64)
    o = np.asarray(observed, np.float64)
    if r.shape != o.shape or r.sum() <= 0 or o.sum() <= 0:
        raise ValueError("ks_distance needs two non-empty histograms over the same bins")
    return float(np.max(np.abs(np.cumsum(r) / r.sum() - np.cumsum(o) / o.sum())))


def ks_critical(n_reference: int, n_observed: int, alpha: float = 0.05) -> float:
    """The two-sample KS distance above which the distributions differ at level ``alpha``
    (asymptotic; binning makes the test conservative)."""
    c = float(np.sqrt(-0.5 * np.log(alpha / 2)))
    return c * float(np.sqrt((n_reference + n_observed) / (n_reference * n_observed)))


def drift(reference: dict[str, Any], probabilities: Sequence[float]) -> dict[str, Any]:
    """PSI and KS of production ``probabilities`` against a sidecar's ``score_histogram``."""
    observed = histogram_counts(probabilities, bin_edges_of(reference))
    n = len(probabilities)
    if n == 0:
        return {"n": 0, "psi": None, "ks": None, "ks_critical": None,
                "observed": observed}
    value = psi(reference["counts"], observed)
    return {"n": n, "psi": round(value, 4), "ks": round(ks_distance(reference["counts"],
                                                                    observed), 4),
            "ks_critical": round(ks_critical(int(reference["n"]), n), 4),
            "reading": ("stable" if value < PSI_STABLE else
                        "moderate shift" if value < PSI_SHIFT else "large shift"),
            "observed": observed}

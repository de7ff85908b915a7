"""The intended-use guard: is this film inside what the model was validated on?

Two checks, each with a reason a reader understands: the patient's age (from the DICOM header)
against the validated range, and the model's atypicality score against its validation
threshold. PNG and JPEG inputs carry no age and rely on the score. An image outside scope keeps
its probability; it is listed apart as needing a human read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumoscreen.worker.ingest.age import parse_age_string

AGE_UNKNOWN = "age unknown: judged by the image alone"
# An inverted grey scale: on a frontal chest film the mediastinum (the central band) is brighter
# than the lungs beside it. On the 778 internal-test inputs this contrast was 0.004 at the least
# (median 0.236), on their negatives -0.004 at the most; on the five adult films of
# ../shared/dicom/chest 0.12-0.34. Below this, the film is read as a negative.
INVERTED_BELOW = -0.02


@dataclass(frozen=True)
class Verdict:
    in_scope: bool
    reason: str | None = None


def age_in_years(age: str | None) -> float | None:
    """Patient's Age in years as real files write it (``054Y``, ``54``, ``6 m``; see
    :mod:`pneumoscreen.worker.ingest.age`); None if absent or not an age."""
    parsed = parse_age_string(age)
    return None if parsed is None else parsed[0]


def mediastinum_contrast(x: np.ndarray) -> float:
    """Mean of the central band (mediastinum and spine) minus the mean of the lung fields beside
    it, rows 30-75 % of a network input in [0, 1] (MONOCHROME2: white is dense)."""
    img = np.asarray(x, dtype=np.float32)
    img = img[..., 0] if img.ndim == 3 else img
    n_rows, n_cols = img.shape
    rows = img[int(0.3 * n_rows):int(0.75 * n_rows)]
    centre = rows[:, int(0.43 * n_cols):int(0.57 * n_cols)].mean()
    lungs = np.concatenate([rows[:, int(0.15 * n_cols):int(0.35 * n_cols)],
                            rows[:, int(0.65 * n_cols):int(0.85 * n_cols)]], axis=1).mean()
    return float(centre - lungs)


def verdict(*, patient_age: str | None, atypicality: float | None,
            atypicality_threshold: float | None, age_range: tuple[float, float],
            contrast: float | None = None) -> Verdict:
    """In scope unless the age lies outside ``age_range`` (years), the image is atypical, or its
    grey scale is inverted (``contrast``: :func:`mediastinum_contrast` of its network input).

    With no known age the image guard decides alone, and an outside-scope reason says so.
    """
    reasons = []
    years = age_in_years(patient_age)
    if years is not None and not age_range[0] <= years <= age_range[1]:
        reasons.append(f"outside the validated population: age {patient_age.strip().upper()}"
                       f" (validated {age_range[0]:g} to {age_range[1]:g} years)")
    if (atypicality is not None and atypicality_threshold is not None
            and atypicality > atypicality_threshold):
        reasons.append(f"atypical image for this model (score {atypicality:.2f}, threshold "
                       f"{atypicality_threshold:.2f})")
    if contrast is not None and contrast < INVERTED_BELOW:
        reasons.append(f"atypical image: inverted grey scale (the mediastinum is darker than the "
                       f"lungs, contrast {contrast:.2f})")
    if years is None and reasons:
        reasons.append(AGE_UNKNOWN)
    return Verdict(not reasons, "; ".join(reasons) or None)

"""The intended-use guard: is this film inside what the model was validated on?

Two checks, each with a reason a reader understands: the patient's age (from the DICOM header)
against the validated range, and the model's atypicality score against its validation
threshold. PNG and JPEG inputs carry no age and rely on the score. An image outside scope keeps
its probability; it is listed apart as needing a human read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_AGE = re.compile(r"^(\d{3})([DWMY])$")
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


@dataclass(frozen=True)
class Verdict:
    in_scope: bool
    reason: str | None = None


def age_in_years(age: str | None) -> float | None:
    """A DICOM Age String (``054Y``, ``006M``, ``010W``, ``003D``) in years; None if absent or
    not a valid AS value."""
    if not age:
        return None
    m = _AGE.match(age.strip().upper())
    if not m:
        return None
    return int(m.group(1)) * _UNIT_YEARS[m.group(2)]


def verdict(*, patient_age: str | None, atypicality: float | None,
            atypicality_threshold: float | None, age_range: tuple[float, float]) -> Verdict:
    """In scope unless the age lies outside ``age_range`` (years) or the image is atypical."""
    reasons = []
    years = age_in_years(patient_age)
    if years is not None and not age_range[0] <= years <= age_range[1]:
        reasons.append(f"outside the validated population: age {patient_age.strip().upper()}"
                       f" (validated {age_range[0]:g} to {age_range[1]:g} years)")
    if (atypicality is not None and atypicality_threshold is not None
            and atypicality > atypicality_threshold):
        reasons.append(f"atypical image for this model (score {atypicality:.2f}, threshold "
                       f"{atypicality_threshold:.2f})")
    return Verdict(not reasons, "; ".join(reasons) or None)

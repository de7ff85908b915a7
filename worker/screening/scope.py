"""The intended-use guard: is this film inside what the model was validated on?

Two checks, each with a reason a reader understands: the patient's age (from the DICOM header)
against the validated range, and the model's atypicality score against its validation
threshold. PNG and JPEG inputs carry no age and rely on the score. An image outside scope keeps
its probability; it is listed apart as needing a human read.
"""

from __future__ import annotations

from dataclasses import dataclass

from pneumoscreen.worker.ingest.age import parse_age_string

AGE_UNKNOWN = "age unknown: judged by the image alone"


@dataclass(frozen=True)
class Verdict:
    in_scope: bool
    reason: str | None = None


def age_in_years(age: str | None) -> float | None:
    """Patient's Age in years as real files write it (``054Y``, ``54``, ``6 m``; see
    :mod:`pneumoscreen.worker.ingest.age`); None if absent or not an age."""
    parsed = parse_age_string(age)
    return None if parsed is None else parsed[0]


def verdict(*, patient_age: str | None, atypicality: float | None,
            atypicality_threshold: float | None, age_range: tuple[float, float]) -> Verdict:
    """In scope unless the age lies outside ``age_range`` (years) or the image is atypical.

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
        if years is None:
            reasons.append(AGE_UNKNOWN)
    return Verdict(not reasons, "; ".join(reasons) or None)

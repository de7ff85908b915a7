"""The intended-use guard's verdict: age from the header, the image score, both reasons."""

from __future__ import annotations

import pytest

from pneumoscreen.worker.screening.scope import age_in_years, verdict

RANGE = (0.0, 10.0)


@pytest.mark.parametrize(("age", "years"), [("054Y", 54), ("006M", 0.5), ("052W", 52 * 7 / 365.25),
                                            ("010D", 10 / 365.25), ("5Y", 5), ("54", 54),
                                            ("", None), (None, None), ("ABCY", None)])
def test_age_strings(age: str | None, years: float | None) -> None:
    got = age_in_years(age)
    assert got == (pytest.approx(years) if years is not None else None)


def test_an_adult_is_outside_the_validated_population() -> None:
    v = verdict(patient_age="054Y", atypicality=None, atypicality_threshold=None,
                age_range=RANGE)
    assert not v.in_scope
    assert v.reason == "outside the validated population: age 054Y (validated 0 to 10 years)"


def test_a_child_with_a_typical_image_is_in_scope() -> None:
    assert verdict(patient_age="004Y", atypicality=0.9, atypicality_threshold=1.8,
                   age_range=RANGE).in_scope


def test_an_atypical_image_without_age_is_outside_scope() -> None:
    v = verdict(patient_age=None, atypicality=2.5, atypicality_threshold=1.8, age_range=RANGE)
    assert not v.in_scope and v.reason.startswith("atypical image for this model (score 2.50")


def test_both_reasons_are_given() -> None:
    v = verdict(patient_age="070Y", atypicality=3.0, atypicality_threshold=1.0, age_range=RANGE)
    assert v.reason and "age 070Y" in v.reason and "atypical image" in v.reason


def test_unknown_age_says_the_image_guard_decided_alone() -> None:
    v = verdict(patient_age=None, atypicality=2.5, atypicality_threshold=1.8, age_range=RANGE)
    assert v.reason is not None and v.reason.endswith("; age unknown: judged by the image alone")
    known = verdict(patient_age="070Y", atypicality=3.0, atypicality_threshold=1.0,
                    age_range=RANGE)
    assert "age unknown" not in (known.reason or "")


def test_a_bare_number_adult_is_outside_scope() -> None:
    v = verdict(patient_age="51", atypicality=0.5, atypicality_threshold=1.8, age_range=RANGE)
    assert not v.in_scope and v.reason is not None and "age 51 " in v.reason


def test_an_inverted_grey_scale_is_outside_scope() -> None:
    """A made chest-like input (bright central band, darker lungs) and its negative."""
    import numpy as np

    from pneumoscreen.worker.screening.scope import mediastinum_contrast

    x = np.full((224, 224, 1), 0.3, np.float32)
    x[:, 96:128] = 0.8  # mediastinum and spine
    assert mediastinum_contrast(x) == pytest.approx(0.5, abs=1e-6)
    assert mediastinum_contrast(1 - x) == pytest.approx(-0.5, abs=1e-6)
    ok = verdict(patient_age="004Y", atypicality=0.5, atypicality_threshold=1.8,
                 age_range=RANGE, contrast=mediastinum_contrast(x))
    neg = verdict(patient_age=None, atypicality=0.5, atypicality_threshold=1.8,
                  age_range=RANGE, contrast=mediastinum_contrast(1 - x))
    assert ok.in_scope and not neg.in_scope
    assert neg.reason == ("atypical image: inverted grey scale (the mediastinum is darker than "
                          "the lungs, contrast -0.50); age unknown: judged by the image alone")

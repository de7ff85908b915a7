"""Age as real files write it: strict AS, bare numbers, loose units, dates; placeholders unknown."""

from __future__ import annotations

import datetime as dt

import pytest

from pneumoscreen.worker.ingest.age import (
    age_from_dates,
    as_string,
    parse_age_string,
    patient_age,
)

TODAY = dt.date(2026, 12, 4)


@pytest.mark.parametrize(("raw", "years", "strict"), [
    ("054Y", 54.0, True), ("006M", 0.5, True), ("010W", 70 / 365.25, True),
    ("003D", 3 / 365.25, True),
    ("54", 54.0, False), ("19", 19.0, False), ("6", 6.0, False), ("6.5", 6.5, False),
    ("6,5", 6.5, False), ("54Y", 54.0, False), ("054y", 54.0, True), ("5 Y", 5.0, False),
    ("18 M", 1.5, False), ("18m", 1.5, False), ("3 years", 3.0, False), ("2 yrs", 2.0, False),
    ("  054Y\x00", 54.0, True), ("0", 0.0, False),
])
def test_age_forms_real_files_write(raw: str, years: float, strict: bool) -> None:
    got = parse_age_string(raw)
    assert got is not None
    assert got[0] == pytest.approx(years)
    assert got[1] is strict


@pytest.mark.parametrize("raw", ["", "   ", "abc", "54Q", "-5", "999Y", "130", "1e3", "Y",
                                 "54 years old", "12/05/1970", None])
def test_not_an_age(raw: object) -> None:
    assert parse_age_string(raw) is None


@pytest.mark.parametrize(("years", "expected"), [
    (54.0, "054Y"), (2.0, "002Y"), (1.5, "018M"), (0.5, "006M"), (10.9, "010Y"),
    (3 / 365.25, "003D"),
])
def test_normalised_to_a_strict_age_string(years: float, expected: str) -> None:
    assert as_string(years) == expected


def _header(**tags: str) -> object:
    return lambda keyword: tags.get(keyword)


def test_bare_number_is_years_and_says_so() -> None:
    age = patient_age(_header(PatientAge="51"), today=TODAY)
    assert (age.years, age.value) == (51.0, "051Y")
    assert "non-standard form read as years" in age.source


def test_dates_first_present_in_order() -> None:
    age = patient_age(_header(PatientBirthDate="20200310", SeriesDate="20240309",
                              ContentDate="20250101"), today=TODAY)
    assert age.value == "003Y"  # the Series Date (Study Date absent): a day short of 4 years
    assert age.source == "Patient's Birth Date and Series Date"
    age = patient_age(_header(PatientBirthDate="20200310", StudyDate="19000101",
                              AcquisitionDate="20230310"), today=TODAY)
    assert (age.value, age.source) == ("003Y", "Patient's Birth Date and Acquisition Date")


@pytest.mark.parametrize(("birth", "study", "why"), [
    ("19010101", "20180101", "placeholder"),
    ("19000101", "20180101", "placeholder"),
    ("18991231", "20180101", "placeholder"),
    ("20300101", "20180101", "placeholder"),  # born in the future
    ("20190101", "20180101", "after the Study Date"),
    ("20100101", None, "no valid Study"),
    ("20100101", "20991231", "no valid Study"),  # a study in the future is no date
    ("20101301", "20180101", "no valid Patient's Birth Date"),  # month 13
    (None, None, "no valid Patient's Birth Date"),
])
def test_placeholder_and_impossible_dates_are_unknown(birth: str | None, study: str | None,
                                                      why: str) -> None:
    age = age_from_dates(birth, [("StudyDate", study)], today=TODAY)
    assert age.years is None and age.value is None
    assert age.source.startswith("unknown: ") and why in age.source


def test_strict_age_beats_dates_and_bad_age_falls_back_to_dates() -> None:
    both = patient_age(_header(PatientAge="004Y", PatientBirthDate="19700101",
                               StudyDate="20200101"), today=TODAY)
    assert both.value == "004Y"
    bad = patient_age(_header(PatientAge="old", PatientBirthDate="19700101",
                              StudyDate="20200101"), today=TODAY)
    assert (bad.value, bad.source) == ("050Y", "Patient's Birth Date and Study Date")
    nothing = patient_age(_header(PatientAge="old"), today=TODAY)
    assert nothing.years is None
    assert nothing.source == ("unknown: Patient's Age is not an age; "
                              "no valid Patient's Birth Date")

"""The patient's age at the study, as real files write it, and how it was obtained.

Real archives rarely write Patient's Age (0010,1010) as the standard's Age String (``054Y``):
they write bare numbers (``54``, ``6``), decimals (``6.5``), units without padding or with a
space (``5Y``, ``18 M``), lower case (``054y``). De-identified files carry placeholder birth
dates (``19000101``, ``19010101``) and often no Study Date. The rules, in order:

1. Patient's Age as a strict Age String (``nnnD|W|M|Y``);
2. the real-world forms: a bare integer or decimal is years; a number with ``D``/``W``/``M``/``Y``
   (any case, padded or not, a space allowed; ``years``/``months``… spelt out);
3. Patient's Birth Date with the first valid of Study, Series, Acquisition, Content Date;
4. otherwise unknown.

A date before 1900-01-02, a known placeholder (1901-01-01), a date in the future, a birth after
the study or an age above :data:`MAX_YEARS` is not an age: unknown. The result is normalised to
a strict Age String (so it fits the column) and says how it was obtained (``source``), never
quoting the value itself: a reason may be shown where patient data must not be.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# No human lives longer; above it a value is a typo or a placeholder birth date.
MAX_YEARS = 125.0
EARLIEST = dt.date(1900, 1, 2)
# Birth dates de-identification tools write instead of the real one (besides anything < EARLIEST).
PLACEHOLDER_BIRTH = frozenset({dt.date(1901, 1, 1)})
DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_DATE_NAMES = {"StudyDate": "Study Date", "SeriesDate": "Series Date",
               "AcquisitionDate": "Acquisition Date", "ContentDate": "Content Date"}

_STRICT = re.compile(r"(\d{3})([DWMY])")
_UNITS = {
    "D": "D", "DAY": "D", "DAYS": "D",
    "W": "W", "WK": "W", "WKS": "W", "WEEK": "W", "WEEKS": "W",
    "M": "M", "MO": "M", "MOS": "M", "MON": "M", "MONTH": "M", "MONTHS": "M",
    "Y": "Y", "YR": "Y", "YRS": "Y", "YEAR": "Y", "YEARS": "Y", "A": "Y",
}
_RELAXED = re.compile(r"(\d{1,3}(?:[.,]\d{1,4})?)\s*([A-Z]{0,6})\.?")
_IN_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


@dataclass(frozen=True)
class Age:
    """``years`` (None: unknown), the Age String it normalises to, and how it was obtained."""

    years: float | None
    value: str | None
    source: str

    @property
    def known(self) -> bool:
        return self.years is not None


def as_string(years: float) -> str:
    """A strict Age String for ``years``: ``Y`` from 2 years, ``M`` from 4 weeks, else ``D``."""
    if years >= 2:
        return f"{min(int(years), 999):03d}Y"
    if years >= 28 / 365.25:
        return f"{int(years * 12 + 1e-9):03d}M"
    return f"{round(years * 365.25):03d}D"


def _clean(raw: object) -> str:
    return str(raw).replace("\x00", "").strip().upper() if raw is not None else ""


def parse_age_string(raw: object) -> tuple[float, bool] | None:
    """Patient's Age in years and whether it was a strict Age String; None if it is not an age.

    >>> parse_age_string("054Y"), parse_age_string("54"), parse_age_string("6 m")
    ((54.0, True), (54.0, False), (0.5, False))
    """
    value = _clean(raw)
    if not value:
        return None
    if m := _STRICT.fullmatch(value):
        years = int(m.group(1)) * _IN_YEARS[m.group(2)]
        strict = True
    elif m := _RELAXED.fullmatch(value):
        unit = _UNITS.get(m.group(2) or "Y")
        if unit is None:
            return None
        years = float(m.group(1).replace(",", ".")) * _IN_YEARS[unit]
        strict = False
    else:
        return None
    if not math.isfinite(years) or years > MAX_YEARS:
        return None
    return years, strict


def parse_date(raw: object) -> dt.date | None:
    """A DA value (``YYYYMMDD``; the old ``YYYY.MM.DD`` too) as a date, or None."""
    value = _clean(raw).replace(".", "").replace("-", "")
    if not re.fullmatch(r"\d{8}", value):
        return None
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return None


def _plausible(date: dt.date | None, today: dt.date) -> bool:
    return date is not None and EARLIEST <= date <= today


def years_between(born: dt.date, on: dt.date) -> float:
    """Whole months between two dates, in years (a birthday later in the month not reached)."""
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    if months >= 1:
        return months / 12
    return (on - born).days / 365.25


def patient_age(get: Callable[[str], object], *, today: dt.date | None = None) -> Age:
    """The age at the study from a header; ``get(keyword)`` returns a tag's raw value or None."""
    today = today or dt.date.today()
    raw_age = get("PatientAge")
    parsed = parse_age_string(raw_age)
    if parsed is not None:
        years, strict = parsed
        how = ("Patient's Age (0010,1010)" if strict
               else "Patient's Age (0010,1010), a non-standard form read as "
                    + ("years" if re.fullmatch(r"[\d.,]+", _clean(raw_age)) else "written"))
        return Age(years, as_string(years), how)
    from_dates = age_from_dates(get("PatientBirthDate"),
                                [(kw, get(kw)) for kw in DATE_KEYWORDS], today=today)
    if from_dates.known:
        return from_dates
    why = "no Patient's Age" if _clean(raw_age) == "" else "Patient's Age is not an age"
    return Age(None, None, f"unknown: {why}; {from_dates.source.removeprefix('unknown: ')}")


def age_from_dates(birth: object, dates: Sequence[tuple[str, object]], *,
                   today: dt.date | None = None) -> Age:
    """The age from a birth date and the first valid of ``dates`` ((keyword, raw value) pairs)."""
    today = today or dt.date.today()
    born = parse_date(birth)
    if born is None:
        return Age(None, None, "unknown: no valid Patient's Birth Date")
    if not _plausible(born, today) or born in PLACEHOLDER_BIRTH:
        return Age(None, None, "unknown: Patient's Birth Date is a placeholder or impossible")
    for keyword, raw in dates:
        on = parse_date(raw)
        if not _plausible(on, today):
            continue
        assert on is not None
        if on < born:
            return Age(None, None, f"unknown: the birth date is after the {_DATE_NAMES[keyword]}")
        years = years_between(born, on)
        if years > MAX_YEARS:
            return Age(None, None, "unknown: the dates give an impossible age")
        return Age(years, as_string(years),
                   f"Patient's Birth Date and {_DATE_NAMES[keyword]}")
    return Age(None, None, "unknown: Patient's Birth Date but no valid Study, Series, "
                           "Acquisition or Content Date")

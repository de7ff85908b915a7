"""Value checks by Value Representation (PS3.5 6.2): what may be stored, and what may be quoted.

A header value reaches the database, a stored reason or a log only if it is valid for its VR:
a Code String is at most 16 upper-case letters, digits, spaces and underscores, so a name
typed into Body Part Examined is no Code String and is never repeated back. Anything else is
"an invalid value".
"""

from __future__ import annotations

import re

from pydicom.datadict import dictionary_description, dictionary_VR, tag_for_keyword
from pydicom.tag import Tag

INVALID = "an invalid value"

# Maximum length in characters (PS3.5 table 6.2-1) and the characters allowed. Text VRs (SH, LO)
# admit any printable character but the backslash (the value separator); control characters
# (ESC, BEL…) are refused outright even where the standard tolerates ESC for character sets:
# pydicom has already decoded those, so a surviving ESC is an injection, not a charset switch.
_PATTERNS: dict[str, re.Pattern[str]] = {
    "AE": re.compile(r"[^\\\x00-\x1f\x7f-\x9f]{1,16}"),
    "AS": re.compile(r"\d{3}[DWMY]"),
    "CS": re.compile(r"[A-Z0-9 _]{1,16}"),
    "DA": re.compile(r"\d{8}"),
    "DS": re.compile(r"[ ]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[ ]*"),
    "IS": re.compile(r"[ ]*[+-]?\d{1,11}[ ]*"),
    "LO": re.compile(r"[^\\\x00-\x1f\x7f-\x9f]{1,64}"),
    "SH": re.compile(r"[^\\\x00-\x1f\x7f-\x9f]{1,16}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "US": re.compile(r"\d{1,5}"),  # US, SS: as pydicom hands them back, decimal integers
    "SS": re.compile(r"-?\d{1,5}"),
}
_MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "IS": 12, "LO": 64, "SH": 16,
               "TM": 16, "UI": 64, "US": 5, "SS": 6}


# A UID (PS3.5 9.1, pydicom's ``UID.is_valid``): dotted numbers, no leading zero in a component.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# As files carry them: some modalities write leading zeros. The point of the header check is the
# alphabet and the length, which the columns need.
_UID_AS_WRITTEN = re.compile(r"\d+(\.\d+)*")


def is_uid(text: object, *, as_written: bool = False) -> bool:
    """A DICOM UID: at most 64 characters of dotted numbers; the one UID check of the project.

    ``as_written``: leading zeros tolerated (a header value to store); otherwise the standard's
    rule (a UID we name a file or a group by, or configure).
    """
    if not isinstance(text, str) or not 0 < len(text) <= 64:
        return False
    return (_UID_AS_WRITTEN if as_written else _UID).fullmatch(text) is not None


def vr_of(keyword: str) -> str:
    """The dictionary VR of ``keyword`` (e.g. ``CS``, or ``US or SS`` where it depends)."""
    return dictionary_VR(keyword)


def max_length(vr: str) -> int:
    """The longest value the standard allows for ``vr`` (checked VRs only)."""
    return max(_MAX_LENGTH[one] for one in vr.split(" or "))


def is_valid(value: str, vr: str) -> bool:
    """True if ``value`` (one value, already stripped) is valid for ``vr``; blank is not.

    A VR with no pattern here (a value we never store or quote) is never valid: refuse rather
    than guess.
    """
    return any(
        is_uid(value, as_written=True) if one == "UI" else
        (pattern := _PATTERNS.get(one)) is not None and pattern.fullmatch(value) is not None
        for one in vr.split(" or ")
    )


def is_valid_multi(value: str, vr: str) -> bool:
    """Like :func:`is_valid` for a backslash-joined multi-value."""
    return all(is_valid(part.strip(), vr) for part in value.split("\\"))


def quoted(value: str | None, vr: str) -> str:
    """``value`` as a reason may show it: itself when valid for ``vr``, else 'an invalid value'."""
    if value is None or not value.strip():
        return "(blank)"
    return value if is_valid_multi(value.strip(), vr) else INVALID


def tag_name(keyword: str) -> str:
    """``Body Part Examined (0018,0015)``: how a reason names a tag."""
    tag = Tag(tag_for_keyword(keyword))
    return f"{dictionary_description(tag)} {tag}"

"""SCREEN_EXPORT_TO entries: the three kinds parse; a bad one gets one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoscreen.worker.export.destinations import (
    DestinationError,
    DicomDestination,
    DicomWebDestination,
    FolderDestination,
    parse_destination,
    parse_destinations,
)


def test_the_three_kinds() -> None:
    assert parse_destination("dicom://ORTHANC@pacs.example.org:4242") == DicomDestination(
        "ORTHANC", "pacs.example.org", 4242)
    assert parse_destination("dicom://MY AE@[::1]:104") == DicomDestination("MY AE", "::1", 104)
    assert parse_destination("http://127.0.0.1:8042/dicom-web/") == DicomWebDestination(
        "http://127.0.0.1:8042/dicom-web")
    assert parse_destination("file:///var/out") == FolderDestination(Path("/var/out"))


def test_a_password_never_shows_in_the_label() -> None:
    dest = parse_destination("https://bob:s3cret@pacs.example.org/dicom-web")
    assert "s3cret" not in dest.label and dest.label.startswith("https://bob:***@")
    assert "s3cret" in dest.url  # still used to send


def test_repeats_collapse() -> None:
    assert len(parse_destinations(["file:///a", " file:///a ", "file:///b"])) == 2


@pytest.mark.parametrize(("text", "says"), [
    ("ftp://host/x", "unknown kind"),
    ("pacs.example.org:104", "unknown kind"),
    ("dicom://pacs.example.org:104", "called AE title"),
    ("dicom://THIS_AE_TITLE_IS_TOO_LONG@h:104", "1-16 printable"),
    ("dicom://BAD\\AE@h:104", "1-16 printable"),
    ("dicom://AE@host", "port 1-65535"),
    ("dicom://AE@host:0", "port 1-65535"),
    ("dicom://AE@host:99999", "port 1-65535"),
    ("dicom://AE@ho st:104", "not a host"),
    ("http:///dicom-web", "no host"),
    ("http://h:notaport/dicom-web", "not a valid address"),
    ("http://h/dicom-web?x=1", "no query"),
    ("file://server/share", "no host"),
    ("file://relative/path", "no host"),
    ("file:///", "absolute folder"),
])
def test_bad_destinations_get_one_line(text: str, says: str) -> None:
    with pytest.raises(DestinationError, match=says) as info:
        parse_destination(text)
    assert "\n" not in str(info.value) and str(info.value).startswith("export destination")


def test_an_error_never_shows_a_password() -> None:
    with pytest.raises(DestinationError, match="port 1-65535") as info:
        parse_destination("dicom://AE:hunter2@host")
    assert "hunter2" not in str(info.value)
    for text in ("https://bob:hunter2@host:x/dicom-web", "https://bob:hun/ter2@host/dicom-web",
                 "https://bob:hun@ter2@host:x/dicom-web"):
        with pytest.raises(DestinationError, match="not a valid address") as info:
            parse_destination(text)
        assert "ter2" not in str(info.value)

"""Where exports go: parse and check ``SCREEN_EXPORT_TO`` entries, each with a one-line error."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pneumoscreen.worker.settings import Settings, mask_credentials

log = logging.getLogger(__name__)

FORMS = ("dicom://AET@host:port (dicoms:// over TLS), http(s)://host[:port]/…/dicom-web or "
         "file:///absolute/folder")
# An AE title: 1-16 characters of the default repertoire, no backslash, not only spaces.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?)$")


class DestinationError(ValueError):
    """A destination string that cannot be used; the message is one line."""


@dataclass(frozen=True)
class DicomDestination:
    """A DICOM peer (PACS) that accepts C-STORE."""

    ae_title: str
    host: str
    port: int
    tls: bool = False  # dicoms://: the association over TLS, the PACS's certificate verified

    @property
    def label(self) -> str:
        return f"dicom{'s' if self.tls else ''}://{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class DicomWebDestination:
    """A DICOMweb service root; STOW-RS posts to ``{url}/studies``."""

    url: str

    @property
    def label(self) -> str:
        """The URL with any credential masked: what is stored and printed."""
        return mask_credentials(self.url)

    @property
    def has_credentials(self) -> bool:
        return "@" in urlsplit(self.url).netloc


@dataclass(frozen=True)
class FolderDestination:
    """A local folder: ``{path}/{StudyInstanceUID}/{SOPInstanceUID}.dcm``, written atomically."""

    path: Path

    @property
    def label(self) -> str:
        return f"file://{self.path}"


Destination = DicomDestination | DicomWebDestination | FolderDestination


def parse_destination(text: str, *, trusted_network: bool = False) -> Destination:
    """One destination from its string, or :class:`DestinationError` saying what is wrong.

    Credentials in a plain ``http://`` URL would cross the network in clear: refused unless
    ``trusted_network`` (SCREEN_EXPORT_TRUSTED_NETWORK) says that network is trusted.
    """
    raw = text.strip()
    shown = mask_credentials(raw)  # an error message never carries a credential
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    scheme = raw.split(":", 1)[0].lower() if ":" in raw else ""
    if scheme in ("dicom", "dicoms"):
        return _dicom(raw, shown)
    if scheme in ("http", "https"):
        dest = _dicomweb(raw, shown)
        if scheme == "http" and dest.has_credentials and not trusted_network:
            raise DestinationError(f"export destination {shown!r}: credentials over plain "
                                   "http:// travel in clear; use https://, or set "
                                   "SCREEN_EXPORT_TRUSTED_NETWORK=true on a trusted network")
        return dest
    if scheme == "file":
        return _folder(raw, shown)
    raise DestinationError(f"export destination {shown!r}: unknown kind; use {FORMS}")


def parse_destinations(texts: list[str], *, trusted_network: bool = False) -> list[Destination]:
    """Every destination, in order, without repeats; the first bad one raises."""
    seen: dict[str, Destination] = {}
    for text in texts:
        dest = parse_destination(text, trusted_network=trusted_network)
        seen.setdefault(dest.label, dest)
    return list(seen.values())


def _dicom(raw: str, shown: str) -> DicomDestination:
    tls = raw.lower().startswith("dicoms://")
    prefix = "dicoms://" if tls else "dicom://"
    rest = raw[len(prefix):] if raw.lower().startswith(prefix) else ""
    aet, at, address = rest.rpartition("@")
    if not at or not aet:
        raise DestinationError(f"export destination {shown!r}: give the called AE title, "
                               "e.g. dicom://ORTHANC@pacs.example.org:4242")
    aet = unquote(aet)
    if not _AE_TITLE.match(aet) or not aet.strip():
        raise DestinationError(f"export destination {shown!r}: AE title {aet!r} must be 1-16 "
                               "printable ASCII characters without a backslash")
    host, colon, port_text = address.rpartition(":")
    if not colon or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise DestinationError(f"export destination {shown!r}: give a port 1-65535, e.g. "
                               "dicom://ORTHANC@pacs.example.org:4242")
    if not _HOST.match(host):
        raise DestinationError(f"export destination {shown!r}: {host!r} is not a host name "
                               "or address")
    return DicomDestination(aet.strip(), host.strip("[]"), int(port_text), tls)


def _dicomweb(raw: str, shown: str) -> DicomWebDestination:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise DestinationError(f"export destination {shown!r}: not a valid address "
                               f"({type(exc).__name__})") from None
    if not parts.hostname or not _HOST.match(parts.hostname.strip("[]")):
        raise DestinationError(f"export destination {shown!r}: no host; e.g. "
                               "http://pacs.example.org:8042/dicom-web")
    if parts.query or parts.fragment:
        raise DestinationError(f"export destination {shown!r}: a DICOMweb root takes no "
                               "query or fragment")
    return DicomWebDestination(urlunsplit((parts.scheme.lower(), parts.netloc,
                                           parts.path.rstrip("/"), "", "")))


def _folder(raw: str, shown: str) -> FolderDestination:
    parts = urlsplit(raw)
    if parts.netloc not in ("", "localhost"):
        raise DestinationError(f"export destination {shown!r}: a folder URL has no host; "
                               "use file:///absolute/folder")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or str(path) == "/":
        raise DestinationError(f"export destination {shown!r}: give an absolute folder, "
                               "e.g. file:///var/lib/pneumoscreen/exports")
    return FolderDestination(path)


def configured_destinations(settings: Settings) -> list[Destination]:
    """The usable ``SCREEN_EXPORT_TO`` entries; a bad one is logged (one line) and skipped."""
    out: dict[str, Destination] = {}
    for text in settings.export_to:
        try:
            dest = parse_destination(text, trusted_network=settings.export_trusted_network)
        except DestinationError as exc:
            log.error("%s", exc)
            continue
        out.setdefault(dest.label, dest)
    return list(out.values())


def configured_destination(label: str, settings: Settings) -> Destination | None:
    """The configured destination with this label: a task sends nowhere else, whatever its
    message says."""
    return next((d for d in configured_destinations(settings) if d.label == label), None)

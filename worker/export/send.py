"""Deliver DICOM objects to a destination: C-STORE (pynetdicom), STOW-RS (dicomweb-client) or
an atomic write into a folder. Failures are sorted into transient (worth a retry) and
permanent; their messages name the destination, never patient data."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset

from pneumoscreen.worker.export.destinations import (
    Destination,
    DicomDestination,
    DicomWebDestination,
    FolderDestination,
)


class ExportError(RuntimeError):
    """An export that did not reach its destination."""

    transient = False


class TransientExportError(ExportError):
    """Worth another try later: connection refused, timeout, busy or failing server."""

    transient = True


class PermanentExportError(ExportError):
    """Another try would fail the same way: refused objects, bad configuration."""


# C-STORE warnings (coercion, elements discarded, duplicate): stored all the same.
_STORE_WARNINGS = {0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007, 0x0111}
_TRANSIENT_FILE_ERRORS = {errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.EDQUOT}


def send(datasets: Sequence[Dataset], destination: Destination, *, ae_title: str = "PNEUMOSCREEN",
         timeout: float = 30.0, settings: Any = None) -> None:
    """Send every dataset, or raise :class:`ExportError` (none is half-sent to a folder).
    ``settings``: the TLS files of a dicoms:// export (``export_tls_ca/_cert/_key``)."""
    if isinstance(destination, DicomDestination):
        c_store(datasets, destination, ae_title=ae_title, timeout=timeout,
                tls=client_tls(settings) if destination.tls else None)
    elif isinstance(destination, DicomWebDestination):
        stow(datasets, destination, timeout=timeout)
    else:
        write_folder(datasets, destination)


def client_tls(settings: Any) -> Any:
    """The client-side TLS context of a dicoms:// export: TLS 1.2+, the PACS's certificate
    verified (against ``export_tls_ca`` or the system's CAs), our certificate when given."""
    import ssl

    ca = getattr(settings, "export_tls_ca", None)
    cert = getattr(settings, "export_tls_cert", None)
    key = getattr(settings, "export_tls_key", None)
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            context.load_cert_chain(certfile=str(cert), keyfile=str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise PermanentExportError(f"the TLS files of a dicoms:// export cannot be used: "
                                   f"{type(exc).__name__}") from None
    return context


def c_store(datasets: Sequence[Dataset], dest: DicomDestination, *, ae_title: str,
            timeout: float, tls: Any = None) -> None:
    """One association (over TLS with ``tls``, an SSLContext), one C-STORE per dataset, each
    status checked."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title,
                         tls_args=(tls, dest.host) if tls is not None else None)
    if not assoc.is_established:
        if assoc.is_rejected:
            result = getattr(getattr(assoc.acceptor, "primitive", None), "result", None)
            message = f"{dest.label} rejected the association (result {result})"
            raise (TransientExportError if result == 2 else PermanentExportError)(message)
        raise TransientExportError(f"no association with {dest.label}: connection refused, "
                                   "timed out or aborted")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise TransientExportError(f"{dest.label} sent no C-STORE response "
                                           "(timeout or aborted)")
            if code == 0x0000 or code in _STORE_WARNINGS:
                continue
            text = f"{dest.label} refused a {ds.Modality} object: C-STORE status 0x{code:04X}"
            if 0xA700 <= code <= 0xA7FF:  # out of resources
                raise TransientExportError(text)
            raise PermanentExportError(text)
    except (ConnectionError, OSError, RuntimeError) as exc:
        if isinstance(exc, ExportError):
            raise
        raise TransientExportError(f"{dest.label}: {type(exc).__name__} during C-STORE") from None
    finally:
        if assoc.is_established:
            assoc.release()


def stow(datasets: Sequence[Dataset], dest: DicomWebDestination, *, timeout: float) -> None:
    """One STOW-RS request with every dataset; a failed SOP in the response is an error.
    (Credentials over plain http:// were refused when the destination was parsed.)"""
    import requests
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(dest.url, timeout=(timeout, timeout))
    client.set_http_retry_params(retry=False)  # retries are the export task's, with backoff
    try:
        response = client.store_instances(list(datasets))
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else 0
        text = f"{dest.label} answered HTTP {code} to STOW-RS"
        if code >= 500 or code in (408, 429):
            raise TransientExportError(text) from None
        raise PermanentExportError(text) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        raise TransientExportError(f"{dest.label}: connection refused or timed out") from None
    except requests.exceptions.RequestException as exc:
        raise PermanentExportError(f"{dest.label}: {type(exc).__name__}") from None
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed})
        raise PermanentExportError(f"{dest.label} refused {len(failed)} object(s) "
                                   f"(failure reason {', '.join(reasons)})")


def write_folder(datasets: Sequence[Dataset], dest: FolderDestination) -> None:
    """``{folder}/{StudyInstanceUID}/{SOPInstanceUID}.dcm``, each written to a temporary file
    and renamed into place (a reader never sees half a file; a resend replaces it)."""
    for ds in datasets:
        folder = dest.path / str(ds.StudyInstanceUID)
        target = folder / f"{ds.SOPInstanceUID}.dcm"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        try:
            # Results name studies and show patients' films: private to the exporting user.
            dest.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.mkdir(exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".export-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(buf.getvalue())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            text = f"{dest.label}: cannot write ({os.strerror(exc.errno or 0) or exc})"
            if exc.errno in _TRANSIENT_FILE_ERRORS:
                raise TransientExportError(text) from None
            raise PermanentExportError(text) from None

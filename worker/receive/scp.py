"""The DICOM service of ``screen listen``: C-ECHO and C-STORE of CR/DX images into the spool.

Everything from the network is bounded: who may associate (an allow-list of calling AE titles),
what may be sent (the CR and DX storage SOP classes unless configured otherwise), how much (max
PDU, bytes per instance, concurrent associations) and how long (ACSE, DIMSE, network timeouts).
A C-STORE answers Success only once the instance is durably in the spool; it never waits for the
database.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
)
from pynetdicom.sop_class import Verification

from pneumoscreen.worker.receive.spool import Spool, SpoolFile

log = logging.getLogger(__name__)

VERIFICATION = str(Verification)
CR_DX_STORAGE = tuple(str(uid) for uid in (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
))
SUCCESS = 0x0000
REFUSED_NOT_AUTHORISED = 0x0124
REFUSED_SOP_CLASS = 0x0122
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class ListenConfig:
    """What the service is allowed to do; built from the settings at the command's edge."""

    host: str
    port: int
    ae_title: str
    calling_ae_titles: tuple[str, ...]
    max_associations: int = 8
    max_pdu: int = 65536
    timeout: float = 60.0
    max_instance_bytes: int = 256 << 20
    ssl_context: ssl.SSLContext | None = None
    sop_classes: tuple[str, ...] = CR_DX_STORAGE
    # A connection is cut after this long whatever it does (one byte a minute would otherwise
    # hold a thread for ever: the timeouts above are per read).
    max_connection_seconds: float = 3600.0


def tls_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+); with ``ca``, senders must show a certificate it
    signed. Raises OSError / ssl.SSLError for unreadable or mismatched files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Receiver:
    """A pynetdicom AE serving C-ECHO and C-STORE; each instance goes to the spool, then to
    ``on_spooled`` (the registrar's inbox)."""

    def __init__(self, config: ListenConfig, spool: Spool,
                 on_spooled: Callable[[SpoolFile], None]) -> None:
        self.config = config
        self.spool = spool
        self.on_spooled = on_spooled
        self.allowed = frozenset(config.calling_ae_titles)
        self._bytes: dict[int, int] = {}
        self._stored: dict[int, int] = {}
        self._lock = threading.Lock()
        self._ae: Any = None
        self._server: Any = None
        self._open: dict[int, tuple[float, Any]] = {}  # connection -> (opened at, association)
        self._stop = threading.Event()
        self.n_stored = 0

    def _make_ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES

        ae = AE(ae_title=self.config.ae_title)
        for uid in (VERIFICATION, *self.config.sop_classes):
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        # pynetdicom checks nothing when the list is empty; an empty allow-list must refuse
        # everyone, so it gets a random title nobody can guess instead.
        ae.require_calling_aet = sorted(self.allowed) or [secrets.token_hex(8).upper()]
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = self.config.max_pdu
        ae.acse_timeout = self.config.timeout
        ae.dimse_timeout = self.config.timeout
        ae.network_timeout = self.config.timeout
        ae.connection_timeout = self.config.timeout
        return ae

    def start(self) -> None:
        """Listen in background threads (OSError when the port cannot be bound)."""
        from pynetdicom import evt

        _bound_pdu_reads(max(self.config.max_pdu, 1 << 20))
        handlers = [(evt.EVT_CONN_OPEN, self._on_conn_open),
                    (evt.EVT_CONN_CLOSE, self._on_conn_close),
                    (evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_DATA_RECV, self._on_data), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_RELEASED, self._on_closed),
                    (evt.EVT_ABORTED, self._on_closed)]
        self._ae = self._make_ae()
        self._server = self._ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers,
            ssl_context=self.config.ssl_context)
        self._stop.clear()
        threading.Thread(target=self._cut_long_connections, name="listen-deadline",
                         daemon=True).start()

    def _cut_long_connections(self) -> None:
        while not self._stop.wait(min(5.0, self.config.max_connection_seconds / 4)):
            now = time.monotonic()
            with self._lock:
                late = [a for t, a in self._open.values()
                        if now - t > self.config.max_connection_seconds]
            for assoc in late:
                log.warning("a connection open for over %.0f s was cut",
                            self.config.max_connection_seconds)
                _cut(assoc)

    def _on_conn_open(self, event: Any) -> None:
        with self._lock:
            crowded = len(self._open) >= 2 * self.config.max_associations
            if not crowded:
                self._open[id(event.assoc)] = (time.monotonic(), event.assoc)
        if crowded:  # before anything is read: a flood of connections costs a thread each
            log.warning("a connection was refused: %d already open", len(self._open))
            _cut(event.assoc)

    def _on_conn_close(self, event: Any) -> None:
        with self._lock:
            self._open.pop(id(event.assoc), None)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else self.config.port

    def stop(self) -> None:
        """Close the port and abort the associations still open (their unacknowledged
        instances are the sender's to send again)."""
        self._stop.set()
        # Connections that never sent an association request cannot be aborted (pynetdicom
        # raises from its reactor thread): close them first and let them end.
        with self._lock:
            pending = [a for _, a in self._open.values() if not a.is_established]
        for assoc in pending:
            _cut(assoc)
        deadline = time.monotonic() + 2.0
        while pending and any(a.is_alive() for a in pending) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = self._server = None

    # -- handlers (pynetdicom's threads) ------------------------------------------------------
    def _calling(self, event: Any) -> str:
        return str(event.assoc.requestor.ae_title).strip()

    def _on_accepted(self, event: Any) -> None:
        with self._lock:
            self._bytes[id(event.assoc)] = 0
            self._stored[id(event.assoc)] = 0
        log.info("association from %r accepted", self._calling(event))

    def _on_rejected(self, event: Any) -> None:
        with self._lock:
            self._bytes.pop(id(event.assoc), None)
        log.warning("association from %r refused: calling AE title not recognised",
                    self._calling(event))

    def _on_closed(self, event: Any) -> None:
        with self._lock:
            self._bytes.pop(id(event.assoc), None)
            stored = self._stored.pop(id(event.assoc), None)
        if stored is not None:
            log.info("association from %r ended: %d instances stored", self._calling(event),
                     stored)

    def _on_data(self, event: Any) -> None:
        """Abort an association whose data since its last stored instance passes the cap:
        pynetdicom would otherwise keep an unbounded data set in memory."""
        key = id(event.assoc)
        with self._lock:
            total = self._bytes.get(key, 0) + len(event.data)
            self._bytes[key] = total
        if total > self.config.max_instance_bytes + 2 * self.config.max_pdu:
            log.warning("association from %r aborted: an instance is over the %d-byte limit",
                        self._calling(event), self.config.max_instance_bytes)
            event.assoc.abort(block=False)

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int:
        key = id(event.assoc)
        with self._lock:
            self._bytes[key] = 0
        calling = self._calling(event)
        if calling not in self.allowed:  # the association check is the gate; this, a second
            return REFUSED_NOT_AUTHORISED
        if str(event.request.AffectedSOPClassUID) not in self.config.sop_classes:
            return REFUSED_SOP_CLASS
        if _opens_with_file_meta(event.request.DataSet.getvalue(),
                                 str(event.context.transfer_syntax)):
            # Its group-0002 elements would read as our file meta (the recorded sender, the
            # transfer syntax): a data set never carries them.
            log.warning("an instance from %r refused: its data set holds file-meta elements",
                        calling)
            return PROCESSING_FAILURE
        try:
            data = self._part10(event, calling)
        except Exception:  # a data set pynetdicom could not frame: the sender's fault
            log.warning("an instance from %r could not be framed as a file", calling)
            return PROCESSING_FAILURE
        if len(data) > self.config.max_instance_bytes:
            log.warning("an instance from %r refused: %d bytes, over the %d-byte limit",
                        calling, len(data), self.config.max_instance_bytes)
            return OUT_OF_RESOURCES
        try:
            spooled = self.spool.write(data)
        except OSError as exc:
            log.error("cannot write to the spool: %s", exc.strerror or type(exc).__name__)
            return OUT_OF_RESOURCES
        with self._lock:
            self._stored[key] = self._stored.get(key, 0) + 1
            self.n_stored += 1
        self.on_spooled(spooled)
        return SUCCESS

    @staticmethod
    def _part10(event: Any, calling: str) -> bytes:
        """The data set as sent, behind a Part-10 header that records who sent it."""
        from pydicom.filewriter import write_file_meta_info

        meta = event.file_meta
        meta.SourceApplicationEntityTitle = calling
        out = BytesIO()
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, meta, enforce_standard=True)
        out.write(event.request.DataSet.getvalue())
        return out.getvalue()


def _opens_with_file_meta(dataset: bytes, transfer_syntax: str) -> bool:
    """Whether an encoded data set starts with a group 0000-0002 element."""
    head = dataset[:4]
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        try:
            head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(dataset[:256], 4)
        except zlib.error:
            return False  # not readable at all: the framing step refuses it
    if len(head) < 2:
        return False
    order = "big" if transfer_syntax == ExplicitVRBigEndian else "little"
    return int.from_bytes(head[:2], order) <= 0x0002


def _bound_pdu_reads(limit: int) -> None:
    """Refuse, in this process, any PDU longer than ``limit`` before it is read.

    Why: pynetdicom reads the whole PDU whose length the peer claims (up to 4 GiB), before any
    check of ours can run, even the association request of an unknown caller. Peers must keep
    to the maximum PDU size we announce; a longer PDU closes the connection (Evt17).
    """
    from pynetdicom.transport import AssociationSocket

    current = getattr(AssociationSocket.recv, "pneumoscreen_limit", None)
    if current is not None:
        AssociationSocket.recv.pneumoscreen_limit = max(current, limit)  # type: ignore[attr-defined]
        return
    original = AssociationSocket.recv

    def recv(self: Any, nr_bytes: int) -> bytearray:
        if nr_bytes > recv.pneumoscreen_limit:  # type: ignore[attr-defined]
            raise OSError(f"a PDU of {nr_bytes} bytes is over the "
                          f"{recv.pneumoscreen_limit}-byte limit")  # type: ignore[attr-defined]
        return original(self, nr_bytes)

    recv.pneumoscreen_limit = limit  # type: ignore[attr-defined]
    AssociationSocket.recv = recv  # type: ignore[method-assign]


def _cut(assoc: Any) -> None:
    """Close an association's connection in any state (an A-ABORT is not valid before the
    association request has been read); its state machine then ends it."""
    sock = getattr(getattr(assoc, "dul", None), "socket", None)
    if sock is not None:
        sock.close()

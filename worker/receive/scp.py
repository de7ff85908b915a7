"""The DICOM service of ``screen listen``: C-ECHO and C-STORE of CR/DX images into the spool.

Everything from the network is bounded: who may associate (an allow-list of calling AE titles),
what may be sent (the CR and DX storage SOP classes unless configured otherwise), how much (max
PDU, bytes per instance, concurrent associations) and how long (ACSE, DIMSE, network timeouts).
A C-STORE answers Success only once the instance is durably in the spool; it never waits for the
database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import ssl
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
)
from pynetdicom.sop_class import Verification

from pneumoscreen.worker.receive.spool import TEMP_PREFIX, Spool, SpoolFile, SpoolFull

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
    # Before any AE-title check: connections per address, and the time from the connection to
    # its complete association request (TLS handshake included).
    max_per_address: int = 4
    request_deadline: float = 10.0


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
        self.guard: Any = None
        self.n_stored = 0

    def _make_ae(self) -> Any:
        from pynetdicom import ALL_TRANSFER_SYNTAXES

        from pneumoscreen.worker.receive.guard import GuardedAE

        ae = GuardedAE(ae_title=self.config.ae_title)
        ae.guard = self.guard
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
        from pynetdicom import _config, evt

        from pneumoscreen.worker.receive.guard import Guard, GuardedServer, GuardLimits

        _bound_pdu_reads(max(self.config.max_pdu, 1 << 20))
        # Each data set is written to a file as its fragments arrive: memory stays flat
        # whatever the instance's size (the handler gets the file's path). Those files go into
        # the spool's incoming folder, where a transfer cut short leaves nothing for ever (the
        # stale sweep removes them), not into /tmp.
        _config.STORE_RECV_CHUNKED_DATASET = True
        handlers = [(evt.EVT_CONN_OPEN, self._on_conn_open),
                    (evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_DATA_RECV, self._on_data), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_RELEASED, self._on_closed),
                    (evt.EVT_ABORTED, self._on_closed)]
        self.guard = Guard(GuardLimits(
            max_per_address=self.config.max_per_address,
            max_connections=max(2 * self.config.max_associations,
                                self.config.max_per_address + self.config.max_associations),
            request_deadline=self.config.request_deadline,
            max_connection_seconds=self.config.max_connection_seconds))
        self._ae = self._make_ae()
        server = self._ae.make_server(
            (self.config.host, self.config.port), evt_handlers=handlers,
            ssl_context=self.config.ssl_context, server_class=GuardedServer, guard=self.guard)
        self._ae._servers.append(server)
        self._server = server
        # Once the port is ours (nothing made before); 0700, as the whole spool.
        _receive_into(self.spool.private_folder(self.spool.incoming))
        self.guard.start()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="listen-accept", daemon=True).start()

    def _on_conn_open(self, event: Any) -> None:
        self.guard.attach(event.assoc)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else self.config.port

    def stop(self) -> None:
        """Close the port and every connection (the unacknowledged instances are the
        senders' to send again); returns within a few seconds whatever the peers do."""
        if self.guard is not None:
            self.guard.stop()  # first: pending connections cannot be aborted, only cut
        if self._ae is not None:
            done = threading.Event()

            def shutdown() -> None:
                self._ae.shutdown()
                done.set()

            threading.Thread(target=shutdown, name="listen-shutdown", daemon=True).start()
            if not done.wait(5.0):
                log.warning("some associations did not end within 5 s; leaving them")
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
        # pynetdicom does not say why: a title on the list was refused for the slots.
        calling = self._calling(event)
        why = ("calling AE title not recognised" if calling not in self.allowed else
               f"every association slot is taken (max_associations "
               f"{self.config.max_associations})")
        log.warning("association from %r refused: %s", calling, why)

    def _on_closed(self, event: Any) -> None:
        _drop_partial(event.assoc)
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
        transfer_syntax = str(event.context.transfer_syntax)
        try:
            source, offset, size = _received_data_set(event)
        except Exception:  # a data set pynetdicom could not frame: the sender's fault
            log.warning("an instance from %r could not be framed as a file", calling)
            return PROCESSING_FAILURE
        with source:
            source.seek(offset)
            head = source.read(256)
            if _opens_with_file_meta(head, transfer_syntax):
                # Its group-0002 elements would read as our file meta (the recorded sender, the
                # transfer syntax): a data set never carries them.
                log.warning("an instance from %r refused: its data set holds file-meta "
                            "elements", calling)
                return PROCESSING_FAILURE
            if size > self.config.max_instance_bytes:
                log.warning("an instance from %r refused: %d bytes, over the %d-byte limit",
                            calling, size, self.config.max_instance_bytes)
                return OUT_OF_RESOURCES
            try:
                header = self._file_header(event, calling)
                self.spool.check_room(len(header) + size)
                source.seek(offset)
                spooled = self.spool.write_stream(header, source,
                                                  limit=self.config.max_instance_bytes)
            except SpoolFull as exc:
                log.error("an instance from %r refused with 0xA700 (out of resources): %s",
                          calling, exc)
                return OUT_OF_RESOURCES
            except ValueError:
                return OUT_OF_RESOURCES
            except OSError as exc:
                log.error("cannot write to the spool: %s", exc.strerror or type(exc).__name__)
                return OUT_OF_RESOURCES
            except Exception:
                log.warning("an instance from %r could not be framed as a file", calling)
                return PROCESSING_FAILURE
        with self._lock:
            self._stored[key] = self._stored.get(key, 0) + 1
            self.n_stored += 1
        self.on_spooled(spooled)
        return SUCCESS

    @staticmethod
    def _file_header(event: Any, calling: str) -> bytes:
        """Preamble and a Part-10 file meta that records who sent the data set."""
        from pydicom.filewriter import write_file_meta_info

        meta = event.file_meta
        meta.SourceApplicationEntityTitle = calling
        out = BytesIO()
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, meta, enforce_standard=True)
        return out.getvalue()


def _received_data_set(event: Any) -> tuple[BinaryIO, int, int]:
    """The received data set as (an open file or buffer, where it starts, its length): the
    file pynetdicom wrote as the fragments arrived (after its own file meta), or the buffer
    when it kept the data set in memory."""
    path = getattr(event.request, "_dataset_path", None)
    if path is None:
        data = event.request.DataSet.getvalue()
        return BytesIO(data), 0, len(data)
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
    try:
        start = fh.read(144)
        if len(start) < 144 or start[128:132] != b"DICM" or start[132:136] != b"\x02\x00\x00\x00":
            raise ValueError("no file meta")
        offset = 144 + int.from_bytes(start[140:144], "little")
        size = os.fstat(fh.fileno()).st_size - offset
    except BaseException:
        fh.close()
        raise
    return fh, offset, size


def _opens_with_file_meta(dataset: bytes, transfer_syntax: str) -> bool:
    """Whether an encoded data set (its first bytes) starts with a group 0000-0002 element."""
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


def _drop_partial(assoc: Any) -> None:
    """The file of a data set whose transfer was cut short (pynetdicom leaves it behind)."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()
            os.unlink(handle.name)


def _receive_into(folder: Path) -> None:
    """pynetdicom's received data set files in ``folder``, named as the spool's temp files."""
    import tempfile

    from pynetdicom import dimse_messages

    def named(*args: Any, **kwargs: Any) -> Any:
        # Never "*.dcm" in the spool: a partial file must not pass for a received instance.
        kwargs.update(dir=str(folder), prefix=TEMP_PREFIX + "recv-", suffix="")
        return tempfile.NamedTemporaryFile(*args, **kwargs)

    dimse_messages.NamedTemporaryFile = named  # type: ignore[attr-defined]


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

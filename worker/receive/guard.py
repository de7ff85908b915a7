"""What a peer may cost ``screen listen`` before it has said who it is.

pynetdicom's server does the TLS handshake in its accept loop (one peer that never starts the
handshake stops every other), counts a connection that never sent its association request as an
association (eight peers trickling a byte every few seconds fill every slot, before any AE-title
check) and joins its connection threads at shutdown (SIGTERM waits on them). Here:

- the handshake runs in the connection's own thread, under the request deadline;
- each address may hold ``max_per_address`` connections, everyone ``max_connections``; more are
  closed at accept, before a thread or a byte is spent on them;
- a connection whose A-ASSOCIATE-RQ has not fully arrived ``request_deadline`` seconds after it
  was accepted is cut, and until then it takes no association slot;
- every connection is cut after ``max_connection_seconds`` whatever it does;
- ``stop()`` cuts everything at once and nothing waits on a connection thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)
# pynetdicom's states of an acceptor before its A-ASSOCIATE-RQ: connection open, awaiting it
# (Sta2), and idle (Sta1): the state before its reactor has taken the connection in. A reactor
# reads the socket before its event queue, so a peer whose first bytes come at once (a PDU
# header, then a trickle) can hold it in Sta1, blocked in that read, for the whole deadline:
# seen on a loaded machine, where four such peers filled every slot of a 4-slot listener.
AWAITING_REQUEST = frozenset({"Sta1", "Sta2"})
# pynetdicom's states once a whole A-ASSOCIATE-RQ has arrived (PS3.8 9.2): answering it (Sta3),
# associated (Sta6) and releasing (Sta7 to Sta12). Sta13 (awaiting the close, e.g. after a
# malformed or short PDU) is not among them: such a connection is still cut at the deadline.
PAST_REQUEST = frozenset({"Sta3", "Sta6", "Sta7", "Sta8", "Sta9", "Sta10", "Sta11", "Sta12"})


@dataclass(frozen=True)
class GuardLimits:
    max_per_address: int = 4
    max_connections: int = 32
    request_deadline: float = 10.0
    max_connection_seconds: float = 3600.0


@dataclass
class _Conn:
    address: str
    sock: socket.socket
    opened: float
    assoc: Any = None
    past_request: bool = False
    cut: bool = field(default=False)


class Guard:
    """The open connections, by address; a watchdog thread enforces the deadlines."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.n_refused = 0
        self.n_cut = 0
        self._thread = threading.Thread(target=self._watch, name="listen-guard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def admit(self, sock: socket.socket, address: str) -> bool:
        """Whether a freshly accepted connection may stay (counted from now on)."""
        with self._lock:
            self._prune()
            per = Counter(c.address for c in self._conns.values())
            if (per[address] >= self.limits.max_per_address
                    or len(self._conns) >= self.limits.max_connections):
                self.n_refused += 1
                crowded = per[address] >= self.limits.max_per_address
                ok = False
            else:
                self._conns[id(sock)] = _Conn(address, sock, time.monotonic())
                ok = True
        if not ok:
            log.warning("a connection was refused: %s", "too many from its address" if crowded
                        else "too many connections open")
        return ok

    def remaining(self, sock: socket.socket) -> float:
        """Seconds left before the request deadline of this connection."""
        with self._lock:
            conn = self._conns.get(id(sock))
        if conn is None:
            return 0.0
        return max(0.0, conn.opened + self.limits.request_deadline - time.monotonic())

    def rebind(self, old: socket.socket, new: socket.socket) -> None:
        """The TLS socket that wraps ``old`` (same connection, same deadline)."""
        with self._lock:
            conn = self._conns.pop(id(old), None)
            if conn is not None:
                conn.sock = new
                self._conns[id(new)] = conn

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.pop(id(sock), None)

    def attach(self, assoc: Any) -> None:
        """EVT_CONN_OPEN: the association that runs on one of our connections."""
        sock = getattr(getattr(assoc, "dul", None), "socket", None)
        raw = getattr(sock, "socket", None)
        with self._lock:
            conn = self._conns.get(id(raw))
            if conn is not None:
                conn.assoc = assoc

    def awaiting_request(self, assoc: Any) -> bool:
        """Still waiting for its A-ASSOCIATE-RQ: it takes no association slot."""
        machine = getattr(getattr(assoc, "dul", None), "state_machine", None)
        return getattr(machine, "current_state", None) in AWAITING_REQUEST

    def past_request(self, assoc: Any) -> bool:
        """Its whole A-ASSOCIATE-RQ has arrived: the request deadline no longer applies."""
        machine = getattr(getattr(assoc, "dul", None), "state_machine", None)
        return getattr(machine, "current_state", None) in PAST_REQUEST

    def _prune(self) -> None:
        for key, conn in list(self._conns.items()):
            if conn.sock.fileno() == -1:
                del self._conns[key]

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            late: list[tuple[_Conn, str]] = []
            with self._lock:
                self._prune()
                for conn in self._conns.values():
                    if not conn.past_request:
                        if conn.assoc is not None and self.past_request(conn.assoc):
                            conn.past_request = True
                        elif now - conn.opened > self.limits.request_deadline:
                            late.append((conn, "no complete association request after "
                                         f"{self.limits.request_deadline:g} s"))
                            continue
                    if now - conn.opened > self.limits.max_connection_seconds:
                        late.append((conn, f"open for over "
                                     f"{self.limits.max_connection_seconds:g} s"))
            for conn, why in late:
                if not conn.cut:
                    conn.cut = True
                    self.n_cut += 1
                    log.warning("a connection was cut: %s", why)
                    close(conn.sock)

    def stop(self) -> None:
        """Cut every connection (pynetdicom's threads then end on their own)."""
        self._stop.set()
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            close(conn.sock)


def close(sock: socket.socket) -> None:
    """Shut a connection in any state: a thread blocked reading it wakes up."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class GuardedAE(AE):
    """An AE whose association limit counts only associations past their request."""

    guard: Guard | None = None

    @property
    def active_associations(self) -> list[Any]:
        assocs = super().active_associations
        if self.guard is None:
            return assocs
        return [a for a in assocs if not (a.is_acceptor and self.guard.awaiting_request(a))]


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the guard at accept and TLS per connection."""

    daemon_threads = True
    block_on_close = False  # shutdown never joins a connection thread

    def __init__(self, ae: Any, address: Any, ae_title: str, contexts: Any,
                 ssl_context: ssl.SSLContext | None = None, evt_handlers: Any = None, *,
                 guard: Guard) -> None:
        self.guard = guard
        self.tls = ssl_context
        # No context for pynetdicom: it would do the handshake in the accept loop.
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers=evt_handlers)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, address = self.socket.accept()  # type: ignore[union-attr]
        if not self.guard.admit(sock, str(address[0])):
            close(sock)
            raise OSError("connection refused by the guard")  # socketserver skips it
        return sock, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        sock = request
        try:
            if self.tls is not None:
                sock = self._handshake(request)
                if sock is None:
                    return
            self.finish_request(sock, client_address)
        except Exception:
            log.warning("a connection failed before its association started")
            self.guard.forget(sock)
            close(sock)

    def _handshake(self, raw: socket.socket) -> ssl.SSLSocket | None:
        """TLS under the request deadline, in this connection's thread."""
        assert self.tls is not None
        before = raw.gettimeout()
        raw.settimeout(max(self.guard.remaining(raw), 0.01))
        try:
            wrapped = self.tls.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("a TLS handshake failed: %s", type(exc).__name__)
            self.guard.forget(raw)
            close(raw)
            return None
        wrapped.settimeout(before)
        self.guard.rebind(raw, wrapped)
        return wrapped

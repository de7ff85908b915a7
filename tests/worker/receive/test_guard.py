"""No peer can stall the listener: an idle socket beside a TLS caller, trickling sockets beside a
plain caller, a stop with both open (issue 20, finding 7). In-process listeners, real sockets."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import certificates
from live import free_port

from pneumoscreen.worker.receive.scp import ListenConfig, Receiver, tls_context
from pneumoscreen.worker.receive.spool import Spool

# Linux routes all of 127/8 to the loopback: the hostile peers come from another address than
# the caller, as they would on a network (the per-address cap would otherwise count both).
HOSTILE = "127.0.0.2"


def _listener(tmp_path: Path, **kw: object) -> Receiver:
    config = ListenConfig(host="127.0.0.1", port=free_port(), ae_title="PNEUMOSCREEN",
                          calling_ae_titles=("SCU",), max_associations=4, timeout=60.0,
                          request_deadline=6.0, **kw)  # type: ignore[arg-type]
    made = Receiver(config, Spool(tmp_path / "spool"), lambda _: None)
    made.start()
    return made


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Receiver]:
    made = _listener(tmp_path)
    yield made
    made.stop()


def _echo(port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 15.0) -> float:
    """Seconds until a C-ECHO succeeded (retrying a refused association), or AssertionError."""
    from pynetdicom import AE

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        ae = AE(ae_title="SCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
        assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMOSCREEN",
                             tls_args=(tls, "localhost") if tls else None)
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            if getattr(status, "Status", None) == 0:
                return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"no echo within {timeout} s")


def _connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    """An A-ASSOCIATE-RQ header claiming 200 bytes, then one byte every 3 s per socket."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.sendall(struct.pack(">BBL", 0x01, 0, 200))
    while not stop.wait(3.0):
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"\0")


def _closed_by_peer(sock: socket.socket) -> bool:
    """The listener has closed this connection (an end of file or a reset on read)."""
    sock.settimeout(0.05)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:  # reset by the peer
        return True


def test_eight_trickling_sockets_leave_a_plain_caller_untouched(plain: Receiver) -> None:
    socks = []
    for _ in range(8):
        try:
            socks.append(_connect_from(HOSTILE, plain.port))
        except OSError:
            break
    stop = threading.Event()
    threading.Thread(target=_trickle, args=(socks, stop), daemon=True).start()
    try:
        time.sleep(0.5)
        took = _echo(plain.port)
        print(f"echo beside 8 trickling sockets after {took:.2f} s")
        # 0.02-0.05 s here. It failed twice in full suites on a slowed machine, every slot taken
        # for over 15 and 30 s: tricklers whose reactor read their first bytes before taking
        # the connection in stayed in Sta1, which counted as an association (now it does not).
        assert took < 15
        # The cap kept half of them out at once; the rest are closed by the listener within
        # the request deadline (by the guard's cut, or by pynetdicom's own read of the short
        # PDU, whichever comes first on this machine).
        cap = plain.config.max_per_address
        deadline = time.monotonic() + plain.config.request_deadline + 20  # a loaded machine
        while sum(map(_closed_by_peer, socks)) < 8 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert plain.guard.n_refused == 8 - cap
        assert sum(map(_closed_by_peer, socks)) == 8
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_an_idle_socket_beside_a_tls_caller_with_a_client_certificate(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="cryptography makes the test's certificates")
    pem = certificates(tmp_path)
    server = tls_context(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    listener = _listener(tmp_path, ssl_context=server)
    idle = _connect_from(HOSTILE, listener.port)  # never starts the handshake
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pem["ca"]) + ".pem")
        client.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        took = _echo(listener.port, tls=client)
        print(f"TLS echo beside an idle socket after {took:.2f} s")
        assert took < 15
        # Without a client certificate: refused in the handshake, the listener unharmed.
        bare = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pem["ca"]) + ".pem")
        with pytest.raises(AssertionError):
            _echo(listener.port, tls=bare, timeout=2)
        assert _echo(listener.port, tls=client) < 15
    finally:
        started = time.monotonic()
        listener.stop()  # with the idle socket still open
        stopped = time.monotonic() - started
        idle.close()
    print(f"stopped in {stopped:.2f} s with an idle TLS socket open")
    assert stopped < 5


def test_sigterm_stops_screen_listen_within_seconds_whatever_its_peers_do(
        tmp_path: Path) -> None:
    """`screen listen` over TLS: a socket that never starts the handshake and two trickling
    ones open, a TLS caller served, then SIGTERM: the process is gone within 5 s."""
    import json
    import os
    import signal

    from listener import ListenerProcess
    from live import screen_env

    pytest.importorskip("cryptography", reason="cryptography makes the test's certificates")
    certificates(tmp_path)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "ca.pem"))
    port = free_port()
    env = screen_env(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db'}",
                     broker_url="", SCREEN_CALLING_AE_TITLES=json.dumps(["SCU"]),
                     SCREEN_LISTEN_TIMEOUT="600", SCREEN_LISTEN_REQUEST_DEADLINE="600",
                     SCREEN_LISTEN_TLS_CERT=str(tmp_path / "server.pem"),
                     SCREEN_LISTEN_TLS_KEY=str(tmp_path / "server.key"))
    listener = ListenerProcess(env, tmp_path / "listen.log", port).wait_ready()
    socks = [_connect_from(HOSTILE, port) for _ in range(3)]
    stop = threading.Event()
    threading.Thread(target=_trickle, args=(socks[1:], stop), daemon=True).start()
    try:
        assert _echo(port, tls=client) < 15
        time.sleep(1.0)
        started = time.monotonic()
        os.killpg(listener.proc.pid, signal.SIGTERM)
        listener.proc.wait(30)
        took = time.monotonic() - started
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        listener.stop()
    print(f"screen listen stopped {took:.2f} s after SIGTERM with 3 hostile sockets open")
    assert took < 5


def test_a_connection_not_yet_taken_in_takes_no_slot() -> None:
    """An acceptor still idle (Sta1: its reactor blocked reading a peer's first bytes before it
    took the connection in) or awaiting its request (Sta2) is no association yet; one that
    answered or holds an association is."""
    from types import SimpleNamespace

    from pneumoscreen.worker.receive.guard import Guard, GuardLimits

    guard = Guard(GuardLimits())

    def assoc(state: str) -> SimpleNamespace:
        return SimpleNamespace(dul=SimpleNamespace(state_machine=SimpleNamespace(
            current_state=state)))

    assert guard.awaiting_request(assoc("Sta1")) and guard.awaiting_request(assoc("Sta2"))
    assert not any(guard.awaiting_request(assoc(s)) for s in ("Sta3", "Sta6", "Sta13"))

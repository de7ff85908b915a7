"""The listener's bounds before any check of the caller: the length a PDU claims, the number of
connections, and how long one may stay open."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live import free_port

from pneumoscreen.worker.receive.scp import ListenConfig, Receiver
from pneumoscreen.worker.receive.spool import Spool


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    config = ListenConfig(host="127.0.0.1", port=free_port(), ae_title="PNEUMOSCREEN",
                          calling_ae_titles=("ORTHANC",), max_associations=1, timeout=30.0,
                          max_connection_seconds=6.0)
    made = Receiver(config, Spool(tmp_path / "spool"), lambda _: None)
    made.start()
    yield made
    made.stop()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the listener closes ``sock`` within ``seconds`` (reads until EOF or reset)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionError:
            return True
    return False


def test_a_pdu_claiming_gigabytes_is_refused_before_it_is_read(receiver: Receiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.port)) as sock:
        # An association request that says it is 4 GiB long, then a trickle of bytes.
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0) + b"\0" * 1024)
        assert _closed_within(sock, 4)  # long before the 6 s connection deadline


def test_a_connection_that_says_nothing_is_cut_at_the_deadline(receiver: Receiver) -> None:
    # The per-read timeout is 30 s; the connection deadline (6 s) cuts it much sooner.
    with socket.create_connection(("127.0.0.1", receiver.port)) as sock:
        assert _closed_within(sock, 20)


def test_connections_beyond_the_per_address_cap_are_refused(receiver: Receiver) -> None:
    cap = receiver.config.max_per_address
    held = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(cap)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", receiver.port)) as extra:
            assert _closed_within(extra, 2)  # before the deadline cuts the held ones
    finally:
        for sock in held:
            sock.close()


def test_a_refusal_log_names_its_cause(receiver: Receiver,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """pynetdicom's rejection event carries no reason: a title on the list refused because
    the one slot is taken is not logged as an unknown title."""
    from pynetdicom import AE

    def associate(title: str) -> Any:
        ae = AE(ae_title=title)
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
        return ae.associate("127.0.0.1", receiver.port, ae_title="PNEUMOSCREEN")

    held = associate("ORTHANC")
    assert held.is_established
    try:
        with caplog.at_level("WARNING", logger="pneumoscreen.worker.receive.scp"):
            assert not associate("ORTHANC").is_established  # max_associations is 1
            assert not associate("EVIL").is_established
            time.sleep(0.5)  # the handler runs in the listener's thread
    finally:
        held.release()
    text = caplog.text
    assert "'ORTHANC' refused: every association slot is taken (max_associations 1)" in text
    assert "'EVIL' refused: calling AE title not recognised" in text

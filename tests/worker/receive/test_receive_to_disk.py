"""Receiving to disk: the same data set from two senders is one spool file; a spool over its quota
or a disk under its free-space floor answers 0xA700 and says why; a large instance does not grow
memory with its size (issue 20, findings 4 and 8). In-process listener, real associations."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from ingest_factories import chest_like, make_ds, write
from listener import store
from live import free_port

from pneumoscreen.worker.receive.scp import ListenConfig, Receiver
from pneumoscreen.worker.receive.spool import Spool


def _receiver(tmp_path: Path, spool: Spool, received: list) -> Receiver:
    config = ListenConfig(host="127.0.0.1", port=free_port(), ae_title="PNEUMOSCREEN",
                          calling_ae_titles=("SCU1", "SCU2"), max_instance_bytes=1 << 30)
    made = Receiver(config, spool, received.append)
    made.start()
    return made


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return write(make_ds(chest_like(256, 256)), tmp_path / "in" / "cr.dcm")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@pytest.fixture
def received() -> list:
    return []


@pytest.fixture
def receiver(tmp_path: Path, spool: Spool, received: list) -> Iterator[Receiver]:
    made = _receiver(tmp_path, spool, received)
    yield made
    made.stop()


def test_the_same_data_set_from_another_sender_is_the_same_copy(
        receiver: Receiver, spool: Spool, received: list, instance: Path) -> None:
    assert store(receiver.port, [instance], calling="SCU1") == [0]
    assert store(receiver.port, [instance], calling="SCU2") == [0]
    files = list(spool.files())
    assert len(files) == 1 and received[0].sha256 == received[1].sha256
    # The file records its first sender; its name is the data set's hash, not the file's.
    ds = pydicom.dcmread(files[0].path)
    assert ds.file_meta.SourceApplicationEntityTitle == "SCU1"
    assert ds.SOPInstanceUID == pydicom.dcmread(instance).SOPInstanceUID


def test_a_spool_over_its_quota_answers_out_of_resources(
        tmp_path: Path, instance: Path, received: list, caplog: pytest.LogCaptureFixture) -> None:
    size = instance.stat().st_size
    spool = Spool(tmp_path / "spool", max_bytes=int(size * 1.5))
    receiver = _receiver(tmp_path, spool, received)
    other = write(make_ds(chest_like(256, 256, seed=3)), tmp_path / "in" / "other.dcm")
    try:
        with caplog.at_level(logging.ERROR):
            assert store(receiver.port, [instance, other], calling="SCU1") == [0, 0xA700]
    finally:
        receiver.stop()
    assert len(list(spool.files())) == 1
    assert "0xA700" in caplog.text and "SCREEN_SPOOL_MAX_GB" in caplog.text


def test_a_disk_under_its_free_space_floor_answers_out_of_resources(
        tmp_path: Path, instance: Path, received: list, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=1 << 60)  # more than any disk
    receiver = _receiver(tmp_path, spool, received)
    try:
        with caplog.at_level(logging.ERROR):
            assert store(receiver.port, [instance], calling="SCU1") == [0xA700]
    finally:
        receiver.stop()
    assert list(spool.files()) == [] and "SCREEN_SPOOL_MIN_FREE_GB" in caplog.text


_LISTENER = """
import resource, sys, threading
from pathlib import Path
from pneumoscreen.worker.receive.scp import ListenConfig, Receiver
from pneumoscreen.worker.receive.spool import Spool
done = threading.Event()
config = ListenConfig(host="127.0.0.1", port=int(sys.argv[1]), ae_title="PNEUMOSCREEN",
                      calling_ae_titles=("SCU1",), max_instance_bytes=1 << 30)
receiver = Receiver(config, Spool(Path(sys.argv[2])), lambda _: done.set())
receiver.start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("ready", flush=True)
done.wait(300)
print(before * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, flush=True)
sys.stdin.read()  # until the sender has its answer
receiver.stop()
"""

_SENDER = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from ingest_factories import make_ds, write
from listener import store
pixels = np.random.default_rng(0).integers(0, 4096, (8192, 8192), dtype=np.uint16)
write(make_ds(pixels), sys.argv[2])
del pixels
print(store(int(sys.argv[1]), [sys.argv[2]], calling="SCU1"))
"""


def test_a_large_instance_is_received_without_holding_it_in_memory(tmp_path: Path) -> None:
    """A 134 MB instance: the listener's peak RSS grows by far less than its size (written to
    a file as its fragments arrive, then streamed into the spool). Both sides in their own
    processes, so that only the listener's memory is measured."""
    import subprocess
    import sys

    port, tests = free_port(), str(Path(__file__).parents[2])
    listener = subprocess.Popen([sys.executable, "-c", _LISTENER, str(port),
                                 str(tmp_path / "spool")], stdout=subprocess.PIPE,
                                stdin=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        big = tmp_path / "big.dcm"
        sent = subprocess.run([sys.executable, "-c", _SENDER, str(port), str(big), tests],
                              capture_output=True, text=True, timeout=300)
        assert sent.stdout.strip().endswith("[0]"), sent.stderr[-2000:]
        before, after = map(int, listener.stdout.readline().split())
    finally:
        assert listener.stdin is not None
        listener.stdin.close()
        listener.wait(30)
    size = big.stat().st_size
    grown = after - before
    print(f"instance {size / 1e6:.0f} MB, listener peak RSS {before / 1e6:.0f} -> "
          f"{after / 1e6:.0f} MB (+{grown / 1e6:.1f} MB)")
    (spooled,) = Spool(tmp_path / "spool").files()
    assert spooled.path.stat().st_size > size - 1024
    assert grown < size / 4

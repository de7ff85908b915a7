"""dcmtk's ``storescp`` as a PACS that tests can stop and start on the same port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest


def _dcmtk_storescp() -> str | None:
    """dcmtk's ``storescp`` on PATH, passing over pynetdicom's Python app of the same name (in
    an activated venv it comes first, and takes other options: "invalid int value: '+xa'")."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("storescp", path=folder) if folder else None
        if found is not None and not Path(found).read_bytes()[:64].startswith(b"#!"):
            return found
    return None


STORESCP = _dcmtk_storescp()


def storescp_or_skip() -> str:
    if STORESCP is None:
        pytest.skip("dcmtk's storescp is not installed (apt-get install dcmtk)")
    return STORESCP


class StoreSCP:
    """``storescp`` on ``port``, writing every received object into ``folder``."""

    def __init__(self, port: int, folder: Path, aet: str = "STORESCP") -> None:
        self.port, self.folder, self.aet = port, Path(folder), aet
        self.folder.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = self.folder.parent / f"storescp-{port}.log"

    @property
    def destination(self) -> str:
        return f"dicom://{self.aet}@127.0.0.1:{self.port}"

    def start(self) -> StoreSCP:
        # +xa: accept every transfer syntax; -aet: our AE title; -od: the output folder.
        self._proc = subprocess.Popen(
            [storescp_or_skip(), "-aet", self.aet, "+xa", "-od", str(self.folder),
             str(self.port)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("storescp did not start")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
        self._proc = None

    def received(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(p) for p in sorted(self.folder.iterdir()) if p.is_file()]

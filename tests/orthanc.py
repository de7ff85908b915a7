"""A real Orthanc (Debian's 1.10 package) for the DICOM networking tests.

`orthanc_server(workdir)` starts one on free ports with its own JSON configuration and storage
folder (the DicomWeb plugin loaded when installed), and kills it afterwards. It skips the test with
a reason when Orthanc is not installed or does not start. `Orthanc.stop()` / `start()` keep the
ports and the storage, for "PACS down, then back" tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from live import free_port

ORTHANC_BIN = os.environ.get("SCREEN_TEST_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT = 30.0
HTTP_TIMEOUT = 60.0


class OrthancUnavailable(RuntimeError):
    """Orthanc is not installed or did not start (the fixture turns this into a skip)."""


class Orthanc:
    """One Orthanc process: its REST and DICOM endpoints and the few REST calls tests need."""

    def __init__(self, workdir: Path, *, aet: str = "ORTHANC",
                 modalities: dict[str, tuple[str, str, int]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.rest = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = self.rest + "/dicom-web"
        self.has_dicomweb = DICOMWEB_PLUGIN.is_file()
        self.modalities: dict[str, tuple[str, str, int]] = dict(modalities or {})
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self.storage = self.workdir / "storage"
        self._proc: subprocess.Popen | None = None
        self._session = requests.Session()

    # -- process ---------------------------------------------------------------------------
    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "Name": f"pneumoscreen-test-{self.aet}",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {name: list(v) for name, v in self.modalities.items()},
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 20,
            "DicomAssociationCloseDelay": 0,
            "StableAge": 2,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "HttpTimeout": 60,
            "StorageCompression": False,
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.has_dicomweb else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                         "Ssl": False},
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        """Start (or restart) on the same ports and storage; returns once the REST API answers."""
        if not Path(ORTHANC_BIN).is_file() and shutil.which(ORTHANC_BIN) is None:
            raise OrthancUnavailable(f"Orthanc is not installed ({ORTHANC_BIN})")
        if self._proc is not None and self._proc.poll() is None:
            return
        self.storage.mkdir(parents=True, exist_ok=True)
        self._write_config()
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps it; closed below
        try:
            self._proc = subprocess.Popen([ORTHANC_BIN, str(self.config_path)], stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self.workdir,
                                          start_new_session=True)
        finally:
            log.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until GET /system answers; raise OrthancUnavailable if the process dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise OrthancUnavailable(f"Orthanc exited at start:\n{self.log()[-2000:]}")
            try:
                if self._session.get(self.rest + "/system", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise OrthancUnavailable(f"Orthanc not ready after {timeout}s:\n{self.log()[-2000:]}")

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the process (SIGTERM, then SIGKILL); the storage stays for a later start().
        ``graceful=False``: SIGKILL at once, for the end of a test, when the storage is thrown
        away (a graceful stop takes Orthanc about 3 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if graceful:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
                return
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- REST ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.pop("timeout", HTTP_TIMEOUT)
        for attempt in range(3):
            try:
                response = self._session.request(method, self.rest + path, timeout=timeout,
                                                 **kwargs)
                break
            except requests.ConnectionError:  # Orthanc closed a kept-alive connection
                if attempt == 2 or not self.running:
                    raise
                time.sleep(0.2)
        if not response.ok:
            raise AssertionError(f"Orthanc {method} {path}: HTTP {response.status_code} "
                                 f"{response.text[:500]}")
        return response

    def get_json(self, path: str) -> Any:
        return self._call("GET", path).json()

    def upload(self, path: Path) -> dict:
        """POST /instances: store one DICOM file; Orthanc's answer (ID, ParentStudy, Status)."""
        return self._call("POST", "/instances", data=Path(path).read_bytes(),
                          headers={"Content-Type": "application/dicom"}).json()

    def instances(self) -> list[str]:
        return self.get_json("/instances")

    def studies(self) -> list[str]:
        return self.get_json("/studies")

    def instance_file(self, orthanc_id: str) -> bytes:
        return self._call("GET", f"/instances/{orthanc_id}/file").content

    def instance_tags(self, orthanc_id: str) -> dict:
        return self.get_json(f"/instances/{orthanc_id}/simplified-tags")

    def find_by_study_uid(self, uid: str) -> list[str]:
        """Orthanc ids of the instances in the study with this Study Instance UID."""
        return self._call("POST", "/tools/find", json={
            "Level": "Instance", "Query": {"StudyInstanceUID": uid}}).json()

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """PUT /modalities/name (also kept for a restart)."""
        self.modalities[name] = (aet, host, int(port))
        self._call("PUT", f"/modalities/{name}", json={"AET": aet, "Host": host, "Port": port})

    def send_to_modality(self, name: str, resources: list[str],
                         asynchronous: bool = False) -> dict:
        """POST /modalities/name/store: C-STORE these resources (any level) to the modality.

        Synchronous: Orthanc's summary once sent (raises on failure). Asynchronous: the job
        ({"ID", "Path"}); follow it with `job()` / `wait_job()`."""
        body = {"Resources": list(resources), "Synchronous": not asynchronous}
        return self._call("POST", f"/modalities/{name}/store", json=body).json()

    def job(self, job_id: str) -> dict:
        return self.get_json(f"/jobs/{job_id}")

    def wait_job(self, job_id: str, timeout: float = 120.0) -> dict:
        """Wait for a job to end; its final description (State "Success" or "Failure")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("State") in ("Success", "Failure"):
                return info
            time.sleep(0.2)
        raise AssertionError(f"Orthanc job {job_id} not finished after {timeout}s")


@contextmanager
def orthanc_server(workdir: Path, *, aet: str = "ORTHANC",
                   modalities: dict[str, tuple[str, str, int]] | None = None
                   ) -> Iterator[Orthanc]:
    """A running Orthanc for the duration of the block; skips the test if it cannot start.

    ``modalities``: name → (AET, host, port) that Orthanc may send to / accept from. Any calling
    AE title may C-STORE into it (DicomCheckCalledAet false, DicomAlwaysAllowStore true)."""
    server = None
    error: Exception | None = None
    for attempt in range(3):  # a free port can be taken between choosing and binding it
        server = Orthanc(Path(workdir) / f"orthanc{attempt}" if attempt else Path(workdir),
                         aet=aet, modalities=modalities)
        try:
            server.start()
            break
        except OrthancUnavailable as exc:
            server.stop()
            error = exc
            if not Path(ORTHANC_BIN).is_file() and shutil.which(ORTHANC_BIN) is None:
                break
    else:
        server = None
    if server is None or not server.running:
        pytest.skip(f"Orthanc cannot start here: {error}")
    try:
        yield server
    finally:
        server.stop(graceful=False)

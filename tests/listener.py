"""`screen listen` as a real subprocess, DICOM test instances with fresh UIDs, and a small SCU."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from live import ScreenProcess

LISTEN_START_TIMEOUT = 60.0


class ListenerProcess(ScreenProcess):
    """`screen listen --port PORT`, its output appended to a log file across restarts."""

    what = "screen listen"
    ready_marker = "Listening on"
    start_timeout = LISTEN_START_TIMEOUT

    def __init__(self, env: dict[str, str], log_path: Path, port: int, *extra: str) -> None:
        self.port = port
        super().__init__(env, log_path, "listen", "--port", str(port), *extra, append=True)


def spool_files(data_dir: Path) -> list[Path]:
    """The complete files in a data directory's spool."""
    root = data_dir / "spool"
    return sorted(p for p in root.glob("*/*.dcm")) if root.is_dir() else []


def fresh_instances(sources: list[Path], folder: Path, n: int, *, per_study: int = 5,
                    prefix: str = "i") -> list[Path]:
    """``n`` copies of the source files, each a distinct instance (new SOP Instance UID), grouped
    ``per_study`` to a study (new Study and Series Instance UIDs)."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    datasets = [pydicom.dcmread(s) for s in sources]
    out = []
    study = series = ""
    for i in range(n):
        if i % per_study == 0:
            study, series = generate_uid(), generate_uid()
        ds = datasets[i % len(datasets)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i % per_study + 1
        path = folder / f"{prefix}{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def store(port: int, files: Iterable[Path], *, calling: str = "SCU",
          called: str = "PNEUMOSCREEN", ssl_context: Any = None,
          contexts_of: Iterable[Path] = ()) -> list[int]:
    """C-STORE the files over one association; their statuses (-1: not sent, no context; -2:
    no answer, the association was aborted). ``contexts_of``: more files to propose for."""
    import pydicom
    from pynetdicom import AE

    paths = list(files)
    datasets = [pydicom.dcmread(p) for p in paths]
    extra = [pydicom.dcmread(p, stop_before_pixels=True) for p in contexts_of]
    ae = AE(ae_title=calling)
    for pair in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID))
                 for d in [*datasets, *extra]}:
        ae.add_requested_context(*pair)
    tls = (ssl_context, "localhost") if ssl_context is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls)
    if not assoc.is_established:
        raise ConnectionError(f"association refused or failed (rejected={assoc.is_rejected})")
    statuses = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except ValueError:  # no accepted presentation context for this SOP class
                statuses.append(-1)
                continue
            statuses.append(int(status.Status) if "Status" in status else -2)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses

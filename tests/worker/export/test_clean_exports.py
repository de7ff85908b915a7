"""Every SR and heatmap SC exported from the real sources in ../shared/dicom, and from hostile
ones (accented names without a character set, an invalid Patient's Age), passes dicom3tools'
``dciodvfy`` and dcmtk's ``dsr2xml -Ee`` without an error (issue 20, finding 6)."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pneumoscreen.db import Heatmap, Image, ImageStatus, Prediction, session_scope
from pneumoscreen.db.queries import get_or_create_model_version
from pneumoscreen.worker.export.destinations import parse_destination
from pneumoscreen.worker.export.run import export_study
from pneumoscreen.worker.settings import Settings

DCIODVFY, DSR2XML = shutil.which("dciodvfy"), shutil.which("dsr2xml")


def _validators() -> None:
    if DCIODVFY is None or DSR2XML is None:
        pytest.skip("dciodvfy (apt-get install dicom3tools) or dsr2xml (apt-get install dcmtk) "
                    "is not installed")


def _screened(url: str, sources: list[Path]) -> list[str]:
    """Each source as a screened, flagged image with a heatmap; their Study Instance UIDs."""
    uids = []
    with session_scope(url) as session:
        mv = get_or_create_model_version(
            session=session, name="pneumoscreen-test", version="1", file_sha256="ab" * 32,
            input_spec={"height": 32, "width": 32, "channels": 1}, threshold=0.5,
            target_recall=0.95, trained=True)
        for path in sources:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            study = Image(sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                          sop_instance_uid=ds.SOPInstanceUID, source_path=str(path),
                          format="dicom", status=ImageStatus.done,
                          study_instance_uid=ds.StudyInstanceUID,
                          series_instance_uid=ds.SeriesInstanceUID, modality=ds.Modality)
            session.add(study)
            session.flush()
            pred = Prediction(image_id=study.id, model_version_id=mv.id, probability=0.8,
                              p_viral=0.3, threshold=0.5, flagged=True, in_scope=True,
                              atypicality=1.0,
                              created_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
            session.add(pred)
            session.flush()
            cam = np.linspace(0, 1, 49, dtype=np.float32).reshape(7, 7)
            session.add(Heatmap(prediction_id=pred.id, height=7, width=7,
                                data=cam.astype(np.float16).tobytes()))
            uids.append(str(ds.StudyInstanceUID))
    return uids


def _hostile(source: Path, folder: Path) -> Path:
    """A copy with Latin-1 names and no Specific Character Set, and an age invalid for AS."""
    ds = pydicom.dcmread(source)
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    ds.PatientName, ds.StudyDescription = "Müller^Hans", "Thorax, größe"
    ds.InstitutionName, ds.PatientAge = "Hôpital", "28"
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "hostile.dcm"
    ds.save_as(out)
    assert b"M\xfcller" in out.read_bytes()  # Latin-1 bytes, no character set declared
    return out


def test_exports_from_every_shared_source_validate(shared_dir: Path, tmp_path: Path) -> None:
    _validators()
    sources = sorted((shared_dir / "dicom" / "chest").glob("*.dcm"))
    if not sources:
        pytest.skip("no chest DICOM in ../shared/dicom/chest")
    sources.append(_hostile(sources[0], tmp_path / "hostile"))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    settings = Settings(database_url=url, data_dir=tmp_path / "data")
    out = tmp_path / "out"
    for uid in _screened(url, sources):
        outcome = export_study(uid, parse_destination(f"file://{out}"), settings)
        assert outcome.status == "sent", outcome.error
    files = sorted(out.rglob("*.dcm"))
    kinds = [pydicom.dcmread(f, stop_before_pixels=True).Modality for f in files]
    assert kinds.count("SR") == len(sources) and kinds.count("OT") == len(sources)
    problems = []
    for path, kind in zip(files, kinds, strict=True):
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, timeout=60)
        errors = [line for line in run.stderr.decode("utf-8", "replace").splitlines()
                  if line.startswith("Error")]
        problems += [f"{kind} {path.name}: {e}" for e in errors]
        if kind == "SR":
            run = subprocess.run([DSR2XML, "-Ee", str(path)], capture_output=True, timeout=60)
            if run.returncode != 0:
                problems.append(f"SR {path.name}: dsr2xml exit {run.returncode}: "
                                f"{run.stderr.decode('utf-8', 'replace')[:300]}")
    assert problems == []
    hostile = [pydicom.dcmread(f) for f in files if "Müller" in str(
        pydicom.dcmread(f, stop_before_pixels=True).get("PatientName", ""))]
    assert len(hostile) == 2
    for ds in hostile:
        assert ds.SpecificCharacterSet == "ISO_IR 192" and "PatientAge" not in ds

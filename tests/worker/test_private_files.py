"""Patient data on disk is private to its user: the spool and data directory (also in
PostgreSQL mode), export folders, evaluation reports (issue 21, item 10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from pneumoscreen.worker.export.destinations import FolderDestination
from pneumoscreen.worker.export.send import write_folder
from pneumoscreen.worker.receive.spool import Spool


@pytest.fixture(autouse=True)
def _open_umask() -> object:
    old = os.umask(0o022)  # what a default login gives: folders 0755 unless made private
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_spool_is_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "data" / "spool")
    written = spool.write(b"received film")
    assert _mode(tmp_path / "data" / "spool") == 0o700
    assert _mode(written.path.parent) == 0o700


def test_a_streamed_receipt_is_private_too(tmp_path: Path) -> None:
    """The listener's route: a data set streamed to disk as it arrives (issue 20)."""
    import io

    spool = Spool(tmp_path / "data" / "spool")
    written = spool.write_stream(b"header", io.BytesIO(b"data set"), limit=1 << 20)
    assert _mode(tmp_path / "data" / "spool") == 0o700
    assert _mode(spool.incoming) == 0o700 and _mode(written.path.parent) == 0o700


def test_export_folders_are_private(tmp_path: Path) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    write_folder([ds], FolderDestination(tmp_path / "out"))
    target = tmp_path / "out" / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert _mode(tmp_path / "out") == _mode(target.parent) == 0o700
    assert _mode(target) == 0o600


def test_an_evaluation_report_is_private(tmp_path: Path) -> None:
    import numpy as np

    from pneumoscreen.model import metrics as M
    from pneumoscreen.model import report
    from pneumoscreen.model.evaluate import Dataset as Images
    from pneumoscreen.model.evaluate import Evaluation

    y = np.array([0] * 8 + [1] * 8)
    scores = np.r_[np.linspace(0.05, 0.45, 8), np.linspace(0.55, 0.95, 8)]
    m = M.summarize(y, scores, 0.5, n_boot=50, seed=0)
    m.update(dataset="synthetic", unreadable=0, subtype={"n": 0, "auc": None},
             model={"name": "m", "version": "1", "sha256": "a" * 64, "trained": True})
    ev = Evaluation(Images([], "synthetic"), y, scores,
                    np.random.default_rng(0).random((16, 16, 16, 1)), [], m)
    html = report.write_report(ev, tmp_path / "report", model_label="m:1")
    assert _mode(html.parent) == 0o700
    files = list(html.parent.iterdir())
    assert any(f.name == "examples.png" for f in files)
    assert {_mode(f) for f in files} == {0o600}

"""A screening task sends back what it completed: eager `screen submit` with SCREEN_EXPORT_TO."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from ingest_factories import chest_like, make_ds, write
from pydicom.uid import generate_uid
from results import read_sr
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import get_settings

pytestmark = pytest.mark.slow


def test_submit_screens_the_frontal_image_and_exports_the_study(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study_uid = generate_uid()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pa = make_ds(chest_like(256, 256), StudyInstanceUID=study_uid, ViewPosition="PA",
                 PatientAge="004Y")
    lat = make_ds(chest_like(256, 256, seed=1), StudyInstanceUID=study_uid, ViewPosition="LL",
                  PatientAge="004Y")
    write(pa, inbox / "pa.dcm")
    write(lat, inbox / "lat.dcm")
    out = tmp_path / "out"
    monkeypatch.setenv("SCREEN_EXPORT_TO", f"file://{out}")
    monkeypatch.setenv("SCREEN_MODEL_PATH", "bundled:cnn-s")
    monkeypatch.setenv("SCREEN_HEATMAPS", "all")
    get_settings.cache_clear()
    runner = CliRunner()
    result = runner.invoke(app, ["submit", str(inbox)])
    assert result.exit_code == 0, result.output
    studies = json.loads(runner.invoke(app, ["studies", "--format", "json"]).stdout)
    assert sorted(s["status"] for s in studies) == ["done", "rejected"]
    (export,) = json.loads(runner.invoke(app, ["exports", "--format", "json"]).stdout)
    assert (export["study_uid"], export["status"], export["attempts"]) == (study_uid, "sent", 1)
    files = {ds.Modality: ds for ds in map(pydicom.dcmread, (out / study_uid).glob("*.dcm"))}
    (group,) = read_sr(files["SR"])["groups"]
    assert group["sources"] == [pa.SOPInstanceUID]
    done = next(s for s in studies if s["status"] == "done")
    # A drawn film is an atypical image for the model: outside the validated scope, so the SR
    # states that instead of a finding, and no heatmap goes with it (issue 19). A film inside
    # the scope (the live round trip) gets both.
    assert done["in_scope"] is False
    assert sorted(files) == ["SR"]
    assert group["Triage flag"] == "No verdict: outside the validated scope, needs a human read"
    assert "Probability of pneumonia" not in group

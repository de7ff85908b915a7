"""Two different images under one SOP Instance UID: both kept, the study held (nothing exported)
until a person keeps one with `screen conflicts resolve` (issue 20, finding 5)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydicom
from ingest_factories import chest_like, make_ds, write
from results import screened_study
from typer.testing import CliRunner

from pneumoscreen.db import FileRole, ImageFile, session_scope
from pneumoscreen.worker.cli import app
from pneumoscreen.worker.export.destinations import parse_destination
from pneumoscreen.worker.export.outbox import deliver_due, plan_exports
from pneumoscreen.worker.settings import Settings, get_settings

runner = CliRunner()


def _twin(made_path: Path, image_id: int, url: str, out: Path, *, seed: int | None,
          cut: bool = False) -> str:
    """Another file under the image's SOP Instance UID: a different film (``seed``), or the same
    one cut short in transfer; recorded as a twin as registration does. Its sha256."""
    source = pydicom.dcmread(made_path)
    if seed is not None:
        other = make_ds(chest_like(64, 48, seed=seed), StudyInstanceUID=source.StudyInstanceUID,
                        SOPInstanceUID=source.SOPInstanceUID)
        write(other, out)
    else:
        out.write_bytes(made_path.read_bytes())
    if cut:
        out.write_bytes(out.read_bytes()[:-2000])
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    with session_scope(url) as session:
        session.add(ImageFile(image_id=image_id, sha256=sha, path=str(out), role=FileRole.twin,
                              reason="twin"))
    return sha


def test_a_conflict_holds_the_export_until_a_person_resolves_it(tmp_path: Path) -> None:
    url = get_settings().effective_database_url
    out = tmp_path / "out"
    dest = parse_destination(f"file://{out}")
    settings = Settings(database_url=url, data_dir=tmp_path / "data", export_to=[dest.label])
    made = screened_study(tmp_path / "in", url, heatmap=False)
    _twin(made.paths[0], made.image_ids[0], url, tmp_path / "cut.dcm", seed=None, cut=True)
    # A copy cut short is a damaged retransmission, not a conflict: the result goes out.
    (first,) = plan_exports([made.study_uid], [dest], settings)
    assert [o.status for o in deliver_due(settings)] == ["sent"]
    other = _twin(made.paths[0], made.image_ids[0], url, tmp_path / "other.dcm", seed=7)
    screened_study(tmp_path / "late", url, heatmap=False, study_uid=made.study_uid)
    (held_id,) = plan_exports([made.study_uid], [dest], settings)
    assert deliver_due(settings) == []  # held: not due
    listed = json.loads(runner.invoke(app, ["exports", "--status", "held", "--format",
                                            "json"]).stdout)
    assert [r["id"] for r in listed] == [held_id]
    assert "2 different images" in listed[0]["last_error"]
    shown = json.loads(runner.invoke(app, ["conflicts", "--format", "json"]).stdout)
    (conflict,) = shown
    assert conflict["sop_instance_uid"] == made.sop_uids[0]
    assert {c["role"] for c in conflict["copies"]} == {"primary", "twin"}
    pixels = [c["pixels"] for c in conflict["copies"]]
    assert len(pixels) == 3 and None in pixels and len(set(pixels) - {None}) == 2
    table = runner.invoke(app, ["conflicts"])
    assert table.exit_code == 0 and "held for a human read" in table.stdout
    bad = runner.invoke(app, ["conflicts", "resolve", made.sop_uids[0], "--keep", "abc"])
    assert bad.exit_code == 1
    primary = hashlib.sha256(made.paths[0].read_bytes()).hexdigest()
    assert other != primary
    done = runner.invoke(app, ["conflicts", "resolve", made.sop_uids[0], "--keep",
                               primary[:12]])
    assert done.exit_code == 0, done.output
    assert json.loads(runner.invoke(app, ["conflicts", "--format", "json"]).stdout) == []
    (again,) = plan_exports([made.study_uid], [dest], settings)
    assert again == held_id
    assert [o.status for o in deliver_due(settings)] == ["sent"]
    audit = json.loads(runner.invoke(app, ["audit", "--action", "conflict.resolve",
                                           "--format", "json"]).stdout)
    assert audit[0]["params"]["kept"] == primary and first != held_id

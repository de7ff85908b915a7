"""`screen exports`, `screen export` and `screen flagged --by study` on screened studies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from results import screened_study
from typer.testing import CliRunner

from pneumoscreen.worker.cli import app
from pneumoscreen.worker.settings import get_settings

runner = CliRunner()


def _url() -> str:
    return get_settings().effective_database_url


def test_export_by_hand_then_list(tmp_path: Path) -> None:
    made = screened_study(tmp_path / "in", _url(), views=("PA", "LL"))
    other = screened_study(tmp_path / "in2", _url(), probability=0.3, heatmap=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", "--to", f"file://{out}", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["study_uid"] for r in rows) == sorted([made.study_uid, other.study_uid])
    assert {r["status"] for r in rows} == {"sent"}
    listed = json.loads(runner.invoke(app, ["exports", "--format", "json"]).stdout)
    assert {(r["study_uid"], r["status"], r["attempts"]) for r in listed} == {
        (made.study_uid, "sent", 1), (other.study_uid, "sent", 1)}
    one = runner.invoke(app, ["export", "--to", f"file://{out}", "--study", made.study_uid])
    assert one.exit_code == 0 and ("Export of 1 study to 1 destination: 1 sent, 0 failed"
                                   in " ".join(one.stdout.split()))
    listed = json.loads(runner.invoke(app, ["exports", "--format", "json", "--study",
                                            made.study_uid]).stdout)
    assert [r["attempts"] for r in listed] == [2]  # a resend updates the row
    table = runner.invoke(app, ["exports", "--status", "sent"])
    assert table.exit_code == 0 and "sent" in table.stdout
    assert json.loads(runner.invoke(app, ["exports", "--status", "failed", "--format",
                                          "json"]).stdout) == []


def test_export_uses_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = screened_study(tmp_path / "in", _url())
    monkeypatch.setenv("SCREEN_EXPORT_TO", f"file://{tmp_path / 'a'}, file://{tmp_path / 'b'}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["export", "--since", "7d", "--format", "json"])
    # screened (in the fixture) on 2026-12-01 08:30: within 7 days only if "now" is near it
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--format", "json"])
    assert len(json.loads(result.stdout)) == 2
    assert (tmp_path / "a" / made.study_uid).is_dir() and (tmp_path / "b" / made.study_uid).is_dir()


@pytest.mark.parametrize(("args", "says"), [
    (["export", "--to", "dicom://pacs:104"], "called AE title"),
    (["export", "--to", "nowhere"], "unknown kind"),
    (["export"], "no destination"),
    (["export", "--to", "file:///tmp/x", "--since", "yesterday"], "--since"),
    (["export", "--to", "file:///tmp/x", "--study", "1.2.3"], "no screened images"),
    (["exports", "--status", "lost"], "lost"),
])
def test_bad_input_gets_one_line(args: list[str], says: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    text = (result.stderr or result.output).strip()
    assert says in text and "Traceback" not in text
    assert len([line for line in text.splitlines() if line.startswith("error:")]) <= 1


def test_a_bad_setting_gets_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_EXPORT_TO", "dicom://AE@host")
    get_settings.cache_clear()
    result = runner.invoke(app, ["export"])
    assert result.exit_code == 1
    # one message (Rich wraps it at the test terminal's 80 columns)
    assert result.stderr.count("error:") == 1 and "port 1-65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_pacs_that_is_down_leaves_the_export_to_the_outbox(tmp_path: Path) -> None:
    """Not delivered: exit 1, and the row waits in the outbox with its next try shown."""
    from live import free_port

    screened_study(tmp_path / "in", _url(), heatmap=False)
    result = runner.invoke(app, ["export", "--to", f"dicom://NOBODY@127.0.0.1:{free_port()}",
                                 "--format", "json"])
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["status"] == "pending" and "no association" in row["error"]
    (listed,) = json.loads(runner.invoke(app, ["exports", "--format", "json"]).stdout)
    assert listed["attempts"] == 1 and listed["next_attempt_at"] > listed["updated_at"]
    table = runner.invoke(app, ["exports"]).stdout
    assert "next try" in table and "tries" in table


def test_a_title_never_says_exported_for_what_failed(tmp_path: Path) -> None:
    """Issue 21, item 7: through `screen`, every export failed, and the title says so."""
    import os

    from live import free_port, run_screen

    for n in range(3):
        screened_study(tmp_path / f"in{n}", _url(), heatmap=False)
    out = run_screen({**os.environ, "COLUMNS": "200"}, "export", "--to",
                     f"dicom://NOBODY@127.0.0.1:{free_port()}", timeout=300)
    assert out.returncode == 1, out.stderr
    # The PACS is down: nothing sent, nothing given up yet; the outbox retries all three.
    assert ("Export of 3 studies to 1 destination: 0 sent, 0 failed, 3 to retry (the outbox "
            "tries again)") in out.stdout, out.stdout
    assert "Exported" not in out.stdout


def test_flagged_by_study(tmp_path: Path) -> None:
    """One row per Study Instance UID: the lateral image rejected, the frontal one screened."""
    made = screened_study(tmp_path / "in", _url(), views=("PA", "LL"), probability=0.91)
    screened_study(tmp_path / "in2", _url(), probability=0.2)  # not flagged: not listed
    outside = screened_study(tmp_path / "in3", _url(), probability=0.3, in_scope=False,
                             scope_reason="atypical")
    runner.invoke(app, ["export", "--to", f"file://{tmp_path / 'out'}", "--study",
                        made.study_uid])
    result = runner.invoke(app, ["flagged", "--by", "study", "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["study_uid"] == made.study_uid
    assert (row["n_screened"], row["n_rejected"], row["probability"]) == (1, 1, 0.91)
    assert row["accession"] == "acc-key" and row["patient"] == "p" * 12  # as stored, keyed
    assert row["export_status"] == "sent" and row["exports"][0]["status"] == "sent"
    table = runner.invoke(app, ["flagged", "--by", "study"])
    assert table.exit_code == 0
    assert "Flagged studies, by study" in table.stdout and made.study_uid[-12:] in table.stdout
    assert "Needs a human read" in table.stdout
    both = json.loads(runner.invoke(app, ["flagged", "--by", "study", "--outside-scope",
                                          "--format", "json"]).stdout)
    assert [r["study_uid"] for r in both] == [made.study_uid, outside.study_uid]
    assert both[1]["export_status"] is None
    csv = runner.invoke(app, ["flagged", "--by", "study", "--format", "csv"])
    assert csv.stdout.splitlines()[0].startswith("study_uid,probability")
    bad = runner.invoke(app, ["flagged", "--by", "study", "--watch"])
    assert bad.exit_code == 1 and "--watch" in bad.stderr


def test_config_masks_destination_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREEN_EXPORT_TO", "https://bob:hunter2@h/dicom-web,dicom://A:hunter2@h")
    get_settings.cache_clear()
    result = runner.invoke(app, ["config", "--format", "json"])
    assert result.exit_code == 0 and "hunter2" not in result.stdout
    shown = json.loads(result.stdout)["export_to"]
    assert shown[0] == "https://bob:***@h/dicom-web" and shown[1].startswith("invalid: ")


def test_a_task_sends_only_to_configured_destinations(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued message cannot name its own destination: patient data goes nowhere else."""
    from pneumoscreen.worker.queue.publish import eager_settings
    from pneumoscreen.worker.queue.tasks import export_task

    made = screened_study(tmp_path / "in", _url(), heatmap=False)
    monkeypatch.setenv("SCREEN_EXPORT_TO", f"file://{tmp_path / 'ours'}")
    get_settings.cache_clear()
    settings = get_settings()
    with eager_settings(settings):
        refused = export_task.apply(args=[made.study_uid, f"file://{tmp_path / 'evil'}"]).get()
        sent = export_task.apply(args=[made.study_uid, f"file://{tmp_path / 'ours'}"]).get()
    assert refused["status"] == "refused" and not (tmp_path / "evil").exists()
    assert sent["status"] == "sent" and (tmp_path / "ours" / made.study_uid).is_dir()


def test_export_runs_are_audited(tmp_path: Path) -> None:
    made = screened_study(tmp_path / "in", _url(), heatmap=False)
    dest = f"file://{tmp_path / 'out'}"
    assert runner.invoke(app, ["export", "--to", dest, "--study", made.study_uid]).exit_code == 0
    events = json.loads(runner.invoke(app, ["audit", "--action", "export.run", "--format",
                                            "json"]).stdout)
    (event,) = events
    assert event["params"]["destinations"] == [dest]
    assert (event["params"]["studies"], event["params"]["sent"]) == (1, 1)


def test_an_unexpected_send_error_fails_the_export_instead_of_leaving_it_pending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """E.g. a PACS that takes the SR but refuses the heatmap's SOP class (pynetdicom raises
    ValueError): the row ends failed with the reason, never stuck at pending."""
    from pneumoscreen.worker.export import outbox

    def refuse(*_: object, **__: object) -> None:
        raise ValueError("No presentation context for 'Secondary Capture Image Storage'")

    monkeypatch.setattr(outbox, "send", refuse)
    screened_study(tmp_path / "in", _url())
    result = runner.invoke(app, ["export", "--to", f"file://{tmp_path / 'out'}",
                                 "--format", "json"])
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["status"] == "failed" and "ValueError while sending" in row["error"]

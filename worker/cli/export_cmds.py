"""``screen exports`` and ``screen export``: results sent back as DICOM, and sending by hand."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from pneumoscreen.worker.cli.output import (
    Format,
    console,
    counted,
    fail,
    make_table,
    print_json,
)


class ExportState(str, enum.Enum):
    pending = "pending"
    sent = "sent"
    failed = "failed"


EXPORT_COLUMNS = ["study_uid", "destination", "status", "attempts", "last_error",
                  "sr_sop_instance_uid", "updated_at"]
SHORT = {"study_uid": "study", "sr_sop_instance_uid": "SR instance", "last_error": "last error",
         "updated_at": "updated", "attempts": "tries"}


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("exports")(exports)
    app.command("export")(export)


def exports(
    status: Annotated[ExportState | None, typer.Option(
        "--status", help="Only exports in this state.")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", help="Only this Study Instance UID.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 200,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """The results sent back as DICOM (an SR per study, and heatmap Secondary Captures), one row
    per study, destination and model version: pending (not sent yet, or retrying after a
    transient failure), sent, or failed, with the attempts and the last error."""
    from pneumoscreen.db.exports import exports as export_rows
    from pneumoscreen.worker.settings import get_settings

    with get_settings().session() as session:
        rows = export_rows(session=session, status=status.value if status else None,
                           study_uid=study, limit=limit)
    if fmt is Format.json:
        print_json(rows)
        return
    console.print(make_table("Exports", [SHORT.get(c, c) for c in EXPORT_COLUMNS],
                             [[_cell(c, r[c]) for c in EXPORT_COLUMNS] for r in rows]))


def _cell(column: str, value: Any) -> Any:
    """The terminal shows UIDs' tails; JSON keeps them whole."""
    if value is None:
        return ""
    if column in ("study_uid", "sr_sop_instance_uid") and len(value) > 13:
        return "…" + value[-12:]
    if column == "updated_at":
        return value[5:16].replace("T", " ")
    return value


def export(
    since: Annotated[str | None, typer.Option(
        help="Only studies screened since an ISO time or 30m / 12h / 7d ago [default: all].")
    ] = None,
    to: Annotated[list[str] | None, typer.Option(
        "--to", help="A destination (dicom://AET@host:port, http(s)://…/dicom-web, "
        "file:///folder); repeatable [default: SCREEN_EXPORT_TO].")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", help="Only this Study Instance UID.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Send (or send again) the results of screened studies, here and now: a DICOM SR per
    study and a Secondary Capture per stored heatmap. A resend is the same instances (the same
    UIDs), never a duplicate. Exit code 1 when an export failed."""
    from pneumoscreen.worker.cli.screening_cmds import _parse_since
    from pneumoscreen.worker.export.destinations import DestinationError, parse_destinations
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    try:
        destinations = parse_destinations(list(to) if to else list(settings.export_to))
    except DestinationError as exc:
        fail(str(exc))
    if not destinations:
        fail("no destination: give --to DEST or set SCREEN_EXPORT_TO")
    since_at = _parse_since(since)

    from pneumoscreen.db.studies import screened_study_uids
    from pneumoscreen.worker.export.run import export_study

    with settings.session() as session:
        uids = screened_study_uids(session=session, since=since_at, study_uid=study)
    if study and not uids:
        fail(f"study {study} has no screened images, or some are not final yet")
    outcomes = [export_study(uid, dest, settings) for uid in uids for dest in destinations]
    _audit(settings, outcomes, [d.label for d in destinations], since=since, study=study)
    rows = [{"study_uid": o.study_uid, "destination": o.destination, "status": o.status,
             "attempts": o.attempts, "error": o.error,
             "sr_sop_instance_uid": o.sr_sop_instance_uid,
             "sc_sop_instance_uids": o.sc_sop_instance_uids} for o in outcomes]
    if fmt is Format.json:
        print_json(rows)
    else:
        columns = ["study_uid", "destination", "status", "error", "sr_sop_instance_uid"]
        title = export_title(outcomes, len(destinations))
        console.print(make_table(title, [SHORT.get(c, c) for c in columns],
                                 [[_cell(c, r[c]) for c in columns] for r in rows]))
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


def export_title(outcomes: list[Any], n_destinations: int) -> str:
    """What happened, counted from the outcomes: never "Exported" for what failed."""
    sent = sum(o.status == "sent" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes)
    nothing = len(outcomes) - sent - failed
    studies = counted(len({o.study_uid for o in outcomes}), "study", "studies")
    parts = [f"{sent} sent", f"{failed} failed"] + ([f"{nothing} with nothing to send"]
                                                    if nothing else [])
    where = counted(n_destinations, "destination")
    return f"Export of {studies} to {where}: {', '.join(parts)}"


def _audit(settings: Any, outcomes: list[Any], destinations: list[str], **args: Any) -> None:
    """Record the run in the audit trail: where results went and how many (no patient data)."""
    from pneumoscreen.worker.audit import audit_to

    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("sent", "failed", "nothing")}
    audit_to(settings.effective_database_url, "export.run", destinations=destinations,
             studies=len({o.study_uid for o in outcomes}), **counts, **args)

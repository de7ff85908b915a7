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
    plain,
    print_json,
)


class ExportState(str, enum.Enum):
    pending = "pending"
    sent = "sent"
    failed = "failed"
    superseded = "superseded"
    held = "held"


EXPORT_COLUMNS = ["study_uid", "destination", "status", "attempts", "next_attempt_at",
                  "last_error", "sr_sop_instance_uid", "instance_number", "predecessor_sr_uid",
                  "updated_at"]
SHORT = {"study_uid": "study", "sr_sop_instance_uid": "SR instance", "last_error": "last error",
         "updated_at": "updated", "attempts": "tries", "next_attempt_at": "next try",
         "instance_number": "no.", "predecessor_sr_uid": "supersedes"}


conflicts_app = typer.Typer(
    help="Two different images received under one SOP Instance UID: the study's result is held "
    "(not exported) until a person keeps one copy. Without a subcommand: list them.",
    invoke_without_command=True)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("exports")(exports)
    app.command("export")(export)
    app.add_typer(conflicts_app, name="conflicts")


@conflicts_app.callback()
def conflicts(
    ctx: typer.Context,
    study: Annotated[str | None, typer.Option(
        "--study", help="Only this Study Instance UID.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """List the conflicts: per image, every copy (its sha256, path, role) and its pixel data's
    digest. Nothing of such a study is exported until `screen conflicts resolve`."""
    if ctx.invoked_subcommand is not None:
        return
    from pneumoscreen.worker.export.conflicts import conflicts as find
    from pneumoscreen.worker.settings import get_settings

    with get_settings().session() as session:
        found = find(session=session, study_uid=study)
    rows = [{"study_uid": c.study_uid, "sop_instance_uid": c.image.sop_uid,
             "image_id": c.image.image_id, "status": c.image.status,
             "copies": [{"sha256": k.sha256, "path": k.path, "role": k.role,
                         "pixels": c.digests.get(k.sha256)} for k in c.image.copies
                        if k.role != "set_aside"]} for c in found]
    if fmt is Format.json:
        print_json(rows)
        return
    table = [[_cell("study_uid", r["study_uid"]), r["sop_instance_uid"], k["sha256"][:12],
              k["role"], (k["pixels"] or "unreadable")[:12], k["path"]]
             for r in rows for k in r["copies"]]
    console.print(make_table(f"Conflicts: {counted(len(rows), 'image')} held for a human read",
                             ["study", "SOP instance", "copy", "role", "pixels", "path"], table))


@conflicts_app.command("resolve")
def resolve(
    sop_uid: Annotated[str, typer.Argument(help="The SOP Instance UID in conflict.")],
    keep: Annotated[str, typer.Option(
        "--keep", help="The copy to keep: its sha256 or a prefix of at least 8 characters "
        "(from `screen conflicts`).")],
) -> None:
    """Keep one copy of an image in conflict, set the others aside.

    The others stay on disk, never used. If the kept copy is not the one screened, the image is
    queued again (`screen resume` screens it); else the study's result is exported. Audited."""
    from pneumoscreen.db import Image, ImageStatus
    from pneumoscreen.db.conflicts import copies_of, set_aside
    from pneumoscreen.db.models import FileRole, ImageFile
    from pneumoscreen.worker.audit import audit
    from pneumoscreen.worker.settings import get_settings

    if len(keep) < 8:
        fail("--keep needs at least 8 characters of the copy's sha256")
    settings = get_settings()
    with settings.session() as session:
        (image, *_) = copies_of(session=session, sop_uid=sop_uid) or [None]
        if image is None:
            fail(f"no image with SOP Instance UID {sop_uid} has more than one copy")
        chosen = [c for c in image.copies if c.sha256.startswith(keep.lower())
                  and c.role != "set_aside"]
        if len(chosen) != 1:
            fail(f"--keep {keep} matches {len(chosen)} copies of {sop_uid}; see "
                 "`screen conflicts`")
        kept = chosen[0]
        n = set_aside(image.image_id, kept.sha256, "set aside by a person resolving a conflict "
                      f"(kept copy {kept.sha256[:12]})", session=session)
        requeued = kept.role != "primary"
        if requeued:
            row = session.get(Image, image.image_id)
            assert row is not None
            session.query(ImageFile).filter(ImageFile.id == kept.file_id).update(
                {"role": FileRole.primary, "reason": None})
            row.source_path, row.sha256, row.status = kept.path, kept.sha256, ImageStatus.queued
        audit(session, "conflict.resolve", sop_uid=sop_uid, kept=kept.sha256, set_aside=n,
              requeued=requeued)
        study_uid = image.study_uid
    if not requeued and study_uid and settings.export_to:
        from pneumoscreen.worker.export.enqueue import configured_destinations
        from pneumoscreen.worker.export.outbox import plan_exports

        plan_exports([study_uid], configured_destinations(settings), settings)
    console.print(plain(f"Kept copy {kept.sha256[:12]} of {sop_uid}; {n} set aside. " + (
        "The image is queued again: `screen resume` screens it from the kept copy."
        if requeued else "The study's result is due for export.")))


def exports(
    status: Annotated[ExportState | None, typer.Option(
        "--status", help="Only exports in this state.")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", help="Only this Study Instance UID.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 200,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """The results sent back as DICOM (an SR per study, and heatmap Secondary Captures), one row
    per version of a study's result and destination: pending (not sent yet, or due again after
    a transient failure: the next try is shown), sent, failed (a permanent error, or still not
    delivered after SCREEN_EXPORT_GIVE_UP_AFTER), or superseded (a newer result of the study
    replaced it before it was sent); with the attempts, the last error, the SR's Instance
    Number and the SR it supersedes."""
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
    if column in ("study_uid", "sr_sop_instance_uid", "predecessor_sr_uid") and len(value) > 13:
        return "…" + value[-12:]
    if column in ("updated_at", "next_attempt_at"):
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
    UIDs), never a duplicate; a study whose result changed (a late image) gets a new SR that
    names the one it supersedes. What cannot be delivered now stays in the outbox, retried
    with backoff. Exit code 1 when an export was not delivered."""
    from pneumoscreen.worker.cli.screening_cmds import _parse_since
    from pneumoscreen.worker.export.destinations import DestinationError, parse_destinations
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    try:
        destinations = parse_destinations(list(to) if to else list(settings.export_to),
                                          trusted_network=settings.export_trusted_network)
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
    if any(o.status in ("failed", "pending", "busy") for o in outcomes):
        raise typer.Exit(1)


def export_title(outcomes: list[Any], n_destinations: int) -> str:
    """What happened, counted from the outcomes: never "Exported" for what failed, and a try
    that failed but will be retried by the outbox is said to be so."""
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("sent", "failed", "pending", "held", "busy")}
    nothing = len(outcomes) - sum(counts.values())
    studies = counted(len({o.study_uid for o in outcomes}), "study", "studies")
    parts = [f"{counts['sent']} sent", f"{counts['failed']} failed"]
    for status, words in (("pending", "to retry (the outbox tries again)"),
                          ("held", "held (conflicting copies: screen conflicts)"),
                          ("busy", "being sent by another process")):
        if counts[status]:
            parts.append(f"{counts[status]} {words}")
    if nothing:
        parts.append(f"{nothing} with nothing to send")
    where = counted(n_destinations, "destination")
    return f"Export of {studies} to {where}: {', '.join(parts)}"


def _audit(settings: Any, outcomes: list[Any], destinations: list[str], **args: Any) -> None:
    """Record the run in the audit trail: where results went and how many (no patient data)."""
    from pneumoscreen.worker.audit import audit_to

    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("sent", "pending", "failed", "nothing")}
    audit_to(settings.effective_database_url, "export.run", destinations=destinations,
             studies=len({o.study_uid for o in outcomes}), **counts, **args)

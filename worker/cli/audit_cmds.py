"""``screen audit``: who did what, when (the append-only audit trail); ``screen audit verify``:
is its hash chain intact."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pneumoscreen.worker.cli.output import Format, console, fail, make_table, plain, print_json

audit_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.callback()
def audit_cmd(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        help="Only events since an ISO time or 30m / 12h / 7d ago.")] = "24h",
    action: Annotated[str | None, typer.Option(
        help="Only this action (submit, nightly.run, nightly.submit, rescreen, resume, "
        "model.register, model.default, key.first_use, export, …); a prefix ending in '.' "
        "matches a family.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="Newest N events.")] = 1000,
    fmt: Annotated[Format, typer.Option("--format", help="table, or json: one JSON list on "
                                        "stdout and nothing else.")] = Format.table,
) -> None:
    """The audit trail: operator actions (submits, nightly runs, re-screens, resumes, model
    registrations, the pseudonym key's first use, exports) with time, OS user, host and
    parameters, oldest first. The table is append-only and each event is sealed into a keyed
    hash chain: `screen audit verify` checks it."""
    if ctx.invoked_subcommand is not None:
        return
    from pneumoscreen.db.audit import audit_events
    from pneumoscreen.worker.cli.screening_cmds import _parse_since
    from pneumoscreen.worker.settings import get_settings

    since_at = _parse_since(since) if since and since != "all" else None
    with get_settings().session() as session:
        rows = audit_events(session=session, since=since_at, action=action, limit=limit)
    if fmt is Format.json:
        print_json(rows)
        return
    if not rows:
        console.print("no audit events" + (f" since {since}" if since_at else ""))
        return
    console.print(make_table("Audit trail", ["id", "time (UTC)", "user", "host", "action",
                                             "parameters"],
                             [(r["id"], r["time"][:19].replace("T", " "), r["os_user"],
                               r["host"], r["action"],
                               json.dumps(r["params"], sort_keys=True, default=str))
                              for r in rows]))


@audit_app.command("verify")
def verify_cmd(
    fmt: Annotated[Format, typer.Option("--format", help="table (one line), or json.")] =
    Format.table,
) -> None:
    """Recompute the audit trail's hash chain, oldest event first, and name the first broken
    link (exit 1): an event changed, replaced or inserted by hand, or one removed before it.
    The newest events removed from the end leave no break: note the head this prints and
    compare it later."""
    from pneumoscreen.db.audit import verify_chain
    from pneumoscreen.worker.audit import chain_key
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    with settings.session() as session:  # no database: said before any key is looked for
        report = verify_chain(session, chain_key(settings))
    if fmt is Format.json:
        print_json({"intact": report.intact, "chained": report.n_chained,
                    "before_chain": report.n_before, "head_id": report.head_id,
                    "head_hash": report.head_hash, "broken_id": report.broken_id,
                    "problem": report.problem})
        if not report.intact:
            raise typer.Exit(1)
        return
    earlier = (f" ({report.n_before} earlier events predate the chain)" if report.n_before
               else "")
    if report.intact:
        head = (f"; head: event {report.head_id}, {report.head_hash[:16]}"
                if report.head_hash else "")
        console.print(plain(f"audit trail intact: {report.n_chained} events chained{earlier}"
                            f"{head}"))
        return
    after = f" (the chain is sound up to event {report.head_id})" if report.head_id else ""
    fail(f"audit trail broken at event {report.broken_id}: {report.problem}{after}")

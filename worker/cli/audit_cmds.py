"""``screen audit``: who did what, when (the append-only audit trail)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pneumoscreen.worker.cli.output import Format, console, make_table, print_json


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)


def audit_cmd(
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
    parameters, oldest first. The table is append-only: nothing updates or deletes it."""
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

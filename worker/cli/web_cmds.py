"""``screen web``, ``screen users``, ``screen reads``, ``screen bench web`` and
``screen bench drift``."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pneumoscreen.worker.cli.output import (
    Format,
    FormatCsv,
    console,
    fail,
    make_table,
    plain,
    print_json,
    write_csv,
)

users_app = typer.Typer(help="People who sign in to `screen web`.", no_args_is_help=True)


class Role(str, enum.Enum):
    reader = "reader"
    admin = "admin"


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    paragraphs = (web.__doc__ or "").strip().split("\n\n")
    app.command("web", help="\n\n".join(" ".join(p.split()) for p in paragraphs))(web)
    app.command("reads")(reads)
    app.add_typer(users_app, name="users")
    bench_app.command("web")(bench_web)
    bench_app.command("drift")(bench_drift)


def web(
    host: Annotated[str | None, typer.Option(
        help="Address to bind [default: SCREEN_WEB_HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="Port [default: SCREEN_WEB_PORT, 8700].")] = None,
) -> None:
    """Serve the reading list, image pages with heatmaps, readers' feedback and monitoring in
    a browser.

    Everyone signs in (`screen users add`). Bind to localhost (the default) and put a TLS
    reverse proxy in front for other machines; set SCREEN_WEB_SECURE_COOKIES=true then.
    """
    import uvicorn

    from pneumoscreen.worker.settings import get_settings
    from pneumoscreen.worker.web.app import create_app

    settings = get_settings()
    try:
        app = create_app(settings)
    except ValueError as exc:
        fail(str(exc))
    host = host or settings.web_host
    port = port or settings.web_port
    console.print(plain(f"Reading list on http://{host}:{port}/ (Ctrl-C stops)"),
                  highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                server_header=False, proxy_headers=False)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The sign-in name (letters, digits, . _ -).")],
    role: Annotated[Role, typer.Option(help="reader: reads and marks images; admin: also the "
                                            "monitoring page.")] = Role.reader,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from standard input (one line).")] = False,
    no_password: Annotated[bool, typer.Option(
        "--no-password", help="No password: signs in through the trusted proxy header only "
        "(SCREEN_WEB_TRUSTED_USER_HEADER).")] = False,
) -> None:
    """Add a user. The password is stored as an argon2id hash, never in the clear."""
    import re

    from pneumoscreen.db import web as q
    from pneumoscreen.worker.audit import audit
    from pneumoscreen.worker.settings import get_settings
    from pneumoscreen.worker.web.auth import hash_password

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        fail(f"{name!r}: a name is 1-64 letters, digits, dots, underscores or hyphens")
    if password_stdin == no_password:
        fail("give --password-stdin (e.g. `printf %s \"$PW\" | screen users add NAME "
             "--password-stdin`) or --no-password")
    hashed = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        try:
            hashed = hash_password(password)
        except ValueError as exc:
            fail(str(exc))
    with get_settings().session() as session:
        try:
            user = q.add_user(name, role.value, hashed, session=session)
        except ValueError as exc:
            fail(str(exc))
        audit(session, "user.add", user=name, role=role.value)
        uid = user.id
    console.print(plain(f"User {name} ({role.value}) added, id {uid}."), highlight=False)


@users_app.command("list")
def users_list(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Every user: name, role, disabled, last sign-in."""
    from pneumoscreen.db import web as q
    from pneumoscreen.worker.settings import get_settings

    with get_settings().session() as session:
        rows = q.users(session=session)
    if fmt is Format.json:
        print_json(rows)
        return
    cols = ["id", "name", "role", "disabled", "password", "created_at", "last_login_at"]
    console.print(make_table("Users", cols, [[r[c] for c in cols] for r in rows]))


def _set_disabled(name: str, disabled: bool) -> None:
    from pneumoscreen.db import web as q
    from pneumoscreen.worker.audit import audit
    from pneumoscreen.worker.settings import get_settings

    with get_settings().session() as session:
        if q.set_disabled(name, disabled, session=session) is None:
            fail(f"no user named {name!r} (`screen users list`)")
        audit(session, "user.disable" if disabled else "user.enable", user=name)
    console.print(plain(f"User {name} {'disabled' if disabled else 'enabled'}."),
                  highlight=False)


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="The user's name.")]) -> None:
    """Disable a user: their sessions end at their next request; their reads stay."""
    _set_disabled(name, True)


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument(help="The user's name.")]) -> None:
    """Enable a disabled user again."""
    _set_disabled(name, False)


def reads(
    since: Annotated[str | None, typer.Option(
        help="Only reads since an ISO time or 30m / 12h / 7d ago.")] = None,
    fmt: Annotated[FormatCsv, typer.Option("--format", help="Output format.")] = FormatCsv.table,
) -> None:
    """Readers' verdicts (Agree / Disagree with the screen) and final labels, oldest first."""
    from pneumoscreen.db.web import READ_FIELDS
    from pneumoscreen.worker.cli.screening_cmds import _parse_since
    from pneumoscreen.worker.settings import get_settings
    from pneumoscreen.worker.web.data import reads as read_rows

    since_at = _parse_since(since)
    with get_settings().session() as session:
        rows = read_rows(session=session, since=since_at)
    if fmt is FormatCsv.json:
        print_json(rows)
    elif fmt is FormatCsv.csv:
        write_csv(rows, READ_FIELDS)
    else:
        cols = ["read_id", "image_id", "user", "verdict", "label", "subtype", "probability",
                "flagged", "read_at"]
        console.print(make_table("Reads", cols, [[r[c] for c in cols] for r in rows]))


def bench_web(
    images: Annotated[int, typer.Option(min=1, help="Images in the made-up database.")] = 10_000,
    requests: Annotated[int, typer.Option(min=1, help="Timed requests per page.")] = 20,
    limit: Annotated[int, typer.Option(min=1, help="Rows the reading list shows.")] = 500,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Use this (empty) database instead of a temporary SQLite "
        "file.")] = None,
) -> None:
    """Server time to render the reading list with IMAGES images in the database (made-up
    rows: a third flagged, 2% outside scope, one read in ten), median and 95th percentile."""
    from pneumoscreen.worker.bench.web import bench

    result = bench(images=images, requests=requests, limit=limit, database_url=database_url)
    console.print(plain(
        f"reading list, {result['images']} images ({result['flagged']} flagged, "
        f"{result['outside']} outside scope), {result['rows']} rows shown, "
        f"{result['requests']} requests: server time median {result['median_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms (target < 300 ms); image page median "
        f"{result['image_median_ms']:.1f} ms; /metrics (uncached) median "
        f"{result['metrics_median_ms']:.1f} ms; {result['database']}"), highlight=False)


def bench_drift(
    data_dir: Annotated[Path, typer.Argument(help="The training images (Kaggle layout).",
                                             exists=True, file_okay=False)],
    write: Annotated[bool, typer.Option(
        "--write-sidecar", help="Write the validation histogram into the model's sidecar "
        "when it has none.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """The drift statistic (PSI, KS) of the configured model's scores on its internal-test
    split against its validation histogram."""
    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.worker.bench.drift import drift_bench
    from pneumoscreen.worker.screening.screen import get_model
    from pneumoscreen.worker.settings import get_settings

    try:
        data: dict[str, Any] = drift_bench(get_model(get_settings()), data_dir, write=write)
    except (ModelFileError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if fmt is Format.json:
        print_json(data)
        return
    console.print(plain(
        f"{data['model']}: {data['compared']} (n={data['n']}) against {data['reference']}: "
        f"PSI {data['psi']:.4f} ({data['reading']}), KS {data['ks']:.4f} (5% critical "
        f"{data['ks_critical']:.4f}); flag rate {data['compared_flag_rate']:.3f}"
        + (f" vs {data['reference_flag_rate']:.3f}" if data["reference_flag_rate"] is not None
           else "")
        + (f"; histogram written to {data['written']}" if data.get("written") else "")),
        highlight=False)

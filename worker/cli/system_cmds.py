"""``screen config``, ``screen db …``, ``screen worker`` and ``screen beat``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pneumoscreen.worker.cli.output import Format, console, fail, make_table, plain, print_json

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command()(config)
    app.add_typer(db_app, name="db")
    app.command()(worker)
    app.command()(beat)


def _destination_shown(text: str, trusted_network: bool = False) -> str:
    """An export destination as printed: credentials masked, a bad one said so."""
    from pneumoscreen.worker.export.destinations import DestinationError, parse_destination

    try:
        return parse_destination(text, trusted_network=trusted_network).label
    except DestinationError as exc:
        return f"invalid: {exc}"


def effective_settings() -> dict[str, Any]:
    """Settings as printed: URLs with passwords masked, the patient key never shown."""
    from pneumoscreen.model.bundle import ModelFileError, model_file
    from pneumoscreen.worker.settings import default_config_file, get_settings, mask_url

    settings = get_settings()
    data = settings.model_dump(mode="json")
    data["database_url"] = mask_url(settings.effective_database_url)
    data["broker_url"] = mask_url(settings.broker_url) or None
    data["result_backend"] = mask_url(settings.result_backend) or None
    data["export_to"] = [_destination_shown(d, settings.export_trusted_network)
                         for d in settings.export_to]
    data["patient_key"] = settings.patient_key_source
    try:
        data["model_path"] = str(model_file(settings.model_path))
    except ModelFileError as exc:
        data["model_path"] = f"{settings.model_path} ({exc})"
    data["mode"] = "in-process (no broker)" if settings.eager else "queue"
    data["config_file"] = str(default_config_file())
    return data


def config(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Print the effective settings (environment SCREEN_*, config file, defaults)."""
    data = effective_settings()
    if fmt == Format.json:
        print_json(data)
        return
    console.print(make_table("Effective settings", ["setting", "value", "environment variable"],
                             [[k, v, _variable(k)] for k, v in data.items()]))


# Rows that are not settings of their own: where they come from instead of a variable name.
DERIVED = {"config_file": "SCREEN_CONFIG", "mode": "(from SCREEN_BROKER_URL)"}


def _variable(key: str) -> str:
    """The environment variable that sets ``key``; derived rows say where they come from."""
    from pneumoscreen.worker.settings import Settings

    if key in Settings.model_fields:
        return f"SCREEN_{key.upper()}"
    return DERIVED.get(key, "(derived)")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the migrations up to REVISION (the tool also does this on first use)."""
    from sqlalchemy import create_engine

    from pneumoscreen.db.migrate import current, upgrade
    from pneumoscreen.worker.settings import get_settings, mask_url

    url = get_settings().effective_database_url
    engine = create_engine(url)
    try:
        upgrade(engine, revision)
        console.print(plain(f"{mask_url(url)} is at revision {current(engine)}"), highlight=False)
    except Exception as exc:
        fail(f"cannot upgrade {mask_url(url)}: {exc}")
    finally:
        engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from sqlalchemy import create_engine

    from pneumoscreen.db.migrate import current
    from pneumoscreen.worker.settings import get_settings

    engine = create_engine(get_settings().effective_database_url)
    try:
        console.print(plain(current(engine) or "(empty database)"))
    finally:
        engine.dispose()


def _broker_or_exit(celery: Any, settings: Any) -> None:
    """One connection attempt before starting (Celery itself would retry up to 100 times, for
    minutes): an unreachable broker is one line and exit 3, as for every command."""
    from pneumoscreen.worker.cli.errors import EXIT_UNAVAILABLE
    from pneumoscreen.worker.settings import mask_url

    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5,
                                   interval_max=0.5, timeout=5)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        fail(f"cannot reach the broker at {mask_url(settings.broker_url)}: {reason}; start it "
             "or fix SCREEN_BROKER_URL", code=EXIT_UNAVAILABLE)


def worker(
    concurrency: Annotated[int, typer.Option(
        min=1, help="Worker processes: one per GPU; on CPU one (TensorFlow uses every core).",
    )] = 1,
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = "celery",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Worker node name.")] = None,
    max_tasks_per_child: Annotated[int | None, typer.Option(
        help="Recycle a process after this many batches.")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=0, max=65535,
        help="Serve Prometheus /metrics here (default SCREEN_METRICS_PORT; 0: none).")] = None,
) -> None:
    """Start a Celery worker on the configured broker (SCREEN_BROKER_URL)."""
    from pneumoscreen.worker.queue.app import configure
    from pneumoscreen.worker.settings import get_settings, mask_url

    settings = get_settings()
    if settings.eager:
        fail("no broker configured: set SCREEN_BROKER_URL (e.g. redis://127.0.0.1:6379/0); "
             "without one, `screen submit` screens in-process and needs no worker")
    celery = configure(settings)
    _broker_or_exit(celery, settings)
    console.print(plain(f"worker on {mask_url(settings.broker_url)}, database "
                        f"{mask_url(settings.effective_database_url)}"), highlight=False)
    argv = ["worker", f"--concurrency={concurrency}", f"--queues={queues}",
            f"--loglevel={loglevel}", "--pool=prefork", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if max_tasks_per_child:
        argv.append(f"--max-tasks-per-child={max_tasks_per_child}")
    _serve_metrics(settings, metrics_port)
    celery.worker_main(argv)


def _serve_metrics(settings: Any, port: int | None) -> None:
    """Prometheus /metrics from this process (the screen's figures, from the database)."""
    from pneumoscreen.worker.web.metrics import serve_metrics

    try:
        served = serve_metrics(settings, port=port)
    except OSError as exc:
        fail(f"cannot serve /metrics on {settings.metrics_host}:{port or settings.metrics_port}: "
             f"{exc.strerror or exc}")
    if served:
        console.print(plain(f"metrics on http://{settings.metrics_host}:{served}/metrics"),
                      highlight=False)


def beat(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Start Celery beat: it submits the inbox folders on the nightly schedule."""
    from pneumoscreen.worker.queue.app import configure
    from pneumoscreen.worker.settings import get_settings, private_dir

    settings = get_settings()
    if settings.eager:
        fail("no broker configured: beat needs SCREEN_BROKER_URL; or run `screen nightly` "
             "from cron")
    private_dir(settings.data_dir)  # beat keeps its schedule file there
    celery = configure(settings)
    _broker_or_exit(celery, settings)
    celery.start(["beat", f"--loglevel={loglevel}"])

"""One or two lines, with the fix, for what goes wrong outside a command's own checks.

``main()`` hands every exception a command did not handle to :func:`explain`: an unreachable or
misconfigured database, broker or model, an invalid setting, or a bug. Tracebacks are for
``--debug``. The checks go by class name and module so nothing heavy is imported to explain an
error.
"""

from __future__ import annotations

from typing import Any

# Exit codes: 1 an error, 2 bad usage (Click's), 3 a service (database, broker) unreachable.
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3
HINT = "run with --debug (or SCREEN_DEBUG=1) for the traceback"


def _classes(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def _first_line(exc: BaseException | None, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, bounded."""
    if exc is None:
        return ""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _setting(name: str) -> str:
    """``SCREEN_DATABASE_URL=<masked value>`` as the settings see it, or just the name."""
    try:
        from pneumoscreen.worker.settings import get_settings, mask_url

        settings = get_settings()
        value = {"DATABASE_URL": settings.effective_database_url,
                 "BROKER_URL": settings.broker_url,
                 "MODEL_PATH": str(settings.model_path or "(the bundled model)")}[name]
        return f"SCREEN_{name}={mask_url(value) if name.endswith('URL') else value}"
    except Exception:  # the settings themselves are broken: the name is enough
        return f"SCREEN_{name}"


def explain(exc: BaseException) -> tuple[str, int]:
    """The message (one or two lines) and exit code for an exception no command handled."""
    names = _classes(exc)
    inner = getattr(exc, "exc", None)
    if "celery.exceptions.Retry" in names and isinstance(inner, BaseException):
        return explain(inner)  # an eager task asked to retry: the cause is what matters
    if "pydantic_core._pydantic_core.ValidationError" in names:
        errors: list[dict[str, Any]] = exc.errors()  # type: ignore[attr-defined]
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        field = "_".join(str(p) for p in first.get("loc", ())).upper()
        message = str(first.get("msg")).removeprefix("Value error, ")
        return (f"invalid setting SCREEN_{field}: {message} "
                "(environment or the SCREEN_CONFIG file; `screen config` shows them)", EXIT_ERROR)
    if "pydantic_settings.exceptions.SettingsError" in names:
        return (f"invalid setting: {_first_line(exc)} (environment or the SCREEN_CONFIG file; "
                "lists take a JSON list or comma-separated values)", EXIT_ERROR)
    if isinstance(exc, ModuleNotFoundError):
        return (f"a module this setting needs is not installed: {exc.name or _first_line(exc)}\n"
                "check the URLs in the settings (`screen config` shows them): the database is "
                "sqlite:/// or postgresql+psycopg://, the broker redis://", EXIT_ERROR)
    if "pneumoscreen.model.bundle.ModelFileError" in names:
        return (f"the model cannot be used: {_first_line(exc)}\nfix {_setting('MODEL_PATH')} "
                "(a .keras file with its .json sidecar beside it), or unset it for the "
                "bundled model", EXIT_ERROR)
    if names & {"pneumoscreen.worker.settings.PatientKeyError",
                "pneumoscreen.db.keys.KeyMismatch", "pneumoscreen.db.session.DatabaseMissing"}:
        return _first_line(exc, 400), EXIT_ERROR  # the message names the fix
    if "pneumoscreen.worker.queue.publish.BrokerUnavailable" in names:
        return _first_line(exc, 400), EXIT_UNAVAILABLE
    if names & {"kombu.exceptions.OperationalError", "redis.exceptions.ConnectionError",
                "redis.exceptions.AuthenticationError", "redis.exceptions.TimeoutError"}:
        return (f"cannot reach the broker: {_first_line(exc)}\nfix {_setting('BROKER_URL')} or "
                "start it (unset it to screen in-process without a worker)", EXIT_UNAVAILABLE)
    if "alembic.util.exc.CommandError" in names:
        return (f"the database's schema does not match this version: {_first_line(exc)}\n"
                f"check {_setting('DATABASE_URL')}, or run `screen db upgrade` with the newest "
                "pneumoscreen", EXIT_ERROR)
    if names & {"sqlalchemy.exc.ArgumentError", "sqlalchemy.exc.NoSuchModuleError"}:
        return (f"the database URL is not usable: {_first_line(exc)}\nfix "
                f"{_setting('DATABASE_URL')} (e.g. postgresql+psycopg://user@host/db or "
                "sqlite:////path/file.sqlite3)", EXIT_ERROR)
    if "sqlalchemy.exc.DataError" in names or (
            "sqlalchemy.exc.StatementError" in names
            and isinstance(getattr(exc, "orig", None), (UnicodeError, ValueError))):
        # The server is up and answered: it refused a value (a NUL, bytes that are no UTF-8).
        reason = _first_line(getattr(exc, "orig", None) or exc)
        return (f"the database refused a value: {reason}\nthe value came from an input file "
                f"that should have been refused before; the database is fine ({HINT})",
                EXIT_ERROR)
    if "sqlalchemy.exc.DBAPIError" in names:
        reason = _first_line(getattr(exc, "orig", None) or exc)
        return (f"cannot use the database: {reason}\ncheck {_setting('DATABASE_URL')} and that "
                "its server is running", EXIT_UNAVAILABLE)
    if isinstance(exc, OSError) and exc.filename:
        return (f"cannot use {exc.filename}: {exc.strerror or _first_line(exc)}\ncheck the paths "
                "in the settings (`screen config` shows them) and their permissions", EXIT_ERROR)
    return f"unexpected {type(exc).__name__}: {_first_line(exc)}\n{HINT}", EXIT_ERROR

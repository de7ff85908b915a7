"""The ``screen`` command. Each command group lives in its own module and registers itself here.

``main()`` is the entry point: it keeps TensorFlow's start-up chatter off the terminal and turns
any error a command did not handle into one or two lines with the fix (``--debug`` shows the
traceback), so every command, present and future, behaves the same.
"""

from __future__ import annotations

import sys

import typer

from pneumoscreen.worker.cli import (
    audit_cmds,
    explain_cmds,
    export_cmds,
    ingest_cmds,
    listen_cmds,
    model_cmds,
    ops_cmds,
    quiet,
    registry_cmds,
    screening_cmds,
    system_cmds,
    web_cmds,
)
from pneumoscreen.worker.cli.helptext import ScreenGroup

app = typer.Typer(
    name="screen",
    help="pneumoscreen: batch screening of chest X-rays for likely pneumonia.\n\n"
    "Submit a folder of DICOM/PNG/JPEG images, let the worker screen them with the CNN, and read "
    "the flagged cases first. A triage aid that orders a reading list, not a diagnosis.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    cls=ScreenGroup,
)
bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


# Commands that only read the database: they never create one (nor the data directory).
READ_ONLY_COMMANDS = frozenset({"status", "images", "studies", "flagged", "runs", "reports",
                                "audit", "exports", "heatmap"})


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(
        False, "--debug", envvar=quiet.DEBUG_ENV, show_envvar=False,
        help="Show tracebacks and TensorFlow's own log lines (also SCREEN_DEBUG=1).",
    ),
) -> None:
    """pneumoscreen: batch screening of chest X-rays for likely pneumonia."""
    quiet.configure(debug or quiet.debug_enabled())
    if ctx.invoked_subcommand in READ_ONLY_COMMANDS:
        # Imported here only: other commands (--help, config, predict) need no SQLAlchemy.
        from pneumoscreen.db.session import set_read_only

        set_read_only(True)
        ctx.call_on_close(lambda: set_read_only(False))  # for this command only
    import time

    # Under `screen` the command's clock starts with its process (imports included).
    quiet.COMMAND_CLOCK[0] = time.perf_counter() - (quiet.process_age() if _in_main else 0.0)


for _module in (screening_cmds, system_cmds, ingest_cmds, model_cmds, registry_cmds, explain_cmds,
                ops_cmds, export_cmds, listen_cmds, audit_cmds, web_cmds):
    _module.register(app, bench_app)


def _debug_requested(argv: list[str]) -> bool:
    """``--debug`` among the options before the command name, or SCREEN_DEBUG set."""
    for arg in argv:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            break
    return quiet.debug_enabled()


_in_main = False


def main() -> None:
    """Run ``screen``; an error no command handled ends in one or two lines and a non-zero exit."""
    global _in_main
    _in_main = True
    debug = _debug_requested(sys.argv[1:])
    quiet.configure(debug)
    from pneumoscreen.worker import interrupt

    interrupt.install()
    try:
        app()
    except Exception as exc:  # the last resort: every command gets the same short answer
        if debug:
            raise
        from pneumoscreen.worker.cli.errors import explain
        from pneumoscreen.worker.cli.output import error_line

        message, code = explain(exc)
        error_line(message)
        sys.exit(code)
    except KeyboardInterrupt:
        _interrupted()
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # Typer turns Ctrl-C inside a command into Exit(130)
            _interrupted()
        raise


def _interrupted() -> None:
    """Ctrl-C: put back the images this process was screening (the next `screen submit` or
    `screen resume` screens them) and say so in one line."""
    from pneumoscreen.worker.cli.output import err_console, plain

    def say(text: str) -> None:
        err_console.print(plain(text), highlight=False, soft_wrap=True)

    released = waiting = 0
    failed = False
    db_session = sys.modules.get("pneumoscreen.db.session")
    for url in db_session.known_urls() if db_session else []:
        try:
            from pneumoscreen.db.claims import release_own

            held, queued = release_own(url)
            released, waiting = released + held, waiting + queued
        except Exception:  # the database may be what is gone: the next run frees them
            failed = True
    if waiting:
        back = f" ({released} put back from this run)" if released else ""
        say(f"interrupted: {waiting} images wait to be screened{back}; `screen resume` (or "
            "the next `screen submit`) screens them")
    elif failed:
        say("interrupted: the images this run held could not be put back now; the next "
            "`screen resume` or `screen submit` on this machine frees them")
    else:
        say("interrupted")

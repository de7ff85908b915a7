"""The ``screen`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import os

# Before TensorFlow can be imported anywhere: keep its C++ start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer

from pneumoscreen.worker.cli import (
    explain_cmds,
    export_cmds,
    ingest_cmds,
    model_cmds,
    ops_cmds,
    registry_cmds,
    screening_cmds,
    system_cmds,
)

app = typer.Typer(
    name="screen",
    help="pneumoscreen: batch screening of chest X-rays for likely pneumonia.\n\n"
    "Submit a folder of DICOM/PNG/JPEG studies, let the worker screen them with the CNN, and read "
    "the flagged cases first. A triage aid that orders a reading list, not a diagnosis.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

for _module in (screening_cmds, system_cmds, ingest_cmds, model_cmds, registry_cmds, explain_cmds,
                ops_cmds, export_cmds):
    _module.register(app, bench_app)


def main() -> None:
    app()

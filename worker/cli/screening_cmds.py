"""``screen submit``, ``screen flagged``, ``screen status`` and ``screen images`` (``screen
studies``, its deprecated first name)."""

from __future__ import annotations

import datetime as dt
import enum
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from pneumoscreen.worker.cli.output import (
    Format,
    FormatCsv,
    RichProgress,
    console,
    counted,
    err_console,
    fail,
    make_table,
    plain,
    print_json,
    write_csv,
)

FLAGGED_COLUMNS = ["study_id", "patient", "modality", "view", "probability", "p_viral",
                   "threshold", "model", "screened_at", "path"]
IMAGE_COLUMNS = ["study_id", "status", "reason", "probability", "p_viral", "flagged", "format",
                 "path"]
# Headers and cell shapes for the terminal; JSON and CSV keep the full values.
# JSON and CSV keep the documented key "study_id" (an image's id).
SHORT = {"study_id": "image", "probability": "prob.", "threshold": "thr.",
         "screened_at": "screened", "path": "file", "modality": "mod.",
         "p_viral": "viral?", "scope_reason": "why"}
# No "flagged" column: an image outside the validated scope has no verdict (issue 19).
OUTSIDE_COLUMNS = ["study_id", "patient", "modality", "probability", "model", "scope_reason",
                   "path"]
SUBTYPE_NOTE = ("viral?: the model's suggestion that a pneumonia is viral rather than bacterial, "
                "for the reader; not a diagnosis")


# Probabilities and thresholds print with 4 decimals in every table (1.0000, never 1.0).
PROBABILITY_COLUMNS = frozenset({"probability", "threshold"})


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column in PROBABILITY_COLUMNS and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return f"{value:.4f}"
    if column == "path":
        return Path(value).name
    if column == "patient":
        return value[:8]
    if column == "screened_at":
        return value[5:16].replace("T", " ")
    if column == "model":
        return value.split(":", 1)[-1].replace(" (untrained)", "*")
    if column == "flagged":
        return "yes" if value else "no"
    return value


# A file the listener spooled is named by its content hash: meaningless to a reader.
_SPOOL_NAME = re.compile(r"[0-9a-f]{64}\.dcm")


def _path_cell(row: dict[str, Any]) -> Any:
    """The file's name; for an image received over DICOM (a spool file named by its hash), its
    SOP Instance UID instead."""
    name = _cell("path", row.get("path"))
    if _SPOOL_NAME.fullmatch(str(name)) and row.get("sop_instance_uid"):
        return f"received, SOP {row['sop_instance_uid']}"
    return name


def _subtype_cell(row: dict[str, Any]) -> Any:
    """The subtype is a suggestion about a pneumonia: shown for flagged images only (JSON and
    CSV keep every value)."""
    if row.get("p_viral") is None or row.get("flagged") is False:
        return ""
    return f"{row['p_viral']:.2f}"


def rows_table(title: str, columns: list[str], rows: list[dict[str, Any]]) -> Any:
    # The subtype column only when some model gave one (wave-1 models have no subtype output).
    columns = [c for c in columns if c != "p_viral" or any(r.get(c) is not None for r in rows)]
    table = make_table(title, [SHORT.get(c, c) for c in columns],
                       [[_subtype_cell(r) if c == "p_viral" else _path_cell(r) if c == "path"
                         else _cell(c, r[c]) for c in columns] for r in rows])
    if "p_viral" in columns:
        table.caption = plain(SUBTYPE_NOTE)
    return table
BY_STUDY_COLUMNS = ["study_uid", "patient", "accession", "probability", "n_screened",
                    "n_rejected", "export_status"]
BY_STUDY_SHORT = {"study_uid": "study", "probability": "prob.", "accession": "acc.",
                  "n_screened": "scr.", "n_rejected": "rej.", "export_status": "export"}
BY_STUDY_NOTE = ("prob.: the highest among the study's screened images; scr. / rej.: images "
                 "screened / rejected (e.g. lateral views)")


class By(str, enum.Enum):
    image = "image"
    study = "study"


def _study_cell(column: str, value: Any) -> Any:
    """The terminal shows a UID's tail and a patient key's head; JSON and CSV keep them."""
    if value is None:
        return ""
    if column == "study_uid" and len(value) > 13:
        return "…" + value[-12:]
    if column in ("patient", "accession"):
        return value[:8]
    if column in PROBABILITY_COLUMNS and isinstance(value, float):
        return f"{value:.4f}"
    return value


def by_study_table(rows: list[dict[str, Any]], title: str) -> Any:
    table = make_table(title, [BY_STUDY_SHORT.get(c, c) for c in BY_STUDY_COLUMNS],
                       [[_study_cell(c, r[c]) for c in BY_STUDY_COLUMNS] for r in rows])
    thresholds = sorted({r["threshold"] for r in rows})
    table.caption = plain(BY_STUDY_NOTE + (
        f"; threshold {', '.join(f'{t:.4f}' for t in thresholds)}" if thresholds else ""))
    return table


def by_study_list(rows: list[dict[str, Any]]) -> Any:
    """Flagged studies (Study Instance UIDs) by highest probability, then those outside the
    validated scope."""
    from rich.console import Group

    inside = [r for r in rows if r["in_scope"]]
    outside = [r for r in rows if not r["in_scope"]]
    parts = [by_study_table(inside, "Flagged studies, by study")]
    if outside:
        parts.append(by_study_table(outside,
                                    "Needs a human read: an image outside the validated scope"))
    return Group(*parts)


STAGE_LABELS = {"scan": "Reading headers", "register": "Registering", "screen": "Screening",
                "queue": "Queueing"}


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=False)


def _parse_since(value: str | None) -> dt.datetime | None:
    """ISO date/time, or a duration like 30m, 12h, 7d (that long ago)."""
    if not value:
        return None
    if value[-1] in "mhd" and value[:-1].isdigit():
        seconds = _parse_duration(value, "--since")
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r}: give an ISO date/time (2026-11-23T08:00) or 30m / 12h / 7d",
             code=2)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def reading_list(rows: list[dict[str, Any]], *, fresh: set[int] | None = None,
                 title: str = "Flagged images") -> Any:
    """The flagged table, then the studies outside the validated scope in their own table."""
    from rich.console import Group

    inside = [r for r in rows if r.get("in_scope") is not False]
    outside = [r for r in rows if r.get("in_scope") is False]
    parts = [flagged_table(inside, fresh=fresh, title=title)]
    if outside:
        parts.append(rows_table("Needs a human read: outside the validated scope",
                                OUTSIDE_COLUMNS, outside))
    return Group(*parts)


def flagged_table(rows: list[dict[str, Any]], *, fresh: set[int] | None = None,
                  title: str = "Flagged images") -> Any:
    """The reading list, the model named in every row (the lists show the default model's
    predictions; `--model` another's)."""
    table = rows_table(title, FLAGGED_COLUMNS, rows)
    for i, row in enumerate(rows):
        if fresh and row["prediction_id"] in fresh:
            table.rows[i].style = "bold yellow"
    notes = [plain(table.caption)] if table.caption else []
    if any(not r["trained"] for r in rows):
        notes.append(plain("UNTRAINED placeholder model (*): its flags are meaningless, "
                           "for trying the pipeline only", "red"))
    table.caption = Text("; ").join(notes) if notes else None
    return table


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(flagged)
    app.command()(status)
    app.command()(images)
    app.command("studies", hidden=True,
                help="Deprecated name of `screen images` (kept working).")(images)


def submit(
    folder: Annotated[Path, typer.Argument(help="Folder (or one file) of DICOM, PNG or JPEG.")],
    task_size: Annotated[int | None, typer.Option(
        "--task-size", min=1, help="Images per queued task [default: SCREEN_TASK_SIZE].")] = None,
    no_recursive: Annotated[bool, typer.Option(
        "--no-recursive", help="Only the folder itself, not its sub-folders.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="With a broker: wait until every image is final, then list flags.")] = False,
) -> None:
    """Register every new image under FOLDER and screen it.

    Each file is registered once (by content hash, and SOP Instance UID for DICOM): submitting the
    same folder again adds nothing. With no broker configured the images are screened here, with
    a progress bar, and the flagged table is printed; with a broker the batch is queued as one
    task per --task-size images and the command returns at once.
    """
    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.worker.intake.submit import submit_folder
    from pneumoscreen.worker.queue.publish import BrokerUnavailable
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    if not folder.exists() and not folder.is_symlink():
        fail(f"{folder} does not exist")
    left_over = 0
    try:
        with _progress() as progress:
            rich = RichProgress(progress, STAGE_LABELS)
            result = submit_folder(folder, settings=settings, recursive=not no_recursive,
                                   task_size=task_size, progress=rich)
            if settings.eager:
                # No broker: nothing else will ever screen images an earlier run left queued
                # (one that stopped on a bad model, a crash).
                from pneumoscreen.worker.intake.resume import resume

                left_over = resume(settings=settings, task_size=task_size,
                                   progress=rich).n_queued
            else:
                # The sweep's work now rather than at its next tick: only images no task on
                # the broker carries are sent (this submit's own tasks are live).
                from pneumoscreen.worker.intake.sweep import sweep_safely

                swept = sweep_safely(settings, grace_s=0)
                left_over = swept.n_requeued if swept else 0
    except ModelFileError as exc:
        fail(f"{exc}. Nothing was registered; fix SCREEN_MODEL_PATH (`screen config` shows it).")
    except BrokerUnavailable as exc:
        fail(str(exc), code=3)
    if not (result.n_new or result.n_duplicate or result.n_replaced or result.n_twins):
        if left_over:
            verb = "Screened" if settings.eager else "Queued"
            console.print(f"{verb} {counted(left_over, 'study', 'studies')} left queued by "
                          "earlier runs.", highlight=False)
        others = result.n_files
        fail(f"no DICOM, PNG or JPEG file found in {folder}"
             + (f" ({counted(others, 'other file')})" if others else " (it is empty)")
             + ("" if no_recursive or folder.is_file() else ", sub-folders included"))
    console.print(summary_line(result), highlight=False)
    if left_over:
        verb = "screened" if settings.eager else "queued"
        console.print(f"Also {verb} {counted(left_over, 'study', 'studies')} left waiting "
                      "by earlier runs.", highlight=False)
    elif result.n_new == 0 and result.n_replaced == 0 and result.n_duplicate:
        console.print("Nothing new: every image here was submitted before.")
    if settings.eager or wait:
        if wait and not settings.eager:
            _wait_for(settings, result.batch_id)
        _print_batch(settings, result.batch_id)
    else:
        console.print(f"Queued. Follow with [bold]screen status {int(result.batch_id)}[/] "
                      "and [bold]screen flagged[/].")


def summary_line(result: Any) -> str:
    """One line: what a submit found, registered and queued."""
    from pneumoscreen.worker.intake.discovery import describe_skipped

    line = (f"Batch {result.batch_id}: {counted(result.n_files, 'file')}, "
            f"{counted(result.n_new, 'new study', 'new studies')} "
            f"({result.n_to_screen} to screen, "
            f"{result.n_rejected} rejected, {result.n_failed} failed), ")
    if result.n_replaced:
        line += (f"{counted(result.n_replaced, 'failed study', 'failed studies')} "
                 "given a readable copy, ")
    if result.n_twins:
        line += f"{counted(result.n_twins, 'twin copy', 'twin copies')} (same SOP Instance UID), "
    line += (f"{result.n_duplicate} already registered, "
             f"{counted(result.n_not_images, 'not an image', 'not images')}")
    skipped = describe_skipped(result.skipped)
    if skipped:
        line += f", left out: {skipped}"
    return line + f"; {counted(result.n_tasks, 'task')}."


def _wait_for(settings: Any, batch_id: int, poll: float = 1.0) -> None:
    from pneumoscreen.db.queries import status_counts

    with console.status("Waiting for the worker…"):
        while True:
            with settings.session() as session:
                counts = status_counts(session=session, batch_id=batch_id)
            if counts["queued"] == 0 and counts["processing"] == 0:
                return
            time.sleep(poll)


def _print_batch(settings: Any, batch_id: int) -> None:
    from pneumoscreen.db.queries import images as image_rows

    with settings.session() as session:
        rows = image_rows(session=session, batch_id=batch_id)
    if rows:
        console.print(rows_table(f"Batch {batch_id}", IMAGE_COLUMNS, rows))
    _print_flagged(settings, since=None, limit=50)


def _print_flagged(settings: Any, since: dt.datetime | None, limit: int | None) -> None:
    from pneumoscreen.db.queries import flagged as flagged_rows

    with settings.session() as session:
        rows = flagged_rows(session=session, since=since, limit=limit, outside_scope=True)
    console.print(reading_list(rows))


def flagged(
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place until Ctrl-C.")] = False,
    since: Annotated[str | None, typer.Option(
        help="Only cases screened since an ISO time or 30m / 12h / 7d ago.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many flagged rows, and as many "
                                       "outside the validated scope; a cut list says what "
                                       "it left out.")] = 100,
    fmt: Annotated[FormatCsv, typer.Option("--format", help="Output format.")] = FormatCsv.table,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    mark_for: Annotated[str, typer.Option(
        "--mark-for", help="With --watch: how long a newly flagged case stays marked, as 90s, "
        "10m or 1h (Enter acknowledges every marked case at once).")] = "10m",
    model_version: Annotated[str | None, typer.Option(
        "--model", help="This model version's flags: its id or label as `screen models` "
        "prints them, its version, a model file or bundled:NAME [default: the default "
        "model's, or an image's newest when that model has not read it].")] = None,
    outside_scope: Annotated[bool | None, typer.Option(
        "--outside-scope/--flagged-only",
        help="Also list the images outside the model's validated scope, flagged or not "
        "[default: yes for the table, no for csv and json].")] = None,
    by: Annotated[By, typer.Option(
        "--by", help="One row per image, or per DICOM study (Study Instance UID): its highest "
        "probability, images screened / rejected, accession, patient, export status.")
    ] = By.image,
) -> None:
    """Flagged images, highest probability first: the radiologist's reading list. The table
    lists the images outside the model's validated scope in a section of their own: they need
    a human read whatever their probability. Each image shows the default model's prediction
    (`screen models` marks it), with the model named in every row."""
    from pneumoscreen.db.queries import flagged as flagged_rows
    from pneumoscreen.db.queries import flagged_totals
    from pneumoscreen.worker.settings import get_settings

    since_at = _parse_since(since)
    mark_seconds = _parse_duration(mark_for, "--mark-for")
    settings = get_settings()

    outside = (fmt == FormatCsv.table or watch) if outside_scope is None else outside_scope
    if by is By.study:
        if watch or model_version:
            fail("--by study lists each study's newest verdicts once: without --watch and "
                 "--model")
        _flagged_by_study(settings, since_at, limit, fmt, outside)
        return
    version_id = _model_option(settings, model_version) if model_version else None

    def fetch() -> tuple[list[dict[str, Any]], dict[str, int]]:
        with settings.session() as session:
            rows = flagged_rows(session=session, since=since_at, limit=limit,
                                model_version=version_id, outside_scope=outside)
            totals = flagged_totals(session=session, since=since_at, model_version=version_id,
                                    outside_scope=outside)
        return rows, totals

    if not watch:
        rows, totals = fetch()
        if fmt == FormatCsv.json:
            print_json(rows)
        elif fmt == FormatCsv.csv:
            from pneumoscreen.db.queries import FLAGGED_FIELDS

            write_csv(rows, FLAGGED_FIELDS)
        else:
            console.print(reading_list(rows))
        cut = _cut_note(rows, totals, limit)
        if cut:  # on stderr for csv and json: their stdout stays the document
            (console if fmt == FormatCsv.table else err_console).print(plain(cut))
        return
    marks = Marks(mark_seconds)
    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                rows, totals = fetch()
                fresh = marks.update({r["prediction_id"] for r in rows}, _now())
                stamp = dt.datetime.now().strftime("%H:%M:%S")
                # The count is the flagged section's (the rows of the first table), in full.
                title = (f"Flagged ({totals['flagged']}, {len(fresh)} new) at {stamp}; new "
                         f"cases stay marked {mark_for} (Enter: acknowledge); Ctrl-C stops")
                live.update(reading_list(rows, fresh=fresh, title=title), refresh=True)
                if _wait(interval):
                    marks.acknowledge()
    except KeyboardInterrupt:
        pass


def _model_option(settings: Any, text: str) -> int:
    """The model version ``--model`` names, by any name the tool prints for one; bad usage
    (exit 2) listing the choices otherwise."""
    from pneumoscreen.db.queries import UnknownModel, model_version_named
    from pneumoscreen.model.names import BUNDLED_PREFIX, sidecar_sha256

    looks_like_file = text.startswith(BUNDLED_PREFIX) or text.endswith(".keras")
    sha = sidecar_sha256(text) if looks_like_file else None
    with settings.session() as session:
        try:
            return model_version_named(text, session=session, sha256=sha).id
        except UnknownModel as exc:
            fail(str(exc), code=2)


def _cut_note(rows: list[dict[str, Any]], totals: dict[str, int], limit: int) -> str | None:
    """What ``--limit`` left out of each section, or None when nothing was cut."""
    inside = sum(1 for r in rows if r.get("in_scope") is not False or "outside" not in totals)
    shown = {"flagged": inside, "outside": len(rows) - inside}
    names = {"flagged": "flagged images", "outside": "images that need a human read"}
    cuts = [f"{totals[k] - shown[k]} more {names[k]}" for k in totals if totals[k] > shown[k]]
    if not cuts:
        return None
    return f"--limit {limit}: {' and '.join(cuts)} not shown (raise --limit to see them)"


class Marks:
    """Which flagged cases ``--watch`` marks as new: each from the refresh that first shows it
    until ``seconds`` have passed or the operator acknowledges (the first screen marks none)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.seen: set[int] | None = None
        self.since: dict[int, float] = {}

    def update(self, ids: set[int], now: float) -> set[int]:
        if self.seen is None:
            self.seen = set(ids)
        for new in ids - self.seen:
            self.since[new] = now
        self.seen |= ids
        self.since = {i: t for i, t in self.since.items() if now - t < self.seconds}
        return set(self.since) & ids

    def acknowledge(self) -> None:
        self.since.clear()


def _now() -> float:
    return time.monotonic()


def _wait(seconds: float) -> bool:
    """Sleep until the next refresh; True when the operator pressed Enter meanwhile."""
    import sys

    if not sys.stdin.isatty():
        time.sleep(seconds)
        return False
    import select

    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:
        sys.stdin.readline()
    return bool(ready)


def _parse_duration(value: str, option: str) -> float:
    """Seconds in 90, 90s, 10m, 1h or 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (value[:-1], value[-1]) if value[-1:] in units else (value, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        fail(f"{option} {value!r}: give a duration like 90s, 10m or 1h", code=2)
    if seconds < 0:
        fail(f"{option} {value!r}: give a duration like 90s, 10m or 1h", code=2)
    return seconds


def status(
    batch: Annotated[int | None, typer.Argument(help="A batch id [default: all images].")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Counts of images by status, for one batch or for everything."""
    from pneumoscreen.db.queries import batch_summary, status_counts
    from pneumoscreen.worker.settings import get_settings

    with get_settings().session() as session:
        if batch is None:
            data: dict[str, Any] = {"batch": None, "counts": status_counts(session=session)}
        else:
            summary = batch_summary(batch, session=session)
            if summary is None:
                fail(f"no batch with id {batch}")
            data = summary
    if fmt == Format.json:
        print_json(data)
        return
    counts = data["counts"]
    title = "All images" if batch is None else f"Batch {batch} ({data['source']})"
    console.print(make_table(title, list(counts), [list(counts.values())]))


def images(
    batch: Annotated[int | None, typer.Option(help="Only this batch.")] = None,
    status_: Annotated[str | None, typer.Option(
        "--status", help="queued, processing, done, rejected or failed.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """One row per image: path, status, reason, probability, flagged.

    In JSON the image's id keeps its first key, study_id.
    """
    from pneumoscreen.db import ImageStatus
    from pneumoscreen.db.queries import images as image_rows
    from pneumoscreen.worker.settings import get_settings

    if status_ and status_ not in {s.value for s in ImageStatus}:
        fail(f"--status {status_!r}: choose one of {', '.join(s.value for s in ImageStatus)}",
             code=2)  # bad usage, like any other invalid option value
    with get_settings().session() as session:
        rows = image_rows(session=session, batch_id=batch, status=status_, limit=limit)
    if fmt == Format.json:
        print_json(rows)
    else:
        console.print(rows_table("Images", IMAGE_COLUMNS, rows))


def _flagged_by_study(settings: Any, since: dt.datetime | None, limit: int, fmt: FormatCsv,
                      outside: bool) -> None:
    from pneumoscreen.db.studies import BY_STUDY_FIELDS, by_study

    with settings.session() as session:
        rows = by_study(session=session, since=since, limit=limit, outside_scope=outside)
    if fmt == FormatCsv.json:
        print_json(rows)
    elif fmt == FormatCsv.csv:
        write_csv(rows, [f for f in BY_STUDY_FIELDS if f != "exports"])
    else:
        console.print(by_study_list(rows))

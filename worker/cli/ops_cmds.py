"""``screen resume``, ``screen nightly``, ``screen runs``, ``screen rescreen`` and
``screen bench throughput``: operating the worker at scale."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pneumoscreen.worker.cli.output import (
    Format,
    console,
    counted,
    err_console,
    error_line,
    fail,
    make_table,
    plain,
    print_json,
)

RUN_COLUMNS = ["run_id", "status", "started_at", "duration_s", "n_new", "n_done", "n_flagged",
               "n_rejected", "n_failed", "n_pending", "inboxes"]


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this module's commands to ``screen`` and ``screen bench``."""
    app.command()(resume)
    app.command()(nightly)
    app.command()(runs)
    app.command()(rescreen)
    bench_app.command("throughput")(bench_throughput)
    bench_app.command("register")(bench_register)
    bench_app.command("corpus")(bench_corpus)
    bench_app.command("commands")(bench_commands)


def resume(
    task_size: Annotated[int | None, typer.Option(
        "--task-size", min=1, help="Images per task [default: SCREEN_TASK_SIZE].")] = None,
) -> None:
    """Enqueue again the images left queued (the broker was down) or stuck processing.

    An image counts as stuck once it has been processing longer than the visibility timeout (its
    worker died and no redelivery came). Queuing an image twice is harmless: one task screens it.
    """
    from pneumoscreen.worker.audit import audit_to
    from pneumoscreen.worker.intake.resume import resume as resume_studies
    from pneumoscreen.worker.queue.publish import BrokerUnavailable
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    try:
        out = resume_studies(settings=settings, task_size=task_size)
    except BrokerUnavailable as exc:
        audit_to(settings.effective_database_url, "resume", error="broker unavailable")
        fail(str(exc), code=3)
    audit_to(settings.effective_database_url, "resume", studies=out.n_queued,
             stale=out.n_stale, tasks=out.n_tasks)
    if not out.n_queued:
        console.print("Nothing to resume: no image is queued or stuck processing.")
        return
    studies = counted(out.n_queued, "study", "studies")
    if settings.eager:  # no broker: the tasks ran here, the images are screened now
        console.print(f"Screened {studies} left over ({out.n_stale} stuck processing); "
                      "`screen studies` lists them.", highlight=False)
        return
    console.print(f"Re-enqueued {studies} ({out.n_stale} stuck processing) in "
                  f"{counted(out.n_tasks, 'task')}.", highlight=False)


def nightly(
    inbox: Annotated[list[Path] | None, typer.Option(
        "--inbox", help="Inbox folder; repeat for several [default: SCREEN_INBOX_DIRS].")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Submit the new files of the inbox folders and record the run (for cron users).

    Files seen before (same content or SOP Instance UID) are skipped, so running it every night
    screens each file once. `screen runs` lists the runs with their counts.
    """
    from pneumoscreen.worker.intake.nightly import run_nightly
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    try:
        summary = run_nightly(inbox, settings=settings)
    except ValueError as exc:
        fail(str(exc))
    data = summary.as_dict()
    if fmt == Format.json:
        print_json(data)
    else:
        console.print(make_table(f"Nightly run {summary.run_id}", RUN_COLUMNS,
                                 [[_run_cell(c, data[c]) for c in RUN_COLUMNS]]))
    if summary.error:
        error_line(summary.error)
        raise typer.Exit(3)


def _run_cell(column: str, value: object) -> object:
    if column == "inboxes" and isinstance(value, list):
        return ", ".join(value)
    if column == "started_at" and isinstance(value, str):
        return value[:16].replace("T", " ")
    return value


def runs(
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs, newest first.")] = 20,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Nightly runs: new images, done, flagged, rejected, failed, duration."""
    from pneumoscreen.worker.intake.nightly import list_runs
    from pneumoscreen.worker.settings import get_settings

    with get_settings().session() as session:
        rows = [r.as_dict() for r in list_runs(session=session, limit=limit)]
    if fmt == Format.json:
        print_json(rows)
        return
    console.print(make_table("Nightly runs", RUN_COLUMNS,
                             [[_run_cell(c, r[c]) for c in RUN_COLUMNS] for r in rows]))


def rescreen(
    model: Annotated[str, typer.Option(
        "--model", help="A .keras file (with its sidecar) or a model version seen before.")],
    status: Annotated[str, typer.Option(help="Re-screen images with this status.")] = "done",
    task_size: Annotated[int | None, typer.Option(
        "--task-size", min=1, help="Images per task [default: SCREEN_TASK_SIZE].")] = None,
) -> None:
    """Screen finished images again with another model version; earlier predictions stay.

    Each image gets at most one prediction per model version, so running it twice adds nothing.
    The lists (`screen flagged`, `images`, `status`) keep showing the default model's
    predictions (`screen models` marks it); `screen flagged --model LABEL` shows this one's.
    """
    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.worker.intake.rescreen import rescreen as rescreen_studies
    from pneumoscreen.worker.queue.publish import BrokerUnavailable
    from pneumoscreen.worker.settings import get_settings

    if status not in {"done", "rejected", "failed"}:
        fail(f"--status {status!r}: choose done, rejected or failed")
    settings = get_settings()
    try:
        result = rescreen_studies(model, settings=settings, status=status,
                                  task_size=task_size)
    except ModelFileError as exc:
        fail(str(exc))
    except BrokerUnavailable as exc:
        fail(str(exc), code=3)
    verb = "Screened" if settings.eager else "Queued"
    console.print(plain(f"Batch {result.batch_id}: {verb} "
                        f"{counted(len(result.queued_ids), 'image')} "
                        f"with {model} in {counted(result.n_tasks, 'task')}."), highlight=False)
    console.print(plain(_which_predictions_show(settings, result.batch_id)), highlight=False)


def _which_predictions_show(settings: Any, batch_id: int) -> str:
    """One line: do the lists show this re-screen's predictions (only if its model is the
    default), and how to see them otherwise."""
    from pneumoscreen.db import Batch, ModelVersion
    from pneumoscreen.model.names import sidecar_sha256

    default_sha = sidecar_sha256(settings.model_path)
    with settings.session() as session:
        mv = session.get(ModelVersion, session.get(Batch, batch_id).model_version_id)
        default = session.query(ModelVersion).filter_by(file_sha256=default_sha).first()
        label, is_default = mv.label, mv.file_sha256 == default_sha
        default_label = default.label if default else "the default model"
    if is_default:
        return f"{label} is the default model: the lists show these predictions."
    return (f"The lists keep showing the default model's predictions ({default_label}); "
            f"this model's: `screen flagged --model {label}`.")


def bench_throughput(
    studies: Annotated[int, typer.Option("--studies", min=1, help="Synthetic studies.")] = 1000,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    task_size: Annotated[int, typer.Option(
        "--task-size", min=1, help="Images per screening task.")] = 256,
    chunk_size: Annotated[int | None, typer.Option(
        "--chunk-size", min=1, help="Studies per model call [default: SCREEN_CHUNK_SIZE].")] = None,
    decode_threads: Annotated[int | None, typer.Option(
        "--decode-threads", min=1, help="Decoding threads [default: settings].")] = None,
    naive_studies: Annotated[int, typer.Option(
        "--naive-studies", min=1, help="Studies for the slow per-image loop.")] = 100,
    image_size: Annotated[int, typer.Option(
        "--image-size", min=64, help="Side of the synthetic PNGs.")] = 512,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Write to this database [default: a temporary SQLite].")] = None,
    heatmap_studies: Annotated[int, typer.Option(
        "--heatmap-studies", min=0, help="Images for the screening task with a Grad-CAM map for "
        "each (0: skip).")] = 128,
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="Measure on the real files under this folder (recursive, each file one "
        "study), with a table per transfer syntax; --studies and --image-size are then unused. "
        "Make one with 'screen bench corpus'.")] = None,
    decode_processes: Annotated[int | None, typer.Option(
        "--decode-processes", min=0, help="Decoding processes, 0 = threads "
        "(default: SCREEN_DECODE_PROCESSES).")] = None,
) -> None:
    """Images/s of the model alone, the full screening task and the naive loop; peak memory."""
    from pneumoscreen.worker.bench.throughput import run_throughput
    from pneumoscreen.worker.settings import get_settings

    if corpus is not None and not corpus.is_dir():
        fail(f"--corpus {corpus}: not a folder")
    settings = get_settings()
    update = {k: v for k, v in {"chunk_size": chunk_size, "decode_threads": decode_threads,
                                "decode_processes": decode_processes}.items() if v is not None}
    settings = settings.model_copy(update=update)
    try:
        result = run_throughput(studies, settings=settings, task_size=task_size,
                                naive_n=naive_studies, image_size=image_size,
                                database_url=database_url, heatmap_n=heatmap_studies,
                                corpus=corpus,
                                say=lambda msg: err_console.print(plain(msg), highlight=False))
    except ValueError as exc:
        fail(str(exc))
    data = result.as_dict()
    if fmt == Format.json:
        print_json(data)
        return
    ratios = result.ratios
    if result.per_codec:
        console.print(make_table(
            "Per transfer syntax", ["transfer syntax", "files", "decode ms/file",
                                    "screening task studies/s", "screened"],
            [[codec, f.files, f.decode_ms_per_file, f.studies_per_s, f.screened]
             for codec, f in result.per_codec.items()]))
    console.print(make_table(
        f"Throughput, {result.studies} studies ({data['config']['device']})",
        ["measure", "value"],
        [["(a) model alone, studies/s", result.model_only_per_s],
         ["(b) screening task end to end, studies/s", result.pipeline_per_s],
         [f"(c) naive per-image loop, studies/s ({result.naive_studies})", result.naive_per_s],
         ["(b') screening task with a heatmap for every study, studies/s",
          result.pipeline_heatmaps_per_s],
         ["(d) decoding alone (all decode processes, no model), studies/s",
          result.decode_only_per_s],
         ["bound: 1 / (1/(a) + 1/(d)), studies/s", result.bound_per_s],
         ["(b)/bound  target ≥ 0.9", ratios.get("pipeline_over_bound")],
         ["(b)/(a)", ratios["pipeline_over_model_only"]],
         ["(b)/(c)  target ≥ 20", ratios["pipeline_over_naive"]],
         ["peak RSS, MB", result.peak_rss_mb],
         *[[f"RSS {k}, MB", v] for k, v in result.rss_mb.items()],
         *[[k, v] for k, v in data["config"].items()]]))


def bench_register(
    files: Annotated[int, typer.Option("--files", min=1, help="Distinct DICOM files.")] = 10000,
    size_mb: Annotated[float, typer.Option(
        "--size-mb", min=0.01, max=64, help="Size of each synthetic file, MB.")] = 1.0,
    source: Annotated[Path | None, typer.Option(
        "--source", exists=True, dir_okay=False,
        help="Copy this DICOM (new UIDs each) instead of a synthetic film.")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Register into this database [default: a temporary SQLite].")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Files/s and peak memory of registering many distinct DICOMs, as `screen submit` does.

    A temporary corpus (one DICOM with fresh UIDs per copy) is walked, hashed, header-probed and
    inserted, one commit of files at a time; nothing is screened. The figure varies with the
    machine's load.
    """
    from pneumoscreen.worker.bench.register import run_register
    from pneumoscreen.worker.settings import get_settings

    result = run_register(files, settings=get_settings(), size_mb=size_mb, source=source,
                          database_url=database_url,
                          say=lambda msg: err_console.print(msg, highlight=False))
    data = result.as_dict()
    if fmt == Format.json:
        print_json(data)
        return
    console.print(make_table(
        f"Registration, {result.files} files of {result.mean_file_mb} MB",
        ["measure", "value"],
        [["files/s (walk + sha256 + header probe + insert)  target ≥ 200", result.files_per_s],
         ["MB/s", result.mb_per_s], ["seconds", result.seconds],
         ["first file examined after, s", result.first_file_after_s],
         ["peak RSS, MB", result.peak_rss_mb],
         *[[f"RSS {k}, MB", v] for k, v in result.rss_mb.items()],
         *[[k, v] for k, v in result.counts.items()],
         *[[k, v] for k, v in result.config.items()]]))


def bench_corpus(
    out: Annotated[Path, typer.Argument(help="Folder to write (one subfolder per codec).")],
    per_codec: Annotated[int, typer.Option("--per-codec", min=1, help="Files per codec.")] = 60,
    source: Annotated[Path | None, typer.Option(
        "--source", help="DICOM files to re-encode (default: ../shared/dicom/chest).")] = None,
    codecs: Annotated[list[str] | None, typer.Option(
        "--codec", help="Only this codec (repeatable): jpeg-baseline, j2k-lossless, j2k-lossy, "
        "jpegls-lossless, jpegls-near, htj2k-lossless, jpeg-lossless.")] = None,
) -> None:
    """Make a mixed real-DICOM corpus for 'screen bench throughput --corpus': each source
    re-encoded per codec, written as distinct studies (fresh UIDs)."""
    from pneumoscreen.worker.bench.corpus import CODECS, make_corpus
    from pneumoscreen.worker.cli.ingest_cmds import shared_dicom_files

    sources = shared_dicom_files(source, how="--source DIR")
    unknown = sorted(set(codecs or ()) - set(CODECS))
    if unknown:
        fail(f"--codec {', '.join(unknown)}: choose from {', '.join(CODECS)}")
    try:
        result = make_corpus(sources, out, per_codec=per_codec, codecs=tuple(codecs or CODECS),
                             say=lambda msg: err_console.print(msg, highlight=False))
    except Exception as exc:  # an unreadable source: one line, not a traceback
        fail(f"cannot make the corpus: {type(exc).__name__}: {exc}")
    rows = [[codec, n, ""] for codec, n in result.files.items()]
    rows += [[codec, 0, why] for codec, why in result.skipped.items()]
    console.print(make_table(f"Corpus in {out}", ["codec", "files", "note"], rows))


def bench_commands(
    runs: Annotated[int, typer.Option("--runs", min=1, max=101,
                                      help="Runs of each command (the median is shown).")] = 9,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Seconds from process start to exit of each read-only command (target < 0.3 s on a quiet
    machine), and the imports `screen status` spends them on.

    Every run is its own `screen` process on a small temporary SQLite database; the median of
    --runs runs is shown, wall and CPU. Load on the machine shows in the figures: the load
    average is printed with them.
    """
    from pneumoscreen.worker.bench.commands import run

    timings, imports = run(runs, say=lambda msg: err_console.print(msg, highlight=False))
    if fmt == Format.json:
        print_json({"commands": [t.__dict__ for t in timings],
                    "heaviest_imports_us": dict(imports)})
        return
    console.print(make_table(
        f"Read-only commands, median of {runs} runs", ["command", "wall s", "CPU s"],
        [[f"screen {t.command}", f"{t.wall_median_s:.3f}", f"{t.cpu_median_s:.3f}"]
         for t in timings]))
    console.print(make_table("Heaviest imports of `screen status` (python -X importtime)",
                             ["module", "cumulative ms"],
                             [[name, f"{us / 1000:.1f}"] for name, us in imports]))

"""``screen models``: the registered model versions side by side; ``screen models ensemble``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pneumoscreen.worker.cli.output import (
    Format,
    RichProgress,
    console,
    fail,
    make_table,
    plain,
    print_json,
)

models_app = typer.Typer(help="Model versions: list them, register one, build an ensemble.",
                         invoke_without_command=True)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _fmt(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(
        value)


@models_app.callback()
def models(
    ctx: typer.Context,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """List the registered model versions: architecture, input size, threshold, internal-test
    figures (from each model's sidecar) and which one the worker uses by default."""
    if ctx.invoked_subcommand is not None:
        return
    from pneumoscreen.db.queries import model_versions
    from pneumoscreen.model.bundle import ModelFileError, model_file, verified_spec
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    try:
        default_path = Path(model_file(settings.model_path))
        default = verified_spec(default_path)
    except ModelFileError as exc:
        fail(f"the default model cannot be read: {exc}")
    with settings.session() as session:
        rows = model_versions(session=session)
    for row in rows:
        row["default"] = row["sha256"] == default.sha256
    if fmt is Format.json:
        print_json({"default": {"label": default.label, "sha256": default.sha256,
                                "path": str(default_path)}, "models": rows})
        return
    if rows:
        console.print(make_table("Model versions", [
            "id", "model", "arch.", "input", "threshold", "AUC", "recall", "spec.", "subtype AUC",
            "default"], [
            (r["id"], plain(r["label"]), plain(r["architecture"] or "")
             + (f" x{r['members']}" if r["members"] else ""), r["input_size"],
             _fmt(r["threshold"]), _fmt(r["auc"]), _fmt(r["recall"], 3),
             _fmt(r["specificity"], 3), _fmt(r["subtype_auc"], 3),
             "yes" if r["default"] else "") for r in rows]))
        console.print("AUC, recall and specificity: internal test split, as the model's sidecar "
                      "records them (screen evaluate … --split internal-test reproduces them).")
    else:
        console.print("no model version registered yet")
    if not any(r["default"] for r in rows):
        console.print(plain(f"default: {default.label} ({default_path}), registered on its "
                            "first use"))


@models_app.command("register")
def register_cmd(
    path: Annotated[Path, typer.Argument(help="A .keras file with its .json sidecar beside it.",
                                         exists=True, dir_okay=False)],
) -> None:
    """Register a model file: it must lie in a model folder (SCREEN_MODEL_DIRS or the bundled
    one) and its sidecar must be valid (sha256, threshold in (0, 1), input size); the file's
    sha256 is checked against the sidecar and recorded, and workers verify it before every load.
    Tasks then name this version by its id."""
    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.worker.intake.rescreen import register_model
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    try:
        with settings.session() as session:
            mv = register_model(path, session=session, settings=settings)
            label, mv_id = mv.label, mv.id
    except ModelFileError as exc:
        fail(str(exc))
    console.print(plain(f"registered {label} as model version {mv_id}"))


@models_app.command("ensemble")
def ensemble_cmd(
    members: Annotated[list[Path], typer.Argument(
        help="model.keras files (or their run folders) trained on the same patient split.")],
    data_dir: Annotated[Path, typer.Option(
        "--data", help="The training images (Kaggle layout), for validation and internal test.",
        exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    version: Annotated[str | None, typer.Option(help="Version string.")] = None,
    target_recall: Annotated[float, typer.Option(min=0.5, max=1.0)] = 0.95,
    cache_dir: Annotated[Path | None, typer.Option(help="Preprocessed-array cache.")] = None,
    register_it: Annotated[bool, typer.Option(
        "--register/--no-register", help="Record the ensemble and its internal-test "
        "evaluation in the configured database.")] = True,
) -> None:
    """Average models into one ensemble: one model call, recalibrated and with its threshold
    tuned on the shared validation split, evaluated on the shared internal test."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from pneumoscreen.model.ensemble import EnsembleError, make_ensemble
    from pneumoscreen.model.train import register_run
    from pneumoscreen.worker.settings import get_settings

    paths = [m / "model.keras" if m.is_dir() else m for m in members]
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        try:
            result = make_ensemble(paths, out, data_dir, target_recall=target_recall,
                                   version=version, cache_dir=cache_dir,
                                   progress=RichProgress(bar))
        except (EnsembleError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
    m = result.tuned.internal_test
    if register_it:
        register_run(result.spec, m, url=get_settings().effective_database_url,
                     dataset=f"{data_dir} (internal-test split of the members)",
                     report_path=None)
    console.print(plain(f"ensemble {result.model_path} ({result.spec.label}) of {len(paths)} "
                        f"models, threshold {result.spec.threshold:.4f}"))
    if m:
        sub = m.get("subtype") or {}
        console.print(plain(f"internal test (n={m['n']}): AUC {m['auc']:.4f}, recall "
                            f"{m['recall']:.3f}, specificity {m['specificity']:.3f}"
                            + (f"; subtype AUC {sub['auc']:.4f}" if sub.get("auc") else "")))

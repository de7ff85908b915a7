"""Model commands: ``screen train``, ``screen evaluate``, ``screen predict``, ``screen reports``.

TensorFlow is imported inside the commands so ``screen --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from pneumoscreen.worker.cli.output import (
    Format,
    RichProgress,
    console,
    err_console,
    fail,
    make_table,
    plain,
    print_json,
)


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def _runtime() -> Any:
    from pneumoscreen.worker.settings import get_settings

    return get_settings().runtime_config()


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(m: dict[str, Any], key: str) -> str:
    """The 95% interval a report shows: the bootstrap's, widened (Wilson) on a small sample."""
    from pneumoscreen.model.metrics import reported_intervals

    shown = reported_intervals(m)[0]
    ci = shown.get(key)
    return f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else ""


def train_cmd(
    data_dir: Path = typer.Argument(..., help="Kaggle layout (train/{NORMAL,PNEUMONIA}/…) or a "
                                    "folder holding NORMAL/ and PNEUMONIA/.", exists=True,
                                    file_okay=False),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: runs/<time>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the stopped run in --out from "
                                "its last finished epoch, with the configuration it was started "
                                "with (other options are ignored)."),
    finish: bool = typer.Option(False, "--finish", help="With --resume: train no further; "
                                "keep the best epoch so far and calibrate, tune and save now."),
    arch: str = typer.Option("cnn-s", help="Architecture: cnn-s, cnn-m, cnn-xs (from scratch), "
                             "mobilenetv2 (alpha 0.35), mobilenet (alpha 0.25), efficientnet-lite0 "
                             "(ImageNet backbones)."),
    init: str = typer.Option("none", help="Backbone weights: imagenet (Keras downloads them), a "
                             "weights file, or none (random)."),
    input_size: int = typer.Option(96, min=32, max=512, help="Square input size in pixels."),
    epochs: int = typer.Option(30, min=1, help="Maximum epochs of the (fine-tuning) phase; early "
                               "stopping usually ends sooner."),
    head_epochs: int = typer.Option(3, min=1, help="Epochs of the head-only phase of a "
                                    "pretrained backbone."),
    batch_size: int = typer.Option(32, min=1),
    learning_rate: float = typer.Option(1e-3, min=1e-6, help="Learning rate (cnn; head phase)."),
    finetune_learning_rate: float = typer.Option(2e-4, min=1e-7, help="Peak learning rate of "
                                                 "the whole-network phase (cosine decay)."),
    augment: str = typer.Option("standard", help="Augmentation: standard, strong (random "
                                "resized crop, gamma, blur, noise), antishortcut (strong, plus "
                                "inpainted corners and text-like markers and crops that keep "
                                "the lungs), framing (antishortcut, plus shifts and zoom in and "
                                "out: for --lung-crop) or none."),
    distill_from: str | None = typer.Option(None, "--distill-from", help="Distil a teacher "
                                            "model (a path or bundled:NAME, e.g. bundled:v2): "
                                            "both heads learn from its probabilities mixed "
                                            "with the labels."),
    distill_weight: float = typer.Option(0.5, min=0.0, max=1.0, help="The teacher's share of "
                                         "each training target (with --distill-from)."),
    lung_crop: bool = typer.Option(False, "--lung-crop", help="The network sees only the "
                                   "lung-field box of its input (rows 15-93 %, columns 8-92 %), "
                                   "never the film's corners and edges where markers sit; an "
                                   "ImageNet backbone only."),
    register_chest: bool = typer.Option(False, "--register-chest", help="With --lung-crop: "
                                        "each film is first moved and scaled (up to 21 % and "
                                        "0.86-1.14x) to match the training split's mean chest, "
                                        "so the box follows the child (within that range)."),
    subtype_weight: float = typer.Option(0.5, min=0.0, help="Weight of the viral/bacterial "
                                         "loss (pneumonia images only) beside the pneumonia "
                                         "loss."),
    patience: int = typer.Option(6, min=1, help="Early-stopping patience on validation AUC."),
    target_recall: float = typer.Option(0.95, min=0.5, max=1.0, help="The threshold reaches "
                                        "this recall on validation: midway between the highest "
                                        "score cut that does and the next lower score."),
    seed: int = typer.Option(42, help="Seed of the weights, the shuffling and augmentation."),
    split_seed: int = typer.Option(42, help="Seed of the patient split (keep it for every "
                                   "member of an ensemble)."),
    cache_dir: Path | None = typer.Option(None, help="Where preprocessed arrays are cached "
                                          "(default: OUT/cache)."),
    max_files: int | None = typer.Option(None, min=2, help="Use only the first N files per class "
                                         "(smoke runs)."),
    version: str | None = typer.Option(None, help="Version string (default: 2.0.0+<time>)."),
    register: bool = typer.Option(True, help="Record the model version and its internal-test "
                                  "evaluation in the configured database."),
) -> None:
    """Train a network: split train/ by patient into train / validation / internal test, train
    with augmentation and early stopping (two phases for an ImageNet backbone), calibrate, choose
    the recall-tuned threshold on validation and report the internal test with 95% bootstrap
    intervals. Checkpoints every epoch: --resume continues a stopped run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from pneumoscreen.model.architectures import InitError
    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.model.train import TrainConfig, resume_config, train
    from pneumoscreen.worker.settings import get_settings

    url = get_settings().effective_database_url if register else None
    if finish and not resume:
        fail("--finish goes with --resume: it ends a stopped run at its best epoch")
    if resume:
        if out is None:
            fail("--resume needs --out RUN_DIR, the folder of the run to continue")
        try:
            cfg = resume_config(out)
        except FileNotFoundError as exc:
            fail(str(exc))
        cfg.database_url = url
    else:
        cfg = TrainConfig(data_dir=data_dir, out_dir=out or Path("runs") / _stamp(), arch=arch,
                          init=init, input_size=input_size, epochs=epochs,
                          head_epochs=head_epochs, batch_size=batch_size,
                          learning_rate=learning_rate,
                          finetune_learning_rate=finetune_learning_rate, augment=augment,
                          subtype_weight=subtype_weight, distill_from=distill_from,
                          distill_weight=distill_weight, lung_crop=lung_crop,
                          register_chest=register_chest, patience=patience,
                          target_recall=target_recall, seed=seed,
                          split_seed=split_seed, cache_dir=cache_dir, max_files=max_files,
                          version=version, database_url=url)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        try:
            result = train(cfg, RichProgress(progress), runtime=_runtime(), finish=finish)
        except (ValueError, FileNotFoundError, InitError, ModelFileError) as exc:
            fail(str(exc))
    spec, m = result.spec, result.internal_test
    console.print(plain("model ", "bold") + plain(
        f"{result.model_path} ({spec.label}), {spec.extra['architecture']['params']:,} "
        f"parameters, trained in {result.seconds / 60:.1f} min"), highlight=False)
    console.print(f"threshold {spec.threshold:.4f} (validation recall ≥ {spec.target_recall})")
    if m:
        console.print(f"internal test (n={m['n']}): AUC {m['auc']:.4f}{_ci(m, 'auc')}, "
                      f"recall {m['recall']:.3f}{_ci(m, 'recall')}, "
                      f"specificity {m['specificity']:.3f}{_ci(m, 'specificity')}")
        sub = m.get("subtype") or {}
        if sub.get("auc") is not None:
            console.print(f"subtype (viral vs bacterial, n={sub['n']}): AUC {sub['auc']:.4f}")


def _load(model: Path | None) -> Any:
    from pneumoscreen.model.bundle import ModelFileError, load_model

    try:
        loaded = load_model(model, runtime=_runtime())
    except ModelFileError as exc:
        fail(f"{exc}\nfix --model or SCREEN_MODEL_PATH (a .keras file with its .json sidecar "
             "beside it), or leave both unset for the bundled model")
    if not loaded.spec.trained:
        err_console.print(plain("warning: ", "yellow") + plain(
            f"{loaded.spec.label} is an untrained placeholder: its figures mean nothing"))
    return loaded


def evaluate_cmd(
    data_dir: Path = typer.Argument(..., exists=True, file_okay=False,
                                    help="A folder with NORMAL/ and PNEUMONIA/ (DICOM, PNG or "
                                    "JPEG), or the Kaggle layout (its test/ is used unless "
                                    "--split says otherwise)."),
    model: Path | None = typer.Option(None, "--model", help="A .keras file with its sidecar "
                                      "(default: the configured or bundled model)."),
    split: str | None = typer.Option(
        None, "--split", help="internal-test, validation or train: that part of the model's "
        "saved patient split (split_manifest.json beside the model), read from DATA_DIR/train; "
        "test or val: that Kaggle folder."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default: "
                                    "reports/<time>)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, or json: one JSON object "
                               "on stdout and nothing else."),
    save: bool = typer.Option(True, help="Store the evaluation in the database."),
    heatmaps: bool = typer.Option(True, help="Grad-CAM overlays in the example grid and the "
                                  "border/corner mass of true vs false positives."),
) -> None:
    """Evaluate a model on labelled images with the serving preprocessing: AUC, recall,
    specificity (with 95% bootstrap intervals), precision, accuracy and F1 at the model's tuned
    threshold, an HTML report with plots, and a row in the evaluation_reports table."""
    import shlex
    import sys
    import time

    from pneumoscreen.model.evaluate import evaluate, headline, resolve_dataset, store
    from pneumoscreen.model.provenance import git_commit, package_version
    from pneumoscreen.model.report import write_report
    from pneumoscreen.worker.cli.quiet import COMMAND_CLOCK
    from pneumoscreen.worker.settings import get_settings

    # The whole command is timed, from its start (imports included) to the report written.
    t0 = COMMAND_CLOCK[0]
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=time.perf_counter() - t0)
    loaded = _load(model or get_settings().model_path)
    try:
        dataset = resolve_dataset(data_dir, split, loaded)
        ev = evaluate(loaded, dataset)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    seconds = time.perf_counter() - t0
    started_at = started.strftime("%Y-%m-%d %H:%M:%S UTC")
    ev.metrics["run"] = {"started_at": started.isoformat(timespec="seconds"),
                         "seconds": round(seconds, 2), "version": package_version(),
                         "commit": git_commit()}
    out = out or Path("reports") / _stamp()
    command = "screen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = write_report(ev, out, model_label=loaded.spec.label,
                          history=loaded.spec.extra.get("history"), command=command,
                          explain=loaded.heatmaps if heatmaps else None,
                          started_at=started_at, clock_start=t0)
    ev.metrics["run"]["seconds"] = round(time.perf_counter() - t0, 2)
    url = get_settings().effective_database_url
    report_id = store(ev, loaded, report.resolve(), url=url) if save else None
    m = ev.metrics
    if fmt is Format.json:
        print_json({**headline(m), "report": str(report), "report_id": report_id})
        return
    console.print(plain(loaded.spec.label, "bold") + plain(f" on {m['dataset']}"),
                  highlight=False)
    rows = [("n", f"{m['n']} ({m['n_pneumonia']} pneumonia, {m['n_normal']} normal"
                  f", {m['unreadable']} unreadable)"),
            ("AUC", _fmt(m["auc"], 4) + _ci(m, "auc")),
            ("threshold", _fmt(m["threshold"], 4)),
            ("recall", _fmt(m["recall"]) + _ci(m, "recall")),
            ("specificity", _fmt(m["specificity"]) + _ci(m, "specificity")),
            ("precision", _fmt(m["precision"])), ("accuracy", _fmt(m["accuracy"])),
            ("F1", _fmt(m["f1"])),
            ("confusion", f"TP {m['tp']}  FP {m['fp']}  TN {m['tn']}  FN {m['fn']}"),
            ("at 0.5", f"recall {_fmt(m['at_0.5']['recall'])}, specificity "
                       f"{_fmt(m['at_0.5']['specificity'])}")]
    rows += [(f"threshold for recall {p['target_recall']:.2f}",
              f"{p['threshold']:.4f} (specificity {_fmt(p['specificity'])})")
             for p in m.get("operating_points") or []]
    sub = m.get("subtype") or {}
    if sub.get("auc") is not None:
        ci = sub.get("ci95")
        rows.append(("subtype AUC (viral vs bacterial)",
                     f"{sub['auc']:.4f}" + (f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else "")
                     + f", n={sub['n']} pneumonia images"))
    console.print(make_table(None, ["metric", "value"], rows))
    if m.get("small_sample"):
        err_console.print(plain("warning: ", "yellow") + plain(
            f"only {m['n_pneumonia']} pneumonia and {m['n_normal']} normal images: the figures "
            "are unstable; intervals are widened to Wilson score intervals"), highlight=False,
            soft_wrap=True)
    console.print(plain(f"report: {report}" + (f" (stored as evaluation report {report_id})"
                                               if report_id else "")), highlight=False)


def predict_cmd(
    files: list[Path] = typer.Argument(..., help="DICOM, PNG or JPEG files."),
    model: Path | None = typer.Option(None, "--model", help="A .keras file with its sidecar "
                                      "(default: the configured or bundled model)."),
    heatmap_dir: Path | None = typer.Option(None, "--heatmap", help="Write each screened "
                                            "file's Grad-CAM overlay into this folder."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> None:
    """Screen single files without the queue: each file's pneumonia probability, the threshold,
    whether it would be flagged, the suggested subtype, whether the film is inside the model's
    validated scope, or why it cannot be screened. Nothing is stored."""
    import numpy as np

    from pneumoscreen.model.preprocess import InputRangeError
    from pneumoscreen.worker.ingest import IngestError, load_grey
    from pneumoscreen.worker.screening import scope
    from pneumoscreen.worker.settings import get_settings
    from pneumoscreen.worker.status import status_of

    settings = get_settings()
    loaded = _load(model or settings.model_path)
    config = settings.ingest_config()
    threshold = loaded.spec.threshold
    results: list[dict[str, Any]] = []
    inputs: list[np.ndarray] = []
    ages: list[str | None] = []
    for path in files:
        entry: dict[str, Any] = {"file": str(path), "probability": None, "p_viral": None,
                                 "threshold": threshold, "flagged": None, "in_scope": None,
                                 "scope_reason": None, "atypicality": None}
        try:
            if not path.is_file():
                raise FileNotFoundError("no such file")
            decoded = load_grey(path, config)
            inputs.append(loaded.preprocess(decoded.grey))
            ages.append(decoded.metadata.get("patient_age"))
            entry["status"] = "screened"
        except IngestError as exc:
            entry.update(status=status_of(exc).value, reason=str(exc))
        except (InputRangeError, OSError) as exc:
            entry.update(status="failed", reason=str(exc) or type(exc).__name__)
        results.append(entry)
    screened = [e for e in results if e["status"] == "screened"]
    if inputs:
        x = np.stack(inputs)
        scores = loaded.predict(x)  # one model call for every readable file
        for i, entry in enumerate(screened):
            p = float(scores.pneumonia[i])
            atyp = None if scores.atypicality is None else float(scores.atypicality[i])
            v = scope.verdict(patient_age=ages[i], atypicality=atyp,
                              atypicality_threshold=loaded.atypicality_threshold,
                              age_range=settings.scope_age_years,
                              contrast=scope.mediastinum_contrast(x[i]))
            # Outside the intended use there is no verdict: no flag, no subtype.
            entry.update(probability=p, flagged=p >= threshold and v.in_scope,
                         p_viral=(None if scores.viral is None or not v.in_scope
                                  else float(scores.viral[i])),
                         atypicality=atyp, in_scope=v.in_scope, scope_reason=v.reason)
        if heatmap_dir is not None:
            from pneumoscreen.model.gradcam import save_overlay

            heatmap_dir.mkdir(parents=True, exist_ok=True)
            for i, (entry, cam) in enumerate(zip(screened, loaded.heatmaps(x), strict=True)):
                target = heatmap_dir / f"{i + 1:03d}-{Path(entry['file']).stem[:60]}.png"
                save_overlay(target, x[i], cam)
                entry["heatmap"] = str(target)
    if fmt is Format.json:
        print_json({"model": loaded.spec.label, "sha256": loaded.spec.sha256,
                    "threshold": threshold, "results": results})
        return
    console.print(plain(f"model {loaded.spec.label}, threshold {threshold:.4f} "
                        "(flagged when probability ≥ threshold)"), highlight=False)
    console.print(make_table(None, ["file", "probability", "viral?", "flagged", "scope", "note"], [
        # The subtype is a suggestion about a pneumonia: for flagged films only, as in the lists.
        (r["file"], _fmt(r["probability"], 4),
         _fmt(r["p_viral"], 2) if r["flagged"] and r["p_viral"] is not None else "",
         {True: Text("FLAGGED", style="bold red"), False: "no", None: "—"}[r["flagged"]],
         {True: "in scope", False: Text("OUTSIDE", style="bold yellow"), None: ""}[r["in_scope"]],
         f"{r['status']}: {r['reason']}" if "reason" in r else (r["scope_reason"] or ""))
        for r in results]))


def reports_cmd(
    limit: int = typer.Option(20, min=1, help="Newest N reports."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> None:
    """List stored evaluation reports, newest first."""
    from pneumoscreen.db.queries import evaluation_reports
    from pneumoscreen.worker.settings import get_settings

    with get_settings().session() as session:
        data = evaluation_reports(session=session, limit=limit)
    if fmt is Format.json:
        print_json(data)
        return
    if not data:
        console.print("no evaluation reports yet: run screen evaluate")
        return
    # The threshold is the model's (`screen models`; JSON here): 9 columns fit 80 characters.
    console.print(make_table("Evaluation reports", [
        "id", "created", "model", "dataset", "n", "AUC", "rec.", "spec.", "report"],
        [(d["id"], f"{d['created_at']:%Y-%m-%d %H:%M}", d["model"], d["dataset"],
          d["n"], _fmt(d["auc"], 4), _fmt(d["recall"]), _fmt(d["specificity"]),
          d["report_path"] or "") for d in data]))


def bench_models_cmd(
    models: list[str] = typer.Argument(..., help="Model files or bundled:NAME (e.g. "
                                       "bundled:v2 bundled:v3)."),
    studies: int = typer.Option(1000, min=1, help="Images per model."),
    chunk: int = typer.Option(64, min=1, max=1024, help="Studies per model call."),
    rounds: int = typer.Option(4, min=1, help="Alternating rounds (A B A B …)."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """The model call alone (model_only_per_s) of several models in one run, in alternating
    rounds so the machine's load falls on each alike."""
    import json as _json
    from dataclasses import asdict

    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.worker.bench.models import compare

    if fmt not in ("table", "json"):
        fail(f"--format {fmt}: choose table or json")
    try:
        rows = compare(models, studies=studies, chunk=chunk, rounds=rounds, runtime=_runtime())
    except (ModelFileError, ValueError) as exc:
        fail(str(exc))
    if fmt == "json":
        print(_json.dumps({"models": [asdict(r) for r in rows]}, indent=1))
        return
    base = rows[0].model_only_per_s
    for r in rows:
        console.print(plain(f"{r.model}  {r.label}  input {r.input_size}  {r.params:,} "
                            f"parameters  model_only_per_s {r.model_only_per_s}  "
                            f"{r.model_only_per_s / base:.2f} x {rows[0].model}"),
                      highlight=False)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this module's commands to ``screen`` and ``screen bench``."""
    bench_app.command("models")(bench_models_cmd)
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("predict")(predict_cmd)
    app.command("reports")(reports_cmd)

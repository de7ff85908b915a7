"""Ingestion commands: ``screen inspect FILE`` and ``screen bench decode``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pneumoscreen.worker.cli.output import (
    Format,
    console,
    fail,
    make_table,
    plain,
    print_json,
)


def _model_input_size(settings: Any) -> int:
    """The input size of the configured (or bundled) model, read from its sidecar only."""
    from pneumoscreen.model.bundle import ModelFileError, model_file, read_spec

    try:
        return read_spec(model_file(settings.model_path)).input_size
    except ModelFileError as exc:
        fail(f"cannot read the model's input size: {exc}")


def inspect_cmd(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="A DICOM, PNG or JPEG file."
    ),
    png: Path | None = typer.Option(
        None, "--png", help="Write the normalised image, as the model gets it, to this PNG."
    ),
    full: bool = typer.Option(False, "--full", help="Decode at full resolution."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> None:
    """Show what the ingester sees: tags used, decision and reason, pixel steps."""
    from pneumoscreen.worker.ingest.inspection import inspect_file
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    result = inspect_file(file, settings.ingest_config(), reduced=False if full else None)
    written = None
    if png is not None and result.grey is not None:
        written = _write_png(result.grey, png, _model_input_size(settings))
    data = result.to_dict()
    data["png"] = str(written) if written else None
    if fmt is Format.json:
        print_json(data)
    else:
        _print_inspection(data)
    if png is not None and written is None:
        fail(f"no image written: the study is {result.decision} ({result.reason})")
    if result.decision == "failed":
        raise typer.Exit(1)  # scripts must see that the file cannot be read


def _write_png(grey: Any, out: Path, size: int) -> Path:
    import numpy as np
    from PIL import Image

    from pneumoscreen.model.preprocess import preprocess

    net = preprocess(grey, size)[..., 0]
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(net * 255).astype(np.uint8), mode="L").save(out)
    return out


def _print_inspection(data: dict[str, Any]) -> None:
    colour = {"done": "green", "rejected": "yellow", "failed": "red"}.get(data["decision"], "")
    console.print(plain(data["path"], "bold") + plain(
        f"  format: {data['format'] or 'not an image'}"), highlight=False)
    reason = f": {data['reason']}" if data["reason"] else " (would be screened)"
    console.print(plain("decision: ") + plain(data["decision"] + reason, colour), highlight=False)
    if data["tags"]:
        console.print(make_table("Tags used", ["tag", "value"], sorted(data["tags"].items())))
    if data["steps"]:
        rows = [(i + 1, s) for i, s in enumerate(data["steps"])]
        console.print(make_table("Pixel steps", ["#", "step"], rows))
    if "image" in data:
        img = data["image"]
        console.print(f"grey image {img['shape'][0]} x {img['shape'][1]}, "
                      f"min {img['min']} max {img['max']} mean {img['mean']}")
    if data.get("png"):
        console.print(plain(f"network input written to {data['png']}"), highlight=False)


def shared_dicom_files(folder: Path | None, *, how: str) -> list[Path]:
    """The files of ``folder`` (default ``../shared/dicom/chest``), or one line naming ``how``
    to give a folder and the exit."""
    from pneumoscreen.worker.bench.decode import default_chest_folder

    folder = folder or default_chest_folder()
    if folder is None or not folder.is_dir():
        fail(f"no folder of DICOM files: pass {how}, or put the shared data at "
             "../shared/dicom/chest")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        fail(f"{folder} holds no files")
    return files


def bench_decode(
    folder: Path | None = typer.Argument(
        None, help="Folder of DICOM files; default ../shared/dicom/chest."
    ),
    repeat: int = typer.Option(3, min=1, help="Timed runs per file and mode (median kept)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> None:
    """Decode + normalise throughput per file, full versus reduced resolution, in one run."""
    from pneumoscreen.worker.bench.decode import run_decode
    from pneumoscreen.worker.settings import get_settings

    files = shared_dicom_files(folder, how="one")
    folder = files[0].parent
    settings = get_settings()
    size = _model_input_size(settings)
    rows, summary = run_decode(files, settings.ingest_config(input_size=size), repeat=repeat,
                               size=size)
    summary["folder"] = str(folder)
    timed = [r for r in rows if "error" not in r]
    if fmt is Format.json:
        print_json({"files": rows, "summary": summary})
        return
    columns = ["file", "transfer syntax", "full", "reduced", "full ms", "reduced ms", "speed-up",
               "input Δ"]
    table_rows = [
        (r["file"], r.get("transfer_syntax"), "x".join(map(str, r.get("full_shape", []))),
         "x".join(map(str, r.get("reduced_shape", []))), r.get("full_ms"), r.get("reduced_ms"),
         f"{r['speedup']}x" if "speedup" in r else r.get("error"), r.get("input_mean_abs_diff"))
        for r in rows
    ]
    console.print(make_table(f"decode + normalise, median of {repeat}", columns, table_rows))
    if timed:
        console.print(
            f"{len(timed)} files: full {summary['full_files_per_s']} files/s, reduced "
            f"{summary['reduced_files_per_s']} files/s, speed-up {summary['speedup']}x "
            f"(network input {size}x{size})"
        )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this module's commands to ``screen`` and ``screen bench``."""
    app.command("inspect")(inspect_cmd)
    bench_app.command("decode")(bench_decode)

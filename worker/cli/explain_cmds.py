"""``screen heatmap IMAGE``, ``screen bench heatmaps``, ``screen bench scope``, ``screen bench
shift`` and ``screen bench tta``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pneumoscreen.worker.cli.output import Format, console, fail, make_table, plain, print_json


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("heatmap")(heatmap)
    bench_app.command("heatmaps")(bench_heatmaps)
    bench_app.command("scope")(bench_scope)
    bench_app.command("shift")(bench_shift)
    bench_app.command("tta")(bench_tta)


def heatmap(
    image: Annotated[int, typer.Argument(help="An image id (screen images lists them).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="PNG to write [default: heatmap-IMAGE.png].")] = None,
    size: Annotated[int, typer.Option(min=64, max=4096, help="Display size in pixels.")] = 512,
) -> None:
    """Write the image's Grad-CAM heatmap over its own image, as the network saw it, at display
    resolution (the map stored when it was screened; computed now if none was stored)."""
    import numpy as np

    from pneumoscreen.db import Image
    from pneumoscreen.db.queries import heatmap_of
    from pneumoscreen.model.bundle import ModelFileError
    from pneumoscreen.model.gradcam import from_bytes, save_overlay
    from pneumoscreen.worker.ingest import IngestError, load_grey
    from pneumoscreen.worker.screening.screen import get_model
    from pneumoscreen.worker.settings import get_settings

    settings = get_settings()
    with settings.session() as session:
        exists = session.get(Image, image) is not None
        found = heatmap_of(image, session=session) if exists else None
    if not exists:
        fail(f"no such image: {image} (`screen images` lists them)")
    if found is None:
        fail(f"image {image} has no prediction (not screened yet, rejected or failed)")
    try:
        model = get_model(settings)
    except ModelFileError as exc:
        fail(str(exc))
    try:
        pixels = model.preprocess(load_grey(Path(found["path"]), settings.ingest_config()).grey)
    except (IngestError, OSError) as exc:
        fail(f"image {image}'s file cannot be read again: {exc}")
    stored = found["map"] is not None and found["model_sha256"] == model.spec.sha256
    cam = (from_bytes(found["map"][2], found["map"][0], found["map"][1]) if stored
           else model.heatmaps(np.asarray(pixels)[None])[0])
    target = out or Path(f"heatmap-{image}.png")
    save_overlay(target, pixels, cam, size=size)
    source = "stored" if stored else f"computed now with {model.spec.label}"
    console.print(plain(f"{target}: image {image}, probability {found['probability']:.4f} "
                        f"(threshold {found['threshold']:.4f}), map {source}"))


def _measured(measure: Callable[[Any], dict[str, Any]], fmt: Format) -> dict[str, Any] | None:
    """``measure(the configured model)``; a bad model or data folder is one line. With
    ``--format json`` the figures are printed here and None is returned."""
    from pneumoscreen.worker.screening.screen import get_model
    from pneumoscreen.worker.settings import get_settings

    try:
        data = measure(get_model(get_settings()))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if fmt is Format.json:
        print_json(data)
        return None
    return data


def bench_heatmaps(
    data_dir: Annotated[Path, typer.Argument(help="The training images (Kaggle layout).",
                                             exists=True, file_okay=False)],
    n: Annotated[int, typer.Option(min=2, help="Images for the randomisation check.")] = 64,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Heatmap sanity on the model's internal-test split: the model-randomisation check
    (Spearman rank correlation of maps, trained vs last layers re-initialised) and the share of
    map mass in the border and top corners, true vs false positives; and the same films scored
    again with their corners and text-like markers erased."""
    from pneumoscreen.worker.bench.explain import heatmap_sanity

    data = _measured(lambda model: heatmap_sanity(model, data_dir, n=n), fmt)
    if data is None:
        return
    r = data["randomisation"]
    console.print(plain(f"{data['model']}: randomisation check on {r['n']} internal-test images "
                        f"({r['reinitialised']} re-initialised): Spearman mean "
                        f"{r['spearman_mean']:.3f}, median {r['spearman_median']:.3f}"))
    rows = [(name.replace("_", " "), g["n"], _f(g["border_mass_mean"]),
             _f(g["top_corner_mass_mean"])) for name, g in data["shortcut"].items()]
    rows.append(("a uniform map", "", "0.360", "0.080"))
    console.print(make_table("Map mass on the internal test split (flagged images)",
                             ["group", "n", "outer 10% border", "top corners"], rows))
    test, m = data["corner_mass_test"], data["markers_erased"]
    matched = data["shortcut"]["score_matched_true_positives"]["per_false_positive"]
    console.print(plain(
        f"score-matched: the {matched} true positives nearest in score to each false positive. "
        f"False positives' corner mass as heavy by chance (one-sided, {test['draws']} draws): "
        f"p = {_p(test['p_value_all'])} against any true positives, "
        f"{_p(test['p_value_matched'])} against score-matched ones. With markers erased "
        f"{m['false_positives_still_flagged']} of {data['shortcut']['false_positives']['n']} "
        f"false positives stay flagged (mean score change "
        f"{_f(m['false_positives_mean_change'])})"))
    rows = [(name, _f(m[key]["auc"]), _f(m[key]["recall"]), _f(m[key]["specificity"]))
            for name, key in (("as stored", "as_is"), ("corners and markers erased", "erased"))]
    console.print(make_table("The same internal test films with their markers erased",
                             ["films", "AUC", "recall", "specificity"], rows))
    console.print(f"decisions turned by the erasing: {m['decisions_turned']} "
                  f"({m['normal_newly_flagged']} normal films newly flagged, "
                  f"{m['pneumonia_newly_missed']} pneumonias newly missed); mean |change| in "
                  f"probability {_f(m['mean_abs_change'])}")


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    """A p-value with two significant digits (1/20001 is not 0.000)."""
    return "n/a" if value is None else f"{value:.2g}"


def bench_scope(
    data_dir: Annotated[Path, typer.Argument(help="The training images (Kaggle layout).",
                                             exists=True, file_okay=False)],
    dicom: Annotated[Path | None, typer.Option(
        help="A folder with chest/ and not_chest/ DICOMs (e.g. ../shared/dicom).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """How often the intended-use guard marks a film outside scope: the internal test split,
    made images no chest model should accept, and the given DICOMs."""
    from pneumoscreen.worker.bench.explain import scope_check
    from pneumoscreen.worker.settings import get_settings

    ages = get_settings().scope_age_years
    data = _measured(lambda model: scope_check(model, data_dir, dicom, age_range=ages), fmt)
    if data is None:
        return
    console.print(make_table(
        f"Intended-use guard, {data['model']} (atypicality threshold {data['threshold']:.3f})",
        ["group", "n", "outside scope", "rate", "by score", "by inversion", "median score",
         "median contrast"],
        [(k, g["n"], g["marked_out_of_scope"], f"{g['rate']:.1%}", f"{g['rate_by_score']:.1%}",
          f"{g['rate_by_inversion']:.1%}", g["score_median"], g["contrast_median"])
         for k, g in data["groups"].items()]))


def bench_shift(
    data_dir: Annotated[Path, typer.Argument(help="The training images (Kaggle layout).",
                                             exists=True, file_okay=False)],
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """The model on its internal-test split as stored and with one acquisition change at a
    time (exposure, framing, sharpness): AUC, recall and specificity at its threshold."""
    from pneumoscreen.worker.bench.shift import shift_check

    data = _measured(lambda model: shift_check(model, data_dir), fmt)
    if data is None:
        return
    console.print(make_table(
        f"{data['model']} on its internal test ({data['n']} films, {data['normal']} normal), "
        f"threshold {data['threshold']:.4f}",
        ["films", "AUC", "recall", "specificity", "false positives"],
        [(name, _f(r["auc"]), _f(r["recall"]), _f(r["specificity"]), r["false_positives"])
         for name, r in data["shifts"].items()]))


def bench_tta(
    data_dir: Annotated[Path, typer.Argument(help="The training images (Kaggle layout).",
                                             exists=True, file_okay=False)],
    limit: Annotated[int | None, typer.Option(
        min=20, help="About this many films of each split, spread over it [default: all].")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Test-time augmentation (no flips), measured: the model scored once and as five mildly
    changed copies of each film (farther, nearer, two exposures) averaged, each at its own
    threshold chosen on validation at the model's target recall: validation, internal test,
    false positives under 'screen bench shift''s changes, and the time it costs."""
    from pneumoscreen.worker.bench.tta import tta_check

    data = _measured(lambda model: tta_check(model, data_dir, limit), fmt)
    if data is None:
        return
    rows = []
    for name, key in (("one view", "one_view"), (f"{len(data['tta']['views'])} views", "tta")):
        r = data[key]
        v, t = r["validation"], r["internal_test"]
        rows.append((name, f"{r['threshold']:.4f}", _f(v["auc"]), v["false_positives"],
                     _f(t["auc"]), _f(t["recall"]), _f(t["specificity"]), t["false_positives"],
                     r["shift_false_positives"], r["shift_false_negatives"],
                     f"{r['ms_per_film']:.2f}"))
    console.print(make_table(
        f"{data['model']}: test-time augmentation ({data['validation_films']} validation, "
        f"{data['internal_test_films']} internal-test films; target recall "
        f"{data['target_recall']})",
        ["scoring", "threshold", "val AUC", "val FP", "test AUC", "test recall",
         "test specificity", "test FP", "FP under shifts", "missed under shifts", "ms a film"],
        rows))
    if data["cost"] is not None:
        console.print(plain(f"cost: {data['cost']} times the scoring time of one view"))

"""The evaluation report: matplotlib PNGs (Agg backend) and one self-contained-folder HTML page."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model.evaluate import Evaluation
from pneumoscreen.model.metrics import calibration_bins, flagged, reported_intervals


def _template() -> Any:
    """``templates/report.html``; autoescaped, so file names and tag values render as text."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("pneumoscreen.model", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, *, tight: bool = True) -> str:
    if tight:  # a grid placed by hand (the examples and their colour bar) keeps its layout
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def plot_roc(ev: Evaluation, path: Path) -> str:
    from sklearn.metrics import roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(ev.y, ev.scores)
    m = ev.metrics
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(fpr, tpr, lw=2, label=f"AUC {m['auc']:.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.scatter([1 - m["specificity"]], [m["recall"]], color="red", zorder=3,
               label=f"threshold {m['threshold']:.3f}")
    ax.set(xlabel="1 - specificity", ylabel="recall (sensitivity)", title="ROC")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(ev: Evaluation, path: Path) -> str:
    from sklearn.metrics import precision_recall_curve

    plt = _plt()
    prec, rec, _ = precision_recall_curve(ev.y, ev.scores)
    m = ev.metrics
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(rec, prec, lw=2, label=f"AP {m['average_precision']:.4f}")
    ax.scatter([m["recall"]], [m["precision"]], color="red", zorder=3,
               label=f"threshold {m['threshold']:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_confusion(m: dict[str, Any], title: str, path: Path) -> str:
    plt = _plt()
    cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black", fontsize=13)
    ax.set_xticks([0, 1], ["not flagged", "flagged"])
    ax.set_yticks([0, 1], ["NORMAL", "PNEUMONIA"])
    ax.set(xlabel="prediction", ylabel="truth", title=title)
    return _save(fig, path)


def plot_calibration(ev: Evaluation, path: Path) -> str:
    """Observed fraction against mean predicted probability per equal-count bin, the marker's
    area showing its number of images (the report's table lists the counts)."""
    plt = _plt()
    bins = ev.metrics.get("calibration_bins") or calibration_bins(ev.y, ev.scores)
    mean = [b["mean_predicted"] for b in bins]
    frac = [b["fraction_positive"] for b in bins]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(mean, frac, "-", lw=1, label=f"model (Brier {ev.metrics['brier']:.3f})")
    sizes = [20 + 180 * b["n"] / max(c["n"] for c in bins) for b in bins]
    ax.scatter(mean, frac, s=sizes, alpha=0.7, label="bins (area ∝ images)")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="fraction with pneumonia",
           title=f"Calibration ({len(bins)} equal-count bins)", xlim=(0, 1), ylim=(-0.03, 1.03))
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_histograms(ev: Evaluation, path: Path) -> str:
    """The score distribution of each class, with the tuned threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    edges = np.linspace(0, 1, 41)
    for label, name, colour in ((0, "NORMAL", "tab:blue"), (1, "PNEUMONIA", "tab:red")):
        scores = ev.scores[ev.y == label]
        ax.hist(scores, bins=edges, alpha=0.55, color=colour, label=f"{name} (n={len(scores)})")
    ax.axvline(ev.metrics["threshold"], color="black", ls="--", lw=1,
               label=f"threshold {ev.metrics['threshold']:.3f}")
    ax.set(xlabel="pneumonia probability", ylabel="images", title="Scores by true class",
           xlim=(0, 1))
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_history(history: dict[str, list[float]], path: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    auc = "pneumonia_auc" if "val_pneumonia_auc" in history else "auc"  # v2 has two heads
    for ax, key in zip(axes, ("loss", auc), strict=True):
        if key in history:
            ax.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"validation {key}")
        ax.set(xlabel="epoch", title=key)
        if ax.has_data():
            ax.legend()
    if "val_loss" in history:  # the first epochs' BatchNorm statistics can put val_loss far off
        axes[0].set_ylim(0, min(2.0, max(history["val_loss"])) * 1.05)
    return _save(fig, path)


def plot_examples(ev: Evaluation, path: Path, per_group: int = 6,
                  explain: Callable[[np.ndarray], np.ndarray] | None = None) -> str:
    """The most confident true/false positives/negatives at the tuned threshold, captioned with
    their file name in the evaluated folder (the user's own data: the report is private), with
    ``explain``'s Grad-CAM maps over them and a colour scale when given."""
    plt = _plt()
    pred = flagged(ev.scores, ev.metrics["threshold"])
    groups = [("true positive", (ev.y == 1) & (pred == 1), -1),
              ("false positive", (ev.y == 0) & (pred == 1), -1),
              ("false negative", (ev.y == 1) & (pred == 0), 1),
              ("true negative", (ev.y == 0) & (pred == 0), 1)]
    fig, axes = plt.subplots(4, per_group, figsize=(1.8 * per_group, 8.2), squeeze=False)
    for row, (name, mask, order) in enumerate(groups):
        idx = np.flatnonzero(mask)
        # Positives: highest scores first; negatives: lowest first (the model's surest calls).
        idx = idx[np.argsort(order * ev.scores[idx], kind="stable")][:per_group]
        maps = explain(ev.x[idx]) if explain is not None and len(idx) else None
        for col in range(per_group):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(idx):
                i = idx[col]
                size = ev.x.shape[1]
                ax.imshow(ev.x[i, ..., 0], cmap="gray", vmin=0, vmax=1)
                if maps is not None:
                    ax.imshow(maps[col], cmap="jet", alpha=0.35, vmin=0, vmax=1,
                              extent=(-0.5, size - 0.5, size - 0.5, -0.5),
                              interpolation="bilinear")
                # A file name is text, never mathtext ("$...$" in a name would be parsed).
                ax.set_title(caption(f"{_example_name(ev, i)} p={ev.scores[i]:.3f}", 20),
                             fontsize=6, parse_math=False)
        axes[row, 0].text(-0.1, 0.5, f"{name}\n({int(mask.sum())})", ha="right", va="center",
                          transform=axes[row, 0].transAxes, fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.9 if explain is not None else 0.98, top=0.96,
                        bottom=0.02, hspace=0.45, wspace=0.08)
    if explain is not None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.add_axes((0.92, 0.25, 0.015, 0.5))
        fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), cax=bar,
                     label="Grad-CAM weight (0: none, 1: most)")
    return _save(fig, path, tight=False)


def _example_name(ev: Evaluation, i: int) -> str:
    """The example's file name as the evaluated folder has it (its position if unknown)."""
    samples = ev.samples or []
    if i < len(samples) and getattr(samples[i], "path", None) is not None:
        return Path(samples[i].path).name
    return f"image {i + 1}"


def calibration_ranges(bins: list[dict[str, Any]]) -> list[str]:
    """``low to high`` for each calibration bin, with just enough decimals (3 to 8) that no
    two different edges print alike (saturated scores give bins like 0.99991 to 0.99998)."""
    edges = sorted({b[k] for b in bins for k in ("low", "high")})
    digits = 3
    while digits < 8 and len({f"{e:.{digits}f}" for e in edges}) < len(edges):
        digits += 1
    return [f"{b['low']:.{digits}f} to {b['high']:.{digits}f}" for b in bins]


def caption(text: str, width: int = 16) -> str:
    """A caption broken between words to fit under a thumbnail, never inside a word."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=False,
                                    break_on_hyphens=False)) or text


def shortcut_rows(ev: Evaluation, explain: Callable[[np.ndarray], np.ndarray]
                  ) -> list[dict[str, Any]]:
    """Share of Grad-CAM mass in the outer 10% border and the top corners (text markers), for
    the true and the false positives (a model that looks at markers shows it here)."""
    from pneumoscreen.model.gradcam import border_mass

    pred = flagged(ev.scores, ev.metrics["threshold"])
    rows = []
    for name, mask in (("true positives", (ev.y == 1) & (pred == 1)),
                       ("false positives", (ev.y == 0) & (pred == 1))):
        idx = np.flatnonzero(mask)
        if not len(idx):
            rows.append({"group": name, "n": 0, "border": "n/a", "corners": "n/a"})
            continue
        maps = np.concatenate([explain(ev.x[idx[i:i + 64]]) for i in range(0, len(idx), 64)])
        mass = border_mass(maps)
        rows.append({"group": name, "n": len(idx), "border": f"{mass['border'].mean():.3f}",
                     "corners": f"{mass['top_corners'].mean():.3f}"})
    rows.append({"group": "a uniform map", "n": "", "border": "0.360", "corners": "0.080"})
    return rows


def _num(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)  # the template escapes


def _interval(ci: list[float] | None) -> str:
    return f"{ci[0]:.4f} to {ci[1]:.4f}" if ci else ""


def write_report(ev: Evaluation, out_dir: Path, *, model_label: str,
                 history: dict[str, list[float]] | None = None, command: str = "",
                 explain: Callable[[np.ndarray], np.ndarray] | None = None,
                 started_at: str = "", seconds: float | None = None,
                 clock_start: float | None = None) -> Path:
    """Write the PNGs and ``report.html`` into ``out_dir``; returns the HTML path.

    ``started_at`` and the command's wall time go in the header with the package version and
    git commit, so a report says what produced it: ``seconds``, or with ``clock_start`` (a
    ``time.perf_counter()`` reading taken when the command began) the time from then until the
    page is written, so plots and Grad-CAM maps count too."""
    from pneumoscreen.model.provenance import git_commit, package_version

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    m = ev.metrics
    both = len(set(ev.y.tolist())) == 2
    figures: list[tuple[str, str]] = []
    if both:
        figures += [("ROC", plot_roc(ev, out_dir / "roc.png")),
                    ("Precision-recall", plot_pr(ev, out_dir / "pr.png"))]
    figures.append(("Scores by true class", plot_histograms(ev, out_dir / "histograms.png")))
    figures += [
        ("Confusion matrix at the tuned threshold",
         plot_confusion(m, f"threshold {m['threshold']:.3f}", out_dir / "confusion_tuned.png")),
        ("Confusion matrix at 0.5", plot_confusion(m["at_0.5"], "threshold 0.5",
                                                   out_dir / "confusion_05.png")),
    ]
    if both:
        figures.append(("Calibration", plot_calibration(ev, out_dir / "calibration.png")))
    if history and history.get("loss"):
        # The history is the evaluated model's own, from its sidecar: not this evaluation.
        figures.append((f"Training curves of {model_label}, as recorded when it was trained "
                        "(not computed on this dataset)",
                        plot_history(history, out_dir / "history.png")))
    figures.append(("Examples at the tuned threshold" + (", with Grad-CAM" if explain else ""),
                    plot_examples(ev, out_dir / "examples.png", explain=explain)))
    shortcut = shortcut_rows(ev, explain) if explain is not None else None

    rows = [("n (readable)", m["n"]),
            ("pneumonia / normal", f"{m['n_pneumonia']} / {m['n_normal']}"),
            ("unreadable files", m.get("unreadable", 0)), ("AUC", m["auc"]),
            ("threshold", m["threshold"]), ("recall", m["recall"]),
            ("specificity", m["specificity"]), ("precision", m["precision"]), ("NPV", m["npv"]),
            ("accuracy", m["accuracy"]), ("F1", m["f1"]), ("Brier score", m["brier"])]
    cis = {"AUC": "auc", "recall": "recall", "specificity": "specificity"}
    shown, ci_method = reported_intervals(m)
    metric_rows = [{"name": k, "value": _num(v), "ci": _interval(shown.get(cis.get(k, "")))}
                   for k, v in rows]
    small = None
    if m.get("small_sample"):
        small = {"n_pneumonia": m["n_pneumonia"], "n_normal": m["n_normal"],
                 "bootstrap": {k: _interval((m.get("ci95") or {}).get(v))
                               for k, v in cis.items()}}
    operating = [{"target": f"{p['target_recall']:.2f}", "threshold": _num(p["threshold"]),
                  "recall": _num(p["recall"]), "specificity": _num(p["specificity"]),
                  "fp": p["fp"], "fn": p["fn"]} for p in m.get("operating_points") or []]
    bins = m.get("calibration_bins") or []
    calibration = [{"range": text, "n": b["n"], "mean": _num(b["mean_predicted"]),
                    "observed": _num(b["fraction_positive"])}
                   for b, text in zip(bins, calibration_ranges(bins), strict=True)]
    if clock_start is not None:
        import time

        seconds = time.perf_counter() - clock_start
    run = m.get("run") or {}  # the evaluating command's own record, when it made one
    provenance = {"version": run.get("version") or package_version(),
                  "commit": run.get("commit") or git_commit(),
                  "started_at": started_at,
                  "seconds": "" if seconds is None else f"{seconds:.1f} s"}
    cr = m["classification_report"]
    cr_rows = [{"name": name, "precision": _num(float(cr[name]["precision"])),
                "recall": _num(float(cr[name]["recall"])),
                "f1": _num(float(cr[name]["f1-score"])), "support": int(cr[name]["support"])}
               for name in ("NORMAL", "PNEUMONIA", "macro avg", "weighted avg") if name in cr]
    sub = m.get("subtype") or {}
    subtype = None
    if sub.get("auc") is not None:
        ci = sub.get("ci95")
        subtype = {"n": sub["n"], "n_viral": sub.get("n_viral"),
                   "n_bacterial": sub.get("n_bacterial"), "auc": _num(sub["auc"]),
                   "ci": f"{ci[0]:.3f} to {ci[1]:.3f}" if ci else ""}
    page = _template().render(
        model_label=model_label, sha256=m["model"]["sha256"], dataset=m["dataset"],
        command=command, ci_method=ci_method, metric_rows=metric_rows, cr_rows=cr_rows,
        subtype=subtype, shortcut=shortcut, small=small, operating=operating,
        calibration=calibration, provenance=provenance,
        figures=[{"title": t, "file": f} for t, f in figures])
    path = out_dir / "report.html"
    path.write_text(page)
    _make_private(out_dir)
    return path


def _make_private(out_dir: Path) -> None:
    """The report folder 0700 and its files 0600: ``examples.png`` shows the evaluated images,
    which may be patients' films."""
    import os

    for item in [out_dir, *out_dir.iterdir()]:
        st = item.lstat()
        if st.st_uid == os.getuid() and not item.is_symlink():
            item.chmod(0o700 if item.is_dir() else 0o600)

"""The validation score histogram a sidecar carries, and the drift statistic of another split
against it (``screen bench drift``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model.bundle import LoadedModel, sidecar_path
from pneumoscreen.model.dataset import load_arrays, split_from_manifest, training_root
from pneumoscreen.model.drift import drift, score_histogram
from pneumoscreen.model.evaluate import manifest_for


def split_scores(model: LoadedModel, data_dir: Path, part: str,
                 size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities and atypicality scores of one part of the model's saved patient split."""
    manifest = json.loads(manifest_for(model).read_text())
    samples = split_from_manifest(manifest, training_root(data_dir)).parts()[part]
    x = load_arrays(samples, model.spec.input_size).x
    outs = [model.predict(x[i:i + size]) for i in range(0, len(x), size)]
    prob = np.concatenate([o.pneumonia for o in outs])
    atyp = (np.concatenate([o.atypicality for o in outs])
            if outs and outs[0].atypicality is not None else None)
    return prob, atyp


def validation_histogram(model: LoadedModel, data_dir: Path) -> dict[str, Any]:
    """The ``score_histogram`` of the model's validation split."""
    prob, atyp = split_scores(model, data_dir, "validation")
    guard = (model.spec.extra.get("atypicality") or {}).get("threshold")
    return score_histogram(prob, threshold=model.spec.threshold, atypicality=atyp,
                           atypicality_threshold=guard)


def write_histogram(model: LoadedModel, histogram: dict[str, Any]) -> Path:
    """Add ``score_histogram`` to the model's sidecar (keys sorted, as the sidecars are)."""
    path = sidecar_path(Path(model.path))
    side = json.loads(path.read_text())
    side["score_histogram"] = histogram
    path.write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    return path


def drift_bench(model: LoadedModel, data_dir: Path, *, write: bool = False) -> dict[str, Any]:
    """PSI and KS of the internal-test scores against the validation histogram (the sidecar's
    when it has one, else computed now)."""
    hist = model.spec.extra.get("score_histogram")  # written by training, or by --write-sidecar
    source = "sidecar"
    if hist is None:
        hist, source = validation_histogram(model, data_dir), "computed now"
    prob, _ = split_scores(model, data_dir, "internal-test")
    out = drift(hist, prob.tolist())
    out.pop("observed")
    result = {"model": model.spec.label, "reference": f"validation (n={hist['n']}, {source})",
              "compared": "internal-test", **out,
              "reference_flag_rate": _validation_flag_rate(model, hist),
              "compared_flag_rate": round(float((prob >= model.spec.threshold).mean()), 4)}
    if write and source == "computed now":
        result["written"] = str(write_histogram(model, hist))
    return result


def _validation_flag_rate(model: LoadedModel, hist: dict[str, Any]) -> float | None:
    """The histogram's own flag rate, else the sidecar's validation metrics' (tp + fp) / n."""
    if hist.get("flag_rate") is not None:
        return float(hist["flag_rate"])
    val = (model.spec.extra.get("metrics") or {}).get("validation") or {}
    return (val.get("tp", 0) + val.get("fp", 0)) / val["n"] if val.get("n") else None

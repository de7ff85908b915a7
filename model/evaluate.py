"""Evaluation: serving preprocessing and the model over a labelled folder, metrics, stored report.

The images go through exactly what serving does (``load_grey`` -> ``preprocess`` ->
``LoadedModel.predict``) and flagged means ``probability >= spec.threshold``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model import metrics as M
from pneumoscreen.model.bundle import LoadedModel, ModelSpec
from pneumoscreen.model.dataset import (
    CLASSES,
    MANIFEST_NAME,
    SPLITS,
    Sample,
    is_labelled_dir,
    load_arrays,
    scan_labelled,
    split_from_manifest,
    subtype_labels,
    training_root,
)

KAGGLE_SPLITS = ("test", "val")
BOOT_SEED = 42  # the same seed ``screen train`` uses by default, so both print the same intervals
N_BOOT = 2000


@dataclass
class Dataset:
    """The labelled files to evaluate and a human description of where they came from."""

    samples: list[Sample]
    description: str


@dataclass
class Evaluation:
    dataset: Dataset
    y: np.ndarray
    scores: np.ndarray
    x: np.ndarray
    samples: list[Sample]
    metrics: dict[str, Any]
    viral: np.ndarray | None = None


def manifest_for(model: LoadedModel) -> Path:
    """The split manifest saved beside the model by ``screen train``."""
    name = (model.spec.extra.get("training") or {}).get("split_manifest", MANIFEST_NAME)
    return Path(model.path).parent / name


def resolve_dataset(data_dir: Path, split: str | None, model: LoadedModel,
                    manifest: Path | None = None) -> Dataset:
    """Which files to evaluate.

    - ``split`` one of ``train``/``validation``/``internal-test``: that part of the model's saved
      patient split, read from ``DATA_DIR/train`` (Kaggle layout) or ``DATA_DIR``.
    - ``split`` ``test`` or ``val``: the Kaggle folder of that name.
    - no split: ``DATA_DIR`` itself when it holds NORMAL/ and PNEUMONIA/, else ``DATA_DIR/test``.
    """
    data_dir = Path(data_dir)
    if split in SPLITS:
        path = manifest or manifest_for(model)
        if not path.is_file():
            raise FileNotFoundError(f"split manifest {path} not found: --split {split} needs the "
                                    "manifest ``screen train`` saved beside the model")
        root = training_root(data_dir)
        parts = split_from_manifest(json.loads(path.read_text()), root).parts()
        return Dataset(parts[split], f"{root} [{split} split of {path.name}]")
    if split in KAGGLE_SPLITS:
        root = data_dir / split
    elif split is not None:
        raise ValueError(f"unknown split {split!r}: use one of {[*SPLITS, *KAGGLE_SPLITS]}")
    elif is_labelled_dir(data_dir):
        root = data_dir
    elif is_labelled_dir(data_dir / "test"):
        root = data_dir / "test"
    else:
        raise FileNotFoundError(
            f"{data_dir} is not labelled: evaluation needs the images sorted into NORMAL/ and "
            "PNEUMONIA/ sub-folders, in the folder itself or in its test/ (Kaggle layout)")
    if not is_labelled_dir(root):
        raise FileNotFoundError(
            f"{root} is not labelled: evaluation needs the images sorted into NORMAL/ and "
            "PNEUMONIA/ sub-folders")
    return Dataset(scan_labelled(root), str(root))


def evaluate(model: LoadedModel, dataset: Dataset, *, chunk_size: int = 64,
             n_boot: int = N_BOOT, progress: Any = None) -> Evaluation:
    """Score every readable file of ``dataset`` and compute the metrics at the model's threshold."""
    if not dataset.samples:
        raise ValueError(f"no image files in {dataset.description}")
    arrays = load_arrays(dataset.samples, model.spec.input_size, progress=progress)
    if len(arrays.y) == 0:
        raise ValueError(f"none of the {len(dataset.samples)} files could be read")
    outs = [model.predict(arrays.x[i:i + chunk_size]) for i in range(0, len(arrays.x), chunk_size)]
    scores = np.concatenate([o.pneumonia for o in outs])
    viral = (np.concatenate([o.viral for o in outs])
             if outs and all(o.viral is not None for o in outs) else None)
    summary = M.summarize(arrays.y, scores, model.spec.threshold, n_boot=n_boot, seed=BOOT_SEED)
    # The subtype on the pneumonia images whose file names carry it (Kermany's naming).
    summary["subtype"] = subtype_summary(arrays.samples, viral, n_boot=n_boot, seed=BOOT_SEED)
    summary["unreadable"] = len(arrays.errors)
    summary["dataset"] = dataset.description
    summary["model"] = {"name": model.spec.name, "version": model.spec.version,
                        "sha256": model.spec.sha256, "trained": model.spec.trained,
                        "target_recall": model.spec.target_recall}
    return Evaluation(dataset, arrays.y, scores, arrays.x, arrays.samples, summary, viral)


def subtype_summary(samples: list[Any], p_viral: np.ndarray | None, *, n_boot: int,
                    seed: int) -> dict[str, Any]:
    """Viral-vs-bacterial AUC on the pneumonia images with a known subtype (from the file name);
    ``auc`` is None when there are none of one kind, or the model has no subtype output."""
    v = subtype_labels(samples)
    if p_viral is None:
        return {"n": int((v >= 0).sum()), "auc": None, "ci95": None,
                "note": "the model has no subtype output"}
    known = v >= 0
    if known.sum() == 0 or len(np.unique(v[known])) < 2:
        return {"n": int(known.sum()), "auc": None, "ci95": None}
    return M.subtype_metrics(v[known], p_viral[known], n_boot=n_boot, seed=seed)


def headline(m: dict[str, Any]) -> dict[str, Any]:
    """The figures ``--format json`` promises, then the rest."""
    keys = ("n", "auc", "threshold", "recall", "specificity", "precision", "accuracy", "f1",
            "subtype")
    return {**{k: m[k] for k in keys}, **{k: v for k, v in m.items() if k not in keys}}


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None, so it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def record(spec: ModelSpec, metrics: dict[str, Any], *, url: str, dataset: str,
           report_path: Path | str | None) -> int:
    """Save metrics as an ``evaluation_reports`` row of ``spec``'s model version; returns its id."""
    from pneumoscreen.db.models import EvaluationReport
    from pneumoscreen.db.queries import model_version_for
    from pneumoscreen.db.session import session_scope

    # NaN (e.g. AUC of a one-class set) is not JSON: store it as null.
    clean = json_safe(metrics)
    with session_scope(url) as session:
        mv = model_version_for(spec, session=session)
        row = EvaluationReport(model_version_id=mv.id, dataset=dataset, n=int(metrics["n"]),
                               metrics=clean,
                               report_path=str(report_path) if report_path else None)
        session.add(row)
        session.flush()
        return int(row.id)


def store(ev: Evaluation, model: LoadedModel, report_path: Path | None, *, url: str) -> int:
    """Save the evaluation as an ``evaluation_reports`` row; returns its id."""
    return record(model.spec, ev.metrics, url=url, dataset=ev.dataset.description,
                  report_path=report_path)


__all__ = ["CLASSES", "Dataset", "Evaluation", "evaluate", "headline", "record",
           "resolve_dataset", "store"]

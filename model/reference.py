"""What a model's sidecar records about its validation scores, for later comparison.

- ``score_histogram``: the histogram of the calibrated pneumonia probability on the validation
  split (fixed bins over [0, 1]). Drift monitoring compares the scores of new studies with it.
- ``operating_points``: for each target recall (0.90, 0.95, 0.98, 0.99) the threshold
  :func:`~pneumoscreen.model.metrics.select_threshold` chooses on validation, what it gives
  there, and the same threshold on the internal test.
- ``threshold_room``: the validation scores nearest the threshold, as served (float32), and the
  room each leaves: how far a film's score may move on another machine before it changes side.

Training and ``screen models ensemble`` write all three. For models shipped before they existed,
``python -m pneumoscreen.model.reference MODEL DATA_DIR`` computes them from the model and the
bundled patient split and adds them to the sidecar (the model file, and so its sha256, is
unchanged). ``… MODEL DATA_DIR 0.98`` first moves the threshold to the validation recall-0.98
point (:func:`retarget`); ``… MODEL DATA_DIR 0.98 2.1.1`` makes that a new model version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model import metrics as M
from pneumoscreen.model.drift import score_histogram

HISTOGRAM_KEY = "score_histogram"
OPERATING_KEY = "operating_points"
ROOM_KEY = "threshold_room"


def operating_points(y_val: np.ndarray, s_val: np.ndarray, y_test: np.ndarray | None = None,
                     s_test: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Validation-chosen thresholds for each target recall, with the internal test at each."""
    rows = []
    for row in M.operating_points(y_val, s_val):
        out = {"target_recall": row["target_recall"], "threshold": row["threshold"],
               "validation": {k: row[k] for k in ("recall", "specificity", "tp", "fp", "tn",
                                                  "fn")}}
        if y_test is not None and s_test is not None and len(y_test):
            at = M.metrics_at(y_test, s_test, row["threshold"])
            out["internal-test"] = {k: at[k] for k in ("recall", "specificity", "tp", "fp",
                                                       "tn", "fn")}
        rows.append(out)
    return rows


def sidecar_record(y_val: np.ndarray, s_val: np.ndarray, y_test: np.ndarray | None = None,
                   s_test: np.ndarray | None = None, *, threshold: float) -> dict[str, Any]:
    """The validation histogram (with its flag rate at ``threshold``), operating points and the
    threshold's room to the nearest validation scores (:func:`M.threshold_room`)."""
    return {HISTOGRAM_KEY: score_histogram(np.asarray(s_val).reshape(-1), threshold=threshold),
            OPERATING_KEY: operating_points(y_val, s_val, y_test, s_test),
            ROOM_KEY: M.threshold_room(s_val, threshold)}


def split_scores(model_path: Path, data_dir: Path, *, chunk_size: int = 64
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labels and calibrated pneumonia probabilities of the validation and internal-test
    splits of the model's own patient split (its manifest beside it)."""
    from pneumoscreen.model.bundle import load_model
    from pneumoscreen.model.dataset import (
        MANIFEST_NAME,
        load_arrays,
        split_from_manifest,
        training_root,
    )

    model_path = Path(model_path)
    manifest_path = model_path.parent / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} beside {model_path}: the split is unknown")
    split = split_from_manifest(json.loads(manifest_path.read_text()),
                                training_root(Path(data_dir)))
    loaded = load_model(model_path)
    scores = {}
    for name, part in (("validation", split.validation), ("internal-test", split.internal_test)):
        arrays = load_arrays(part, loaded.spec.input_size)
        s = [np.asarray(loaded.predict(arrays.x[i:i + chunk_size]).pneumonia).reshape(-1)
             for i in range(0, len(arrays.x), chunk_size)]
        scores[name] = (arrays.y, np.concatenate(s))
    return scores


def annotate(model_path: Path, data_dir: Path,
             scores: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Score the validation and internal-test splits of the model's own patient split (or take
    ``scores``) and add :func:`sidecar_record` to its sidecar, with the validation flag rate at
    the sidecar's threshold; an out-of-scope rate already there is kept (the guard is not
    touched here). Returns what was added."""
    from pneumoscreen.model.bundle import sidecar_path

    scores = scores or split_scores(model_path, data_dir)
    side = sidecar_path(Path(model_path))
    data = json.loads(side.read_text())
    record = sidecar_record(*scores["validation"], *scores["internal-test"],
                            threshold=data["threshold"])
    old = data.get(HISTOGRAM_KEY) or {}
    if "out_of_scope_rate" in old:
        record[HISTOGRAM_KEY]["out_of_scope_rate"] = old["out_of_scope_rate"]
    data.update(record)
    side.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return record


def retarget(model_path: Path, data_dir: Path, target_recall: float, *, n_boot: int = 2000,
             seed: int = 42, version: str | None = None) -> dict[str, Any]:
    """Move a saved model's threshold to the one :func:`M.select_threshold` chooses for
    ``target_recall`` on its validation split, scored as served; the sidecar's threshold,
    target recall, threshold selection and metrics follow (the internal test with bootstrap
    CIs). The subtype figures, which no threshold changes, are kept. Returns the new validation
    and internal-test headlines.

    ``version``: the model becomes a new model version, its file saved again (the same
    weights, a new sha256). A database records a model's threshold with its sha256 and refuses
    a registered file whose sidecar's threshold changed, so a moved threshold on a file that
    was shipped needs a new version."""
    from pneumoscreen.model.bundle import read_spec, write_sidecar
    from pneumoscreen.model.train import headline

    model_path = Path(model_path)
    scores = split_scores(model_path, data_dir)
    (y_val, s_val), (y_test, s_test) = scores["validation"], scores["internal-test"]
    threshold = M.select_threshold(y_val, s_val, target_recall)
    spec = read_spec(model_path)
    old = spec.extra.get("metrics") or {}
    figures = {"validation": M.summarize(y_val, s_val, threshold, n_boot=0),
               "internal-test": M.summarize(y_test, s_test, threshold, n_boot=n_boot,
                                            seed=seed)}
    for part, summary in figures.items():
        if "subtype" in (old.get(part) or {}):
            summary["subtype"] = old[part]["subtype"]
    if threshold != spec.threshold and (version is None or version == spec.version):
        raise ValueError(f"the threshold moves ({spec.threshold:.6g} -> {threshold:.6g}): give "
                         "a new version; a database refuses a registered file whose threshold "
                         "changed")
    if version is not None and version != spec.version:
        from pneumoscreen.model.architectures import load_keras

        # Saved beside it and moved over it: the old file stays whole until the new one is.
        fresh = model_path.with_name(f".{model_path.stem}.new.keras")
        load_keras(model_path).save(fresh)
        spec.extra["earlier_versions"] = [*spec.extra.get("earlier_versions", []), {
            "version": spec.version, "threshold": spec.threshold, "sha256": spec.sha256,
            "became": version, "why": f"threshold moved to the rule: {M.THRESHOLD_RULE}"}]
        spec.version = version
        fresh.replace(model_path)
    spec.threshold, spec.target_recall = threshold, target_recall
    selection = dict(spec.extra.get("threshold_selection") or {})
    selection.update(target_recall=target_recall, validation=headline(figures["validation"]),
                     rule=f"{M.THRESHOLD_RULE}, on calibrated scores")
    spec.extra["threshold_selection"] = selection
    spec.extra["metrics"] = {k: headline(v) for k, v in figures.items()}
    write_sidecar(model_path, spec)
    annotate(model_path, data_dir, scores)  # the operating points and histogram follow
    return spec.extra["metrics"]


if __name__ == "__main__":
    # python -m pneumoscreen.model.reference MODEL DATA_DIR [TARGET_RECALL [NEW_VERSION]]: with a
    # target, the threshold moves to it first (as a new version, given one); then the reference
    # record is written.
    if len(sys.argv) > 3:
        print(json.dumps(retarget(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]),
                                  version=sys.argv[4] if len(sys.argv) > 4 else None),
                         indent=1, default=float))
    else:
        print(json.dumps(annotate(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))

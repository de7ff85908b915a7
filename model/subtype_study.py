"""Why is the viral-vs-bacterial AUC low on the internal test split? Figures, not guesses.

``python -m pneumoscreen.model.subtype_study DATA_DIR [--model M]`` prints, for the model's own
patient split (its ``split_manifest.json``):

1. the class mix of the pneumonia images (viral share) per split;
2. patients: images per patient, patients whose files carry *both* subtype labels (a label
   that cannot be right for both films, or two illnesses), and the AUC per image vs per patient
   (scores averaged over a patient's films);
3. label noise: the AUC once patients with mixed labels are left out, and the share of
   confident disagreements (p_viral > 0.8 on a "bacteria" film or < 0.2 on a "virus" one);
4. resolution: the AUC of the same films first shrunk to 112 and 160 px and scaled back to the
   model's input (does detail the 224-px copies lack matter? the trend says);
5. the internal test vs validation, with bootstrap CIs.

It reads the training folder only (never the official test split).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from pneumoscreen.model import metrics as M
from pneumoscreen.model.dataset import (
    MANIFEST_NAME,
    load_arrays,
    patient_id,
    split_from_manifest,
    subtype_labels,
    training_root,
)


def _viral(model: Any, x: np.ndarray, chunk: int = 64) -> np.ndarray:
    return np.concatenate([np.asarray(model.predict(x[i:i + chunk]).viral).reshape(-1)
                           for i in range(0, len(x), chunk)])


def _shrunk(x: np.ndarray, px: int) -> np.ndarray:
    """Each image shrunk to ``px`` and resized back: the detail above ``px`` is gone."""
    size = x.shape[1]
    out = np.empty_like(x)
    for i, img in enumerate(x[..., 0]):
        small = Image.fromarray(img).resize((px, px), Image.Resampling.BILINEAR)
        out[i, ..., 0] = np.asarray(small.resize((size, size), Image.Resampling.BILINEAR))
    return np.clip(out, 0, 1)


def _auc_ci(v: np.ndarray, p: np.ndarray, n_boot: int = 1000) -> dict[str, Any]:
    m = M.subtype_metrics(v, p, n_boot=n_boot, seed=0)
    return {"n": len(v), "viral": int(v.sum()), "auc": round(float(m["auc"]), 4),
            "ci95": [round(float(c), 3) for c in m["ci95"]] if m.get("ci95") else None}


def study(data_dir: Path, model_ref: str | None = None) -> dict[str, Any]:
    from pneumoscreen.model.bundle import load_model, model_file

    loaded = load_model(model_ref)
    manifest = model_file(model_ref).parent / MANIFEST_NAME
    split = split_from_manifest(json.loads(manifest.read_text()), training_root(data_dir))
    report: dict[str, Any] = {"model": loaded.spec.label, "splits": {}}
    # Patients whose films carry both labels, over the whole training folder.
    labels_of: dict[str, set[int]] = defaultdict(set)
    for part in split.parts().values():
        for s, v in zip(part, subtype_labels(part), strict=True):
            if v >= 0:
                labels_of[patient_id(s.rel)].add(int(v))
    mixed = {pid for pid, vs in labels_of.items() if len(vs) > 1}
    report["patients_with_both_labels"] = {"patients": len(mixed),
                                           "of_patients_with_pneumonia": len(labels_of)}
    for name in ("validation", "internal-test"):
        part = [s for s in split.parts()[name] if s.label == 1]
        v_all = subtype_labels(part)
        keep = v_all >= 0
        part = [s for s, k in zip(part, keep, strict=True) if k]
        v = v_all[keep]
        arrays = load_arrays(part, loaded.spec.input_size)
        p = _viral(loaded, arrays.x)
        pids = np.array([patient_id(s.rel) for s in part])
        per_patient: dict[str, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            per_patient[pid].append(i)
        pv = np.array([v[idx].mean() for idx in per_patient.values()])
        pp = np.array([p[idx].mean() for idx in per_patient.values()])
        clean = pv % 1 == 0
        not_mixed = np.array([pid not in mixed for pid in pids])
        images_per = {lab: float(np.mean([len(idx) for idx in per_patient.values()
                                          if v[idx[0]] == lab])) for lab in (0, 1)}
        confident_wrong = float(np.mean(((p > 0.8) & (v == 0)) | ((p < 0.2) & (v == 1))))
        entry: dict[str, Any] = {
            "per_image": _auc_ci(v, p),
            "per_patient_mean_score": {"patients": len(pv),
                                       "auc": round(float(roc_auc_score(pv[clean].astype(int),
                                                                        pp[clean])), 4)},
            "without_mixed_label_patients": _auc_ci(v[not_mixed], p[not_mixed]),
            "viral_share": round(float(v.mean()), 3),
            "images_per_patient": {"bacterial": round(images_per[0], 2),
                                   "viral": round(images_per[1], 2)},
            "confident_disagreement_share": round(confident_wrong, 3),
            "by_resolution": {},
        }
        for px in (112, 160):
            entry["by_resolution"][f"{px}px"] = round(float(roc_auc_score(
                v, _viral(loaded, _shrunk(arrays.x, px)))), 4)
        entry["by_resolution"][f"{loaded.spec.input_size}px"] = entry["per_image"]["auc"]
        report["splits"][name] = entry
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--model", default=None, help="a model file or bundled:NAME")
    args = parser.parse_args()
    print(json.dumps(study(args.data_dir, args.model), indent=1))


if __name__ == "__main__":
    main()

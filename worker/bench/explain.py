"""Measurements of the explanations and the guard, printed by ``screen bench heatmaps`` and
``screen bench scope``.

* Heatmap sanity (Adebayo et al., 2018): the maps of the trained model against those of the same
  model with its last blocks re-initialised, by Spearman rank correlation per image (a map that
  survives randomisation explains nothing); and the shortcut indicator: the share of map mass in
  the outer 10% border and in the two top corners (text markers), true vs false positives; and
  what the markers do to the decisions: the same films with their top corners and text-like
  blobs inpainted (as the anti-shortcut augmentation does), scored again.
* The guard: on the internal test split and on what no pediatric model should accept (adult
  chest DICOMs with their age blanked, non-chest DICOMs decoded anyway, made images: a blank
  film, a rotated, an inverted chest, a cropped corner), the share marked out of scope.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model import gradcam
from pneumoscreen.model.architectures import load_keras
from pneumoscreen.model.bundle import LoadedModel
from pneumoscreen.model.dataset import load_arrays, split_from_manifest, training_root
from pneumoscreen.model.evaluate import manifest_for
from pneumoscreen.model.preprocess import preprocess
from pneumoscreen.worker.ingest import (
    AcceptancePolicy,
    DecodeOptions,
    IngestConfig,
    IngestError,
    load_grey,
)
from pneumoscreen.worker.screening import scope


def internal_test(model: LoadedModel, data_dir: Path, limit: int | None = None,
                  part_name: str = "internal-test") -> Any:
    """The model's internal-test arrays (or those of ``part_name`` of its own saved patient
    split); with ``limit``, about that many spread evenly over the split (both classes, in
    their proportion)."""
    manifest = json.loads(manifest_for(model).read_text())
    part = split_from_manifest(manifest, training_root(data_dir)).parts()[part_name]
    if limit is not None and len(part) > limit:
        part = part[::math.ceil(len(part) / limit)]
    return load_arrays(part, model.spec.input_size)


def _predict_all(model: LoadedModel, x: np.ndarray, size: int = 64) -> Any:
    outs = [model.predict(x[i:i + size]) for i in range(0, len(x), size)]
    prob = np.concatenate([o.pneumonia for o in outs])
    atyp = (np.concatenate([o.atypicality for o in outs])
            if outs and outs[0].atypicality is not None else None)
    return prob, atyp


def _maps(model: LoadedModel, x: np.ndarray, size: int = 32) -> np.ndarray:
    return np.concatenate([model.heatmaps(x[i:i + size]) for i in range(0, len(x), size)])


def randomised_copy(model: LoadedModel, fraction: float = 0.25, seed: int = 0) -> LoadedModel:
    """The same model with the weights of its last ``fraction`` of convolutional and dense
    layers (in each ensemble member) drawn again at random, scaled like the originals."""
    import keras

    copy = load_keras(model.path)
    rng = np.random.default_rng(seed)
    members = [layer for layer in copy.layers if layer.name.startswith("member_")] or [copy]
    for net in members:
        # Convolutions and dense layers (BatchNormalization keeps its statistics: a random
        # variance could be negative and make every map NaN).
        weighted = [layer for layer in net.layers
                    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                          keras.layers.Dense))
                    and not layer.name.startswith(("atypicality", "temperature"))]
        for layer in weighted[int(len(weighted) * (1 - fraction)):]:
            layer.set_weights([rng.normal(0, float(np.std(w)) or 0.05, w.shape).astype(w.dtype)
                               for w in layer.get_weights()])
    return LoadedModel(model.path, model.spec, copy, model.device)


def rank_correlations(a: np.ndarray, b: np.ndarray,
                      region: np.ndarray | None = None) -> np.ndarray:
    """Spearman's rho between paired maps over the cells of ``region`` (default all; one mask
    for every pair, or one per pair; a constant map correlates 0)."""
    from scipy.stats import spearmanr

    out = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if region is not None:
            cells = region[i] if region.ndim == 3 else region  # one mask per map, or one for all
            x, y = x[cells], y[cells]
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(0.0)
            continue
        out.append(float(spearmanr(x.ravel(), y.ravel()).statistic))
    return np.array(out)


def heatmap_sanity(model: LoadedModel, data_dir: Path, *, n: int = 64,
                   limit: int | None = None) -> dict[str, Any]:
    """The randomisation check and the border / corner mass of true vs false positives (on
    about ``limit`` internal-test images spread over the split; default all)."""
    arrays = internal_test(model, data_dir, limit)
    prob, _ = _predict_all(model, arrays.x)
    flagged = prob >= model.spec.threshold
    maps = _maps(model, arrays.x[flagged])
    y = arrays.y[flagged]
    mass = gradcam.border_mass(maps)
    groups = {}
    for name, mask in (("true_positives", y == 1), ("false_positives", y == 0)):
        groups[name] = {"n": int(mask.sum()),
                        "border_mass_mean": _mean(mass["border"][mask]),
                        "top_corner_mass_mean": _mean(mass["top_corners"][mask])}
    near = nearest_true_positives(prob[flagged], y)
    groups["score_matched_true_positives"] = score_matched(mass, near)
    pick = arrays.x[:n]
    trained = _maps(model, pick)
    # A cropping network's maps are zero outside its box in both models: those shared zeros
    # would count as agreement.
    region = gradcam.seen_region(model.keras_model, trained.shape[1:], pick)
    rho = rank_correlations(trained, _maps(randomised_copy(model), pick), region)
    # A uniform map puts 36% of its mass in the outer 10% border and 8% in the two corners.
    return {"model": model.spec.label, "internal_test_images": len(arrays.x),
            "internal_test_flagged": int(flagged.sum()),
            "markers_erased": markers_erased(model, arrays.x, arrays.y, prob),
            "randomisation": {"n": len(pick), "spearman_mean": _mean(rho),
                              "spearman_median": float(np.median(rho)),
                              "reinitialised": "the last 25% of convolution and dense layers"},
            "shortcut": groups,
            "corner_mass_test": corner_mass_test(mass["top_corners"], y, near),
            "uniform_map": {"border": 0.36, "top_corners": 0.08}}


#: true positives nearest in score (logit) to each false positive, for the matched comparison
MATCHED = 10


def nearest_true_positives(prob: np.ndarray, y: np.ndarray, k: int = MATCHED) -> np.ndarray:
    """``(false positives, k)``: for each false positive (``y == 0`` among flagged films) the
    indices of the ``k`` true positives nearest to it in score (logit); fewer columns where
    there are fewer true positives, no rows where there is no false positive."""
    from pneumoscreen.model.calibration import logit

    score = logit(prob)
    tp, fp = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k = min(k, len(tp))
    if not k or not len(fp):
        return np.zeros((0, k), int)
    return np.stack([tp[np.argsort(np.abs(score[tp] - score[i]), kind="stable")[:k]]
                     for i in fp])


def score_matched(mass: dict[str, np.ndarray], near: np.ndarray) -> dict[str, Any]:
    """Border and corner mass of the true positives nearest in score to each false positive
    (``near``, from :func:`nearest_true_positives`), averaged over the false positives. A
    film's map depends on how sure the network is (a barely flagged film's map is spread thin,
    its corners get more), and false positives sit lower than most true positives: this
    compares like with like."""
    if not near.size:
        return {"n": 0, "per_false_positive": near.shape[1], "border_mass_mean": None,
                "top_corner_mass_mean": None}
    return {"n": len(np.unique(near)), "per_false_positive": near.shape[1],
            "border_mass_mean": _mean(mass["border"][near].mean(axis=1)),
            "top_corner_mass_mean": _mean(mass["top_corners"][near].mean(axis=1))}


def corner_mass_test(corners: np.ndarray, y: np.ndarray, near: np.ndarray,
                     draws: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Is the false positives' mean corner mass heavier than chance would make it? Two
    one-sided resampling tests, each the share of draws whose mean is at least theirs (with
    the usual +1): against any true positives (``len(fp)`` of them drawn without replacement)
    and against score-matched ones (one of each false positive's ``near`` drawn per draw)."""
    tp, fp = corners[y == 1], corners[y == 0]
    out: dict[str, Any] = {"p_value_all": None, "p_value_matched": None, "draws": 0}
    if not len(fp) or not len(tp):
        return out
    rng = np.random.default_rng(seed)
    observed = fp.mean()
    out["draws"] = draws
    if len(fp) <= len(tp):  # drawn without replacement: needs as many true positives
        anyone = np.array([rng.choice(tp, len(fp), replace=False).mean() for _ in range(draws)])
        out["p_value_all"] = float((np.sum(anyone >= observed) + 1) / (draws + 1))
    if near.size:
        pick = rng.integers(0, near.shape[1], size=(draws, len(near)))
        matched = corners[near[np.arange(len(near)), pick]].mean(axis=1)
        out["p_value_matched"] = float((np.sum(matched >= observed) + 1) / (draws + 1))
    return out


def erase_markers(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The films with every corner (top ones 20 % of the side, bottom ones 10 %) and every
    bright text-like blob outside the lung box inpainted, the centre untouched: the
    anti-shortcut augmentation's erasing, always on, at a fixed size."""
    import tensorflow as tf

    from pneumoscreen.model.augment import AugmentConfig, erase_shortcuts

    cfg = AugmentConfig(corner_probability=1.0, corner_size=(0.20, 0.20), blob_probability=1.0)
    gen = tf.random.Generator.from_seed(seed)
    return np.concatenate([erase_shortcuts(tf.convert_to_tensor(x[i:i + 64]), cfg, gen).numpy()
                           for i in range(0, len(x), 64)]) if len(x) else x


def markers_erased(model: LoadedModel, x: np.ndarray, y: np.ndarray,
                   prob: np.ndarray) -> dict[str, Any]:
    """AUC, recall and specificity at the model's threshold before and after
    :func:`erase_markers`, and how many decisions the erasing turned: a model that reads the
    lungs barely moves."""
    erased, _ = _predict_all(model, erase_markers(x))
    t = model.spec.threshold
    turned = (prob >= t) != (erased >= t)
    false_pos = (prob >= t) & (y == 0)
    return {"as_is": figures_at(y, prob, t), "erased": figures_at(y, erased, t),
            "decisions_turned": int(turned.sum()),
            # A false alarm raised by a marker would fall below the threshold once it is gone.
            "false_positives_still_flagged": int((false_pos & (erased >= t)).sum()),
            "false_positives_mean_change": _mean(erased[false_pos] - prob[false_pos]),
            "normal_newly_flagged": int(((erased >= t) & (prob < t) & (y == 0)).sum()),
            "pneumonia_newly_missed": int(((erased < t) & (prob >= t) & (y == 1)).sum()),
            "mean_abs_change": float(np.mean(np.abs(erased - prob))) if len(prob) else None}


def figures_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC, and recall, specificity, false positives and negatives at ``threshold`` (serving's
    flag rule, :func:`pneumoscreen.model.metrics.metrics_at`); None where a class is missing."""
    from sklearn.metrics import roc_auc_score

    from pneumoscreen.model.metrics import metrics_at

    at = metrics_at(y, p, threshold)
    both = len(set(np.asarray(y).tolist())) == 2
    return {"auc": float(roc_auc_score(y, p)) if both else None,
            "recall": at["recall"] if (at["tp"] + at["fn"]) else None,
            "specificity": at["specificity"] if (at["tn"] + at["fp"]) else None,
            "false_positives": at["fp"], "false_negatives": at["fn"]}


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def made_images(x: np.ndarray) -> dict[str, np.ndarray]:
    """Films no model of chest radiographs should accept, made from internal-test inputs."""
    size = x.shape[1]
    corner = gradcam.resize_maps(x[:, : size // 3, : size // 3, 0], size, size)[..., None]
    return {"blank film": np.full_like(x[:1], 0.5).repeat(len(x), 0),
            "rotated 90 degrees": np.rot90(x, k=1, axes=(1, 2)).copy(),
            "inverted (negative)": 1.0 - x,
            "cropped corner": np.clip(corner, 0, 1)}


def _dicom_inputs(folder: Path, size: int, policy: AcceptancePolicy) -> np.ndarray:
    config = IngestConfig(policy, DecodeOptions())
    xs = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            xs.append(preprocess(load_grey(path, config).grey, size))
        except IngestError:
            continue
    return np.stack(xs) if xs else np.zeros((0, size, size, 1), np.float32)


def scope_check(model: LoadedModel, data_dir: Path, dicom_dir: Path | None, *,
                n_made: int = 50, age_range: tuple[float, float] = (0.0, 10.0),
                limit: int | None = None) -> dict[str, Any]:
    """The share of each group the guard marks out of scope (image score only: no ages); the
    internal test is about ``limit`` films spread over it (default all)."""
    threshold = model.atypicality_threshold
    if threshold is None:
        raise ValueError(f"{model.spec.label} has no atypicality output: nothing to measure")
    arrays = internal_test(model, data_dir, limit)
    groups: dict[str, np.ndarray] = {"internal test split (in distribution)": arrays.x}
    groups.update({f"made: {k}": v for k, v in made_images(arrays.x[:n_made]).items()})
    if dicom_dir is not None:
        size = model.spec.input_size
        if (dicom_dir / "chest").is_dir():
            groups["adult chest DICOMs, age blanked"] = _dicom_inputs(
                dicom_dir / "chest", size, AcceptancePolicy())
        if (dicom_dir / "not_chest").is_dir():
            anything = AcceptancePolicy.of(
                modalities=["CR", "DX", "CT", "MR", "OT"], body_parts=["", "CHEST", "HIP"],
                reject_views=[], reject_intents=[], non_image_modalities=[])
            groups["non-chest DICOMs, decoded anyway"] = _dicom_inputs(
                dicom_dir / "not_chest", size, anything)
    rows = {}
    for name, x in groups.items():
        if not len(x):
            continue
        _, atyp = _predict_all(model, x)
        contrast = [scope.mediastinum_contrast(img) for img in x]
        marked = [not scope.verdict(patient_age=None, atypicality=float(a),
                                    atypicality_threshold=threshold, age_range=age_range,
                                    contrast=c).in_scope
                  for a, c in zip(atyp, contrast, strict=True)]
        by_score = [float(a) > threshold for a in atyp]
        inverted = [c < scope.INVERTED_BELOW for c in contrast]
        rows[name] = {"n": len(x), "marked_out_of_scope": int(sum(marked)),
                      "rate": round(float(np.mean(marked)), 4),
                      "rate_by_score": round(float(np.mean(by_score)), 4),
                      "rate_by_inversion": round(float(np.mean(inverted)), 4),
                      "score_median": round(float(np.median(atyp)), 3),
                      "contrast_median": round(float(np.median(contrast)), 3)}
    return {"model": model.spec.label, "threshold": threshold, "groups": rows}

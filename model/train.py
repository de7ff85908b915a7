"""Training: patient split, cached arrays, augmented tf.data, the CNN, callbacks, tuned threshold.

:func:`train` is the whole of ``screen train``; the CLI only parses options and shows progress.
The output directory holds ``model.keras`` + ``model.json`` (the sidecar, see
:mod:`pneumoscreen.model.bundle`), ``split_manifest.json``, ``history.json`` and ``metrics.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model import metrics as M
from pneumoscreen.model.bundle import ModelSpec, file_sha256, write_sidecar
from pneumoscreen.model.dataset import (
    MANIFEST_NAME,
    Arrays,
    AugmentConfig,
    Split,
    load_arrays,
    make_dataset,
    scan_labelled,
    split_by_patient,
    training_root,
    write_manifest,
)

log = logging.getLogger(__name__)

MODEL_NAME = "pneumoscreen-cnn"

# Architectures compared for the shipped model (model card, "Architecture").
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "cnn-s": {"widths": (8, 16, 32, 64), "dense": 32, "dropout": 0.3},
    "cnn-m": {"widths": (16, 32, 64, 128), "dense": 64, "dropout": 0.3},
    "cnn-xs": {"widths": (4, 8, 16, 32), "dense": 16, "dropout": 0.2},
}


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the sidecar for reproduction)."""

    data_dir: Path
    out_dir: Path
    arch: str = "cnn-s"
    input_size: int = 96  # the shipped model's; see model/bundled/MODEL_CARD.md
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 6
    lr_patience: int = 2
    target_recall: float = 0.95
    seed: int = 42
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: Path | None = None
    version: str | None = None
    n_boot: int = 2000
    max_files: int | None = None  # tests and smoke runs: the first N files of each class
    register: bool = True

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("data_dir", "out_dir", "cache_dir"):
            data[key] = None if data[key] is None else str(data[key])
        return data


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    spec: ModelSpec
    split: Split
    history: dict[str, list[float]]
    validation: dict[str, Any]
    internal_test: dict[str, Any]
    seconds: float


class ProgressHook:
    """What :func:`train` reports to its caller (the CLI draws it with Rich)."""

    def stage(self, text: str) -> None: ...

    def files(self, total: int) -> Callable[[int], None]:
        return lambda _n: None

    def epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None: ...

    def batch(self, step: int, steps: int) -> None: ...


def _subset(samples: list[Any], max_files: int | None) -> list[Any]:
    if not max_files:
        return samples
    out: list[Any] = []
    for label in (0, 1):
        out.extend([s for s in samples if s.label == label][:max_files])
    return sorted(out, key=lambda s: s.rel)


def _keras_callbacks(cfg: TrainConfig, ckpt: Path, hook: ProgressHook) -> list[Any]:
    import keras

    class _Report(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            hook.batch(batch + 1, self.params.get("steps") or 0)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))
            hook.epoch(epoch + 1, cfg.epochs, {k: float(v) for k, v in logs.items()})

    return [
        # Validation AUC, not loss: the threshold is tuned afterwards, so ranking is what matters.
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.patience,
                                      restore_best_weights=True, verbose=0),
        keras.callbacks.ModelCheckpoint(ckpt, monitor="val_auc", mode="max",
                                        save_best_only=True, verbose=0),
        keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.3,
                                          patience=cfg.lr_patience, min_lr=1e-5, verbose=0),
        _Report(),
    ]


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced weights n / (2 n_c): each class contributes equally to the loss."""
    n = len(y)
    counts = np.bincount(np.asarray(y, dtype=int), minlength=2)
    return {c: float(n / (2 * counts[c])) if counts[c] else 1.0 for c in (0, 1)}


def predict_arrays(model: Any, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Probabilities for preprocessed arrays (the same single call serving makes, in batches)."""
    if len(x) == 0:
        return np.zeros((0,), np.float32)
    out = [np.asarray(model(x[i:i + batch_size], training=False), np.float32).reshape(-1)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def train(cfg: TrainConfig, hook: ProgressHook | None = None,
          runtime: Any | None = None) -> TrainResult:
    """Split, preprocess, train, tune the threshold on validation, evaluate the internal test."""
    import keras

    from pneumoscreen.model.network import build_cnn
    from pneumoscreen.model.runtime import RuntimeConfig, configure

    hook = hook or ProgressHook()
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {cfg.arch!r}; choose from {sorted(ARCHITECTURES)}")
    device = configure(runtime or RuntimeConfig())
    keras.utils.set_random_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"

    hook.stage("splitting by patient")
    root = training_root(cfg.data_dir)
    samples = _subset(scan_labelled(root), cfg.max_files)
    split = split_by_patient(samples, seed=cfg.seed, fractions=cfg.fractions,
                             source=str(root))
    if root != Path(cfg.data_dir) and (Path(cfg.data_dir) / "val").is_dir():
        split.notes.append("the official val/ folder (16 images) is not used: too few to tune on")
    split.notes.append("the official test/ folder is never read by training")
    write_manifest(split, out / MANIFEST_NAME)

    arrays: dict[str, Arrays] = {}
    for name, part in split.parts().items():
        hook.stage(f"preprocessing {name} ({len(part)} files)")
        arrays[name] = load_arrays(part, cfg.input_size, cache_dir=cache_dir,
                                   progress=hook.files(len(part)))
        if arrays[name].errors:
            log.warning("%d %s files could not be read and are left out: %s",
                        len(arrays[name].errors), name, arrays[name].errors)
    tr, va, te = arrays["train"], arrays["validation"], arrays["internal-test"]
    if len(set(tr.y.tolist())) < 2 or len(set(va.y.tolist())) < 2:
        raise ValueError("train and validation splits each need both classes: too few files?")

    train_ds = make_dataset(tr.x, tr.y, batch_size=cfg.batch_size, training=True, seed=cfg.seed,
                            augment=cfg.augment)
    val_ds = make_dataset(va.x, va.y, batch_size=128, training=False)

    arch = ARCHITECTURES[cfg.arch]
    model = build_cnn(cfg.input_size, arch["widths"], arch["dense"], arch["dropout"],
                      name=f"pneumoscreen_{cfg.arch.replace('-', '_')}")
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"),
                           keras.metrics.Recall(name="recall"),
                           keras.metrics.Precision(name="precision")])
    ckpt = out / "checkpoint.keras"
    hook.stage(f"training {cfg.arch} at {cfg.input_size}px on {device}")
    start = time.monotonic()
    import tensorflow as tf

    with tf.device(device):
        fit = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs,
                        class_weight=class_weights(tr.y), shuffle=False,  # tf.data shuffles
                        callbacks=_keras_callbacks(cfg, ckpt, hook), verbose=0)
    seconds = time.monotonic() - start
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    best_epoch = int(np.argmax(history["val_auc"])) + 1

    hook.stage("tuning the threshold on validation")
    val_scores = predict_arrays(model, va.x)
    threshold = M.select_threshold(va.y, val_scores, cfg.target_recall)
    validation = M.summarize(va.y, val_scores, threshold, n_boot=0)
    internal = {}
    if len(te.y):
        hook.stage("evaluating the internal test split")
        test_scores = predict_arrays(model, te.x)
        internal = M.summarize(te.y, test_scores, threshold, n_boot=cfg.n_boot, seed=cfg.seed)

    model_path = out / "model.keras"
    model.save(model_path)
    ckpt.unlink(missing_ok=True)  # the restored best weights are in model.keras
    version = cfg.version or dt.datetime.now(dt.timezone.utc).strftime("1.0.0+%Y%m%d%H%M")
    spec = ModelSpec(
        name=MODEL_NAME, version=version, input_size=cfg.input_size, threshold=threshold,
        trained=True, target_recall=cfg.target_recall,
        extra={
            "architecture": {"name": cfg.arch, **{k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in arch.items()},
                             "params": int(model.count_params())},
            "training": {"config": cfg.to_json(), "seconds": round(seconds, 1),
                         "epochs_run": len(history["loss"]), "best_epoch": best_epoch,
                         "device": device, "split_counts": split.counts(),
                         "split_manifest": MANIFEST_NAME,
                         "class_weights": class_weights(tr.y),
                         "unreadable_files": sum(len(a.errors) for a in arrays.values())},
            "history": history,
            "threshold_selection": {"split": "validation", "target_recall": cfg.target_recall,
                                    "rule": "highest threshold with validation recall >= target",
                                    "validation": _headline(validation)},
            "metrics": {"internal-test": _headline(internal) if internal else {},
                        "validation": _headline(validation)},
        },
    )
    write_sidecar(model_path, spec)
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps(
        {"validation": validation, "internal-test": internal}, indent=1, default=float) + "\n")
    spec.sha256 = file_sha256(model_path)

    if cfg.register:
        hook.stage("registering the model version")
        register_run(spec, internal, dataset=f"{root} (internal-test split, seed {cfg.seed})",
                     report_path=None)
    return TrainResult(out, model_path, spec, split, history, validation, internal, seconds)


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "auc", "threshold", "recall", "specificity", "precision", "accuracy", "f1",
            "tp", "fp", "tn", "fn", "ci95")
    return {k: m[k] for k in keys if k in m}


def register_run(spec: ModelSpec, internal: dict[str, Any], *, dataset: str,
                 report_path: str | None) -> None:
    """Record the model version and, when there is one, its internal-test evaluation."""
    from pneumoscreen.db.repository import model_version_for
    from pneumoscreen.db.session import session_scope
    from pneumoscreen.model.evaluate import record

    if internal:
        record(spec, internal, dataset=dataset, report_path=report_path)
        return
    with session_scope() as session:
        model_version_for(spec, session=session)

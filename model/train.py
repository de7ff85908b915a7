"""Training in small steps: split -> arrays -> fit (phases, resumable) -> calibrate, tune -> save.

:func:`train` chains the steps; the CLI only parses options and shows progress. The output folder
holds ``model.keras`` + ``model.json`` (the sidecar, see :mod:`pneumoscreen.model.bundle`),
``split_manifest.json``, ``history.json``, ``metrics.json``, and while training runs
``train_state.json`` with per-phase checkpoints, so ``screen train --resume OUT`` continues a run
that was stopped, from the last finished epoch.

Two phases for ImageNet backbones (Keras' transfer-learning recipe): the new head alone on the
frozen backbone, then the whole network at a lower learning rate with every BatchNormalization
layer kept in inference mode, so its ImageNet statistics are not overwritten by a few thousand
films in small batches. Networks trained from scratch (``cnn-*``) have one phase.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model import atypicality as A
from pneumoscreen.model import calibration as C
from pneumoscreen.model import metrics as M
from pneumoscreen.model import reference as R
from pneumoscreen.model import registration
from pneumoscreen.model.architectures import (
    LUNG_CROP,
    Architecture,
    backbone_layers,
    check_crop,
    get_architecture,
)
from pneumoscreen.model.augment import PRESETS, AugmentConfig
from pneumoscreen.model.bundle import ModelSpec, write_sidecar
from pneumoscreen.model.dataset import (
    MANIFEST_NAME,
    Arrays,
    Split,
    load_arrays,
    make_dataset,
    scan_labelled,
    split_by_patient,
    subtype_labels,
    training_root,
    write_manifest,
)
from pneumoscreen.model.evaluate import subtype_summary
from pneumoscreen.model.progress import Progress, Silent
from pneumoscreen.worker.ingest.files import file_sha256

log = logging.getLogger(__name__)

MODEL_NAME = "pneumoscreen-cnn"
CONFIG_NAME = "train_config.json"
STATE_NAME = "train_state.json"
MONITOR = "val_pneumonia_auc"
OUTPUT_MEANINGS = {
    "pneumonia": "probability of pneumonia (calibrated)",
    "viral": "probability that a pneumonia is viral rather than bacterial",
    "atypicality": "squared Mahalanobis distance of the image's features to the training "
                   "films', per dimension (about 1 for a typical training film)",
}


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the sidecar for reproduction)."""

    data_dir: Path
    out_dir: Path
    arch: str = "cnn-s"
    init: str = "none"  # "imagenet", "none" or a weights file
    input_size: int = 96  # the shipped cnn-s's; see model/bundled/MODEL_CARD.md
    epochs: int = 30  # the fine-tuning phase (the only phase of a cnn)
    head_epochs: int = 3  # phase 1 of a pretrained backbone
    batch_size: int = 32
    learning_rate: float = 1e-3  # phase 1 and cnn
    finetune_learning_rate: float = 2e-4  # phase 2, cosine-decayed
    patience: int = 6
    lr_patience: int = 2
    target_recall: float = 0.95
    seed: int = 42  # weights, shuffling and augmentation
    split_seed: int = 42  # the patient split: keep it fixed across ensemble members
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    augment: str = "standard"  # a name of augment.PRESETS
    subtype_weight: float = 0.5  # the viral/bacterial loss's share
    cache_dir: Path | None = None
    version: str | None = None
    n_boot: int = 2000
    max_files: int | None = None  # tests and smoke runs: the first N files of each class
    database_url: str | None = None  # where to record the model version; None: nowhere
    #: distillation: the teacher model (a path or ``bundled:NAME``); None trains on labels alone
    distill_from: str | None = None
    #: the teacher's share of each target: (1 - w) * label + w * teacher probability
    distill_weight: float = 0.5
    #: the network sees only the lung-field box of its input (``architectures.LUNG_CROP``)
    lung_crop: bool = False
    #: the box follows the chest: films registered to the training split's mean chest first
    register_chest: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("data_dir", "out_dir", "cache_dir"):
            data[key] = None if data[key] is None else str(data[key])
        data["fractions"] = list(self.fractions)
        data.pop("database_url")  # may hold a password; never stored in a sidecar
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        for key in ("data_dir", "out_dir", "cache_dir"):
            if kw.get(key) is not None:
                kw[key] = Path(kw[key])
        kw["fractions"] = tuple(kw.get("fractions", (0.70, 0.15, 0.15)))
        return cls(**kw)

    @property
    def crop(self) -> tuple[float, float, float, float] | None:
        return LUNG_CROP if self.lung_crop else None

    @property
    def augment_config(self) -> AugmentConfig | None:
        if self.augment not in PRESETS:
            raise ValueError(f"unknown augmentation {self.augment!r}; choose from "
                             f"{', '.join(PRESETS)}")
        return PRESETS[self.augment]


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


def epoch_line(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    """One epoch's figures, as training reports them."""
    return (f"epoch {epoch}/{epochs}  loss {logs.get('loss', 0):.4f}"
            f"  val_loss {logs.get('val_loss', 0):.4f}"
            f"  val_auc {logs.get(MONITOR, 0):.4f}"
            f"  val_viral_auc {logs.get('val_viral_auc', 0):.4f}"
            f"  lr {logs.get('learning_rate', 0):.2e}")


# ---------------------------------------------------------------------------------------------
# Step 1: the patient split.


def _subset(samples: list[Any], max_files: int | None) -> list[Any]:
    if not max_files:
        return samples
    out: list[Any] = []
    for label in (0, 1):
        out.extend([s for s in samples if s.label == label][:max_files])
    return sorted(out, key=lambda s: s.rel)


def make_split(cfg: TrainConfig) -> tuple[Path, Split]:
    """Split the training folder by patient and save the manifest into the output folder."""
    root = training_root(cfg.data_dir)
    samples = _subset(scan_labelled(root), cfg.max_files)
    split = split_by_patient(samples, seed=cfg.split_seed, fractions=cfg.fractions,
                             source=str(root))
    if root != Path(cfg.data_dir) and (Path(cfg.data_dir) / "val").is_dir():
        split.notes.append("the official val/ folder (16 images) is not used: too few to tune on")
    split.notes.append("the official test/ folder is never read by training")
    write_manifest(split, Path(cfg.out_dir) / MANIFEST_NAME)
    return root, split


# ---------------------------------------------------------------------------------------------
# Step 2: preprocessed arrays (cached).


def make_arrays(cfg: TrainConfig, split: Split, progress: Progress) -> dict[str, Arrays]:
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out_dir) / "cache"
    arrays: dict[str, Arrays] = {}
    for name, part in split.parts().items():
        stage = f"preprocessing {name}"
        progress.start(stage, len(part))
        arrays[name] = load_arrays(part, cfg.input_size, cache_dir=cache_dir,
                                   progress=lambda n, stage=stage: progress.advance(stage, n))
        if arrays[name].errors:
            log.warning("%d %s files could not be read and are left out: %s",
                        len(arrays[name].errors), name, arrays[name].errors)
    tr, va = arrays["train"], arrays["validation"]
    if len(set(tr.y.tolist())) < 2 or len(set(va.y.tolist())) < 2:
        raise ValueError("train and validation splits each need both classes: too few files?")
    return arrays


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced weights n / (2 n_c): each class contributes equally to the loss."""
    y = np.asarray(y, dtype=int)
    y = y[y >= 0]
    n = len(y)
    counts = np.bincount(y, minlength=2)
    return {c: float(n / (2 * counts[c])) if counts[c] else 1.0 for c in (0, 1)}


# ---------------------------------------------------------------------------------------------
# Step 3: fitting, in phases, resumable.


@dataclass
class Phase:
    name: str
    epochs: int
    learning_rate: float
    cosine: bool
    freeze_backbone: bool
    freeze_batchnorm: bool


def phases(cfg: TrainConfig, arch: Architecture) -> list[Phase]:
    if arch.pretrainable and cfg.init != "none":
        return [Phase("head", cfg.head_epochs, cfg.learning_rate, False, True, True),
                Phase("finetune", cfg.epochs, cfg.finetune_learning_rate, True, False, True)]
    # From scratch there are no statistics to protect and no features to keep.
    return [Phase("full", cfg.epochs, cfg.learning_rate, False, False, False)]


class _State:
    """``train_state.json``: finished phases, per-phase best score, patience and history."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"done": [], "phases": {}}
        if path.is_file():
            self.data = json.loads(path.read_text())

    def phase(self, name: str) -> dict[str, Any]:
        return self.data["phases"].setdefault(
            name, {"best": None, "best_epoch": None, "wait": 0, "history": {}})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)


def _callbacks(cfg: TrainConfig, phase: Phase, state: _State, best_path: Path,
               backup_dir: Path, progress: Progress, epochs_total: int,
               offset: int) -> list[Any]:
    import keras

    ph = state.phase(phase.name)

    class _BestAndPatience(keras.callbacks.Callback):
        """Early stopping on validation AUC whose state survives a restart (train_state.json)."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items()}
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))
            for k, v in logs.items():  # indexed by epoch: a repeated epoch overwrites itself
                ph["history"].setdefault(k, [])
                ph["history"][k] = [*ph["history"][k][:epoch], v]
            score = logs.get(MONITOR, float("nan"))
            # Per-epoch wall clock, so a run ended early (--finish) still knows its time.
            ph["epoch_seconds"] = [*ph.get("epoch_seconds", [])[:epoch],
                                   round(time.monotonic() - self._began, 1)]
            if ph["best"] is None or score > ph["best"]:
                ph.update(best=score, best_epoch=epoch + 1, wait=0)
                self.model.save_weights(best_path)
            else:
                ph["wait"] += 1
                if ph["wait"] >= cfg.patience:
                    self.model.stop_training = True
            state.save()
            progress.note(epoch_line(offset + epoch + 1, epochs_total, logs))

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._began = time.monotonic()
            progress.start("epoch", self.params.get("steps"))

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            progress.advance("epoch")

    cbs: list[Any] = [_BestAndPatience()]
    if not phase.cosine:
        cbs.append(keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, mode="max", factor=0.3, patience=cfg.lr_patience, min_lr=1e-5,
            verbose=0))
    # Last, so the epoch it records is one whose best/patience state was already saved.
    cbs.append(keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch",
                                                delete_checkpoint=True))
    return cbs


def _set_trainable(model: Any, phase: Phase) -> None:
    from keras import layers

    backbone = {id(layer) for layer in backbone_layers(model)}
    for layer in model.layers:
        if phase.freeze_backbone and id(layer) in backbone:
            layer.trainable = False
        elif phase.freeze_batchnorm and isinstance(layer, layers.BatchNormalization):
            layer.trainable = False  # in Keras 3 this also runs it in inference mode
        else:
            layer.trainable = True


def _compile(model: Any, cfg: TrainConfig, phase: Phase, steps: int) -> None:
    import keras

    lr: Any = phase.learning_rate
    if phase.cosine:
        lr = keras.optimizers.schedules.CosineDecay(phase.learning_rate,
                                                    decay_steps=max(1, steps * phase.epochs),
                                                    alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss={"pneumonia": "binary_crossentropy", "viral": "binary_crossentropy"},
        loss_weights={"pneumonia": 1.0, "viral": cfg.subtype_weight},
        # Weighted: the subtype AUC counts pneumonia images only (the others weigh 0).
        weighted_metrics={"pneumonia": [keras.metrics.AUC(name="auc")],
                          "viral": [keras.metrics.AUC(name="auc")]})


def teacher_targets(cfg: TrainConfig, part: Arrays, progress: Progress,
                    chunk_size: int = 64) -> dict[str, np.ndarray]:
    """Distillation targets for the training split: the label mixed with the teacher's
    probabilities, ``(1 - w) * label + w * teacher`` for both heads.

    The teacher sees the clean (unaugmented) image through its own input size and the one
    ``preprocess()``, so its targets are fixed per image and cost one pass (saved in
    ``teacher.npz``, reused on --resume). Normal images' viral targets carry zero weight anyway.
    """
    from pneumoscreen.model.bundle import load_model

    if not 0.0 <= cfg.distill_weight <= 1.0:
        raise ValueError(f"--distill-weight must lie in [0, 1], got {cfg.distill_weight}")
    path = Path(cfg.out_dir) / "teacher.npz"
    if path.is_file():
        saved = np.load(path)
        p_t, v_t = saved["pneumonia"], saved["viral"]
    else:
        teacher = load_model(cfg.distill_from)
        if "viral" not in (getattr(teacher.keras_model, "output_names", None) or []):
            raise ValueError(f"--distill-from {cfg.distill_from}: the teacher has no viral "
                             "output, both heads are distilled")
        size = teacher.spec.input_size
        x = part.x
        if size != cfg.input_size:
            cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out_dir) / "cache"
            x = load_arrays(part.samples, size, cache_dir=cache).x
        progress.start("teacher targets", len(x))
        ps, vs = [], []
        for i in range(0, len(x), chunk_size):
            scores = teacher.predict(x[i:i + chunk_size])
            ps.append(np.asarray(scores.pneumonia, np.float32).reshape(-1))
            vs.append(np.asarray(scores.viral, np.float32).reshape(-1))
            progress.advance("teacher targets", len(x[i:i + chunk_size]))
        p_t, v_t = np.concatenate(ps), np.concatenate(vs)
        np.savez(path, pneumonia=p_t, viral=v_t)
    w = cfg.distill_weight
    y = part.y.astype(np.float32)
    v = np.maximum(subtype_labels(part.samples), 0).astype(np.float32)
    return {"pneumonia": (1 - w) * y + w * p_t, "viral": (1 - w) * v + w * v_t}


def fit(cfg: TrainConfig, model: Any, arrays: dict[str, Arrays], progress: Progress,
        device: str, *, finish: bool = False) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run the phases (skipping those a previous run finished); the model ends with the best
    validation-AUC weights of the last phase. Returns the joined history and per-phase facts.

    ``finish`` (``screen train --resume --finish``): train no further; an unfinished phase ends
    at its best epoch so far, and a phase that never started is skipped."""
    import tensorflow as tf

    arch = get_architecture(cfg.arch)
    out = Path(cfg.out_dir)
    state = _State(out / STATE_NAME)
    tr, va = arrays["train"], arrays["validation"]
    v_tr, v_va = subtype_labels(tr.samples), subtype_labels(va.samples)
    cw, vw = class_weights(tr.y), class_weights(v_tr)
    soft = None
    if cfg.distill_from:
        progress.note(f"distilling {cfg.distill_from} (teacher share {cfg.distill_weight:g})")
        soft = teacher_targets(cfg, tr, progress)
    train_ds = make_dataset(tr.x, tr.y, batch_size=cfg.batch_size, training=True, seed=cfg.seed,
                            augment=cfg.augment_config, viral=v_tr, class_weight=cw,
                            viral_weight=vw, soft=soft)
    # Validation AUC is unweighted for pneumonia (weights 1) and pneumonia-only for the subtype.
    val_ds = make_dataset(va.x, va.y, batch_size=128, training=False, viral=v_va)
    steps = int(np.ceil(len(tr.x) / cfg.batch_size))
    plan = phases(cfg, arch)
    total = sum(p.epochs for p in plan)
    offset = 0
    facts: dict[str, Any] = {}
    for phase in plan:
        best_path = out / f"best-{phase.name}.weights.h5"
        ph = state.phase(phase.name)
        if phase.name in state.data["done"]:
            progress.note(f"phase {phase.name}: finished in an earlier run, skipped")
            model.load_weights(best_path)
        elif finish:
            if not best_path.is_file():
                progress.note(f"phase {phase.name}: not started, skipped (--finish)")
                continue
            progress.note(f"phase {phase.name}: ended at its best epoch so far, "
                          f"{ph['best_epoch']} (--finish)")
            model.load_weights(best_path)
            ph["seconds"] = round(sum(ph.get("epoch_seconds", [])), 1)
            state.data["done"].append(phase.name)
            state.save()
        else:
            _set_trainable(model, phase)
            _compile(model, cfg, phase, steps)
            n_train = int(sum(np.prod(w.shape) for w in model.trainable_weights))
            progress.note(f"phase {phase.name}: {phase.epochs} epochs at lr {phase.learning_rate:g}"
                       f" on {device} ({n_train:,} trainable parameters)")
            start = time.monotonic()
            with tf.device(device):
                model.fit(train_ds, validation_data=val_ds, epochs=phase.epochs, verbose=0,
                          shuffle=False,  # tf.data shuffles
                          callbacks=_callbacks(cfg, phase, state, best_path,
                                               out / "backup" / phase.name, progress, total,
                                               offset))
            ph["seconds"] = round(ph.get("seconds", 0.0) + time.monotonic() - start, 1)
            if best_path.is_file():
                model.load_weights(best_path)
            state.data["done"].append(phase.name)
            state.save()
        facts[phase.name] = {"epochs_run": len(ph["history"].get("loss", [])),
                             "best_epoch": ph["best_epoch"], "best_val_auc": ph["best"],
                             "seconds": ph.get("seconds", 0.0),
                             "learning_rate": phase.learning_rate}
        offset += phase.epochs
    history: dict[str, list[float]] = {}
    for phase in plan:
        for k, v in state.phase(phase.name)["history"].items():
            history.setdefault(k, []).extend(v)
    return history, facts


# ---------------------------------------------------------------------------------------------
# Step 4: calibration and the recall-tuned threshold.


def predict_arrays(model: Any, x: np.ndarray, chunk_size: int = 128
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Pneumonia and (when the model has it) viral probabilities, ``chunk_size`` per call."""
    if len(x) == 0:
        return np.zeros((0,), np.float32), None
    ps, vs = [], []
    for i in range(0, len(x), chunk_size):
        out = model(x[i:i + chunk_size], training=False)
        if isinstance(out, dict):
            ps.append(np.asarray(out["pneumonia"], np.float32).reshape(-1))
            vs.append(np.asarray(out["viral"], np.float32).reshape(-1))
        else:
            ps.append(np.asarray(out, np.float32).reshape(-1))
    return np.concatenate(ps), (np.concatenate(vs) if vs else None)


@dataclass
class Tuned:
    temperature: float
    threshold: float
    validation: dict[str, Any]
    internal_test: dict[str, Any]
    calibration: dict[str, Any] = field(default_factory=dict)
    #: the validation score histogram and operating points (:mod:`pneumoscreen.model.reference`)
    reference: dict[str, Any] = field(default_factory=dict)


def tune(model: Any, arrays: dict[str, Arrays], progress: Progress, *, target_recall: float,
         n_boot: int, seed: int) -> Tuned:
    """Fit the temperature and the threshold on validation; evaluate the internal test.

    ``model``'s ``pneumonia`` output must be ``sigmoid`` of its ``pneumonia_logit`` layer, which
    :func:`pneumoscreen.model.calibration.calibrated_model` then rescales.
    """
    va, te = arrays["validation"], arrays["internal-test"]
    progress.note("calibrating and tuning the threshold on validation")
    raw_val, val_viral = predict_arrays(model, va.x)
    temperature = C.fit_temperature(va.y, raw_val)
    val_scores = C.apply_temperature(raw_val, temperature)
    threshold = M.select_threshold(va.y, val_scores, target_recall)
    validation = M.summarize(va.y, val_scores, threshold, n_boot=0)
    validation["subtype"] = subtype_summary(va.samples, val_viral, n_boot=0, seed=seed)
    calib = {"method": "temperature", "temperature": temperature, "fitted_on": "validation",
             "validation_nll_before": C.nll(va.y, raw_val),
             "validation_nll_after": C.nll(va.y, val_scores),
             "validation_ece_before": C.expected_calibration_error(va.y, raw_val),
             "validation_ece_after": C.expected_calibration_error(va.y, val_scores)}
    internal: dict[str, Any] = {}
    test_scores = None
    if len(te.y):
        progress.note("evaluating the internal test split")
        raw_test, test_viral = predict_arrays(model, te.x)
        test_scores = C.apply_temperature(raw_test, temperature)
        internal = M.summarize(te.y, test_scores, threshold, n_boot=n_boot, seed=seed)
        internal["subtype"] = subtype_summary(te.samples, test_viral, n_boot=n_boot,
                                              seed=seed)
    reference = R.sidecar_record(va.y, val_scores, te.y if len(te.y) else None, test_scores,
                                 threshold=threshold)
    return Tuned(temperature, threshold, validation, internal, calib, reference)


# ---------------------------------------------------------------------------------------------
# Step 5: save the calibrated model with its sidecar.


def headline(m: dict[str, Any]) -> dict[str, Any]:
    """The figures a sidecar keeps of a summary."""
    keys = ("n", "auc", "threshold", "recall", "specificity", "precision", "accuracy", "f1",
            "tp", "fp", "tn", "fn", "ci95", "subtype")
    return {k: m[k] for k in keys if k in m}


def tuned_record(tuned: Tuned, target_recall: float) -> dict[str, Any]:
    """What the sidecar says about the threshold and the figures behind it."""
    return {
        "threshold_selection": {"split": "validation", "target_recall": target_recall,
                                "rule": f"{M.THRESHOLD_RULE}, on calibrated scores",
                                "validation": headline(tuned.validation)},
        "metrics": {"internal-test": headline(tuned.internal_test),
                    "validation": headline(tuned.validation)},
        **tuned.reference,
    }


def write_metrics(out: Path, tuned: Tuned) -> None:
    (Path(out) / "metrics.json").write_text(json.dumps(
        {"validation": tuned.validation, "internal-test": tuned.internal_test}, indent=1,
        default=float) + "\n")


def save(cfg: TrainConfig, model: Any, tuned: Tuned, *, root: Path, split: Split,
         history: dict[str, list[float]], facts: dict[str, Any], arrays: dict[str, Arrays],
         device: str) -> tuple[Path, ModelSpec]:
    out = Path(cfg.out_dir)
    arch = get_architecture(cfg.arch)
    calibrated = C.calibrated_model(model, tuned.temperature)
    guard = A.fit_guard(calibrated, arrays["train"].x, arrays["validation"].x)
    final = A.with_atypicality(calibrated, guard)
    scope = {**A.threshold_on(final, arrays["validation"].x), **A.guard_record([guard])}
    model_path = out / "model.keras"
    final.save(model_path)
    version = cfg.version or dt.datetime.now(dt.timezone.utc).strftime("2.0.0+%Y%m%d%H%M")
    seconds = sum(f.get("seconds", 0.0) for f in facts.values())
    best = facts[list(facts)[-1]]
    spec = ModelSpec(
        name=MODEL_NAME, version=version, input_size=cfg.input_size, threshold=tuned.threshold,
        trained=True, target_recall=cfg.target_recall,
        extra={
            "architecture": {"name": cfg.arch, "family": arch.family, "init": cfg.init,
                             **{k: list(v) if isinstance(v, tuple) else v
                                for k, v in arch.settings.items()},
                             "last_conv": arch.last_conv,
                             **({"crop": list(cfg.crop)} if cfg.crop else {}),
                             **({"register_chest": registration.describe()}
                                if cfg.register_chest else {}),
                             "params": int(final.count_params())},
            "outputs": OUTPUT_MEANINGS,
            "calibration": tuned.calibration,
            "atypicality": scope,
            "training": {"config": cfg.to_json(), "seconds": round(seconds, 1),
                         "epochs_run": len(history.get("loss", [])),
                         "best_epoch": best["best_epoch"], "phases": facts,
                         "device": device, "split_counts": split.counts(),
                         "split_manifest": MANIFEST_NAME,
                         "class_weights": class_weights(arrays["train"].y),
                         "unreadable_files": sum(len(a.errors) for a in arrays.values())},
            "history": history,
            **tuned_record(tuned, cfg.target_recall),
        },
    )
    write_sidecar(model_path, spec)
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    write_metrics(out, tuned)
    spec.sha256 = file_sha256(model_path)
    return model_path, spec


def _cleanup(out: Path) -> None:
    """Drop what only a resume needed (the final model holds the best weights)."""
    shutil.rmtree(out / "backup", ignore_errors=True)
    for p in out.glob("best-*.weights.h5"):
        p.unlink()


def train(cfg: TrainConfig, progress: Progress | None = None,
          runtime: Any | None = None, *, finish: bool = False) -> TrainResult:
    """Split, preprocess, fit, calibrate, tune the threshold on validation, evaluate, save."""
    import keras

    from pneumoscreen.model.architectures import build
    from pneumoscreen.model.runtime import RuntimeConfig, configure

    progress = progress or Silent()
    check_crop(cfg.arch, cfg.crop, cfg.register_chest)  # before any work
    _ = cfg.augment_config
    device = configure(runtime or RuntimeConfig())
    keras.utils.set_random_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(cfg.to_json(), indent=1) + "\n")

    progress.note("splitting by patient")
    root, split = make_split(cfg)
    arrays = make_arrays(cfg, split, progress)
    # The template is the training split's own mean film: validation and test never shape it.
    template = registration.mean_chest(arrays["train"].x) if cfg.register_chest else None
    model = build(cfg.arch, cfg.input_size, cfg.init, crop=cfg.crop, template=template)
    history, facts = fit(cfg, model, arrays, progress, device, finish=finish)
    if not facts:
        raise ValueError("--finish: no epoch has finished yet, there is no model to keep")
    tuned = tune(model, arrays, progress, target_recall=cfg.target_recall, n_boot=cfg.n_boot,
                 seed=cfg.seed)
    model_path, spec = save(cfg, model, tuned, root=root, split=split, history=history,
                            facts=facts, arrays=arrays, device=device)
    _cleanup(out)
    if cfg.database_url:
        progress.note("registering the model version")
        register_run(spec, tuned.internal_test, url=cfg.database_url,
                     dataset=f"{root} (internal-test split, seed {cfg.split_seed})",
                     report_path=None)
    return TrainResult(out, model_path, spec, split, history, tuned.validation,
                       tuned.internal_test, spec.extra["training"]["seconds"])


def resume_config(out_dir: Path) -> TrainConfig:
    """The configuration of the interrupted run in ``out_dir``."""
    path = Path(out_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no {CONFIG_NAME}: nothing to resume there")
    return TrainConfig.from_json(json.loads(path.read_text()))


def register_run(spec: ModelSpec, internal: dict[str, Any], *, url: str, dataset: str,
                 report_path: str | None) -> None:
    """Record the model version and, when there is one, its internal-test evaluation."""
    from pneumoscreen.db.queries import model_version_for
    from pneumoscreen.db.session import session_scope
    from pneumoscreen.model.evaluate import record

    if internal:
        record(spec, internal, url=url, dataset=dataset, report_path=report_path)
        return
    with session_scope(url) as session:
        model_version_for(spec, session=session)

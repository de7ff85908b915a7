"""Ensembles: several trained models averaged in one model call, as one model version.

The members' calibrated logits (``logit / T_i``) are averaged, the mean is calibrated once more
on validation (its own temperature) and the recall-tuned threshold is chosen on validation, as for
a single model. The viral probability is the members' mean. The result is one standard Keras
graph (the members are nested models), saved as one ``.keras`` file with one sidecar and one
sha256, so serving, the registry and the worker treat it like any other model.

Every member must come from the same patient split (the same split manifest), or the validation
and internal-test figures would mix patients a member trained on.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumoscreen.model import atypicality as A
from pneumoscreen.model.architectures import load_keras
from pneumoscreen.model.bundle import (
    ModelSpec,
    read_spec,
    verified_spec,
    write_sidecar,
)
from pneumoscreen.model.calibration import calibrated_model
from pneumoscreen.model.dataset import MANIFEST_NAME, Arrays, load_arrays, split_from_manifest
from pneumoscreen.model.progress import Progress, Silent
from pneumoscreen.model.train import (
    MODEL_NAME,
    OUTPUT_MEANINGS,
    Tuned,
    tune,
    tuned_record,
    write_metrics,
)
from pneumoscreen.worker.ingest.files import file_sha256

ENSEMBLE_ARCH = "ensemble"


class EnsembleError(ValueError):
    """The members cannot form one ensemble (different splits or input sizes)."""


@dataclass
class EnsembleResult:
    model_path: Path
    spec: ModelSpec
    tuned: Tuned


def member_outputs(model: Any, index: int, guard_layers: tuple[str, ...] = ()) -> Any:
    """A member as a nested model: its input -> {scaled pneumonia logit, viral probability,
    and ``guard_j``: the activations of each layer its guard measures}."""
    import keras

    scaled = model.get_layer("temperature").output if _has_layer(model, "temperature") else (
        model.get_layer("pneumonia_logit").output)
    outputs = {"logit": scaled, "viral": model.get_layer("viral").output}
    outputs.update({f"guard_{j}": model.get_layer(name).output
                    for j, name in enumerate(guard_layers)})
    return keras.Model(model.input, outputs, name=f"member_{index}")


def _has_layer(model: Any, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _member_record(spec: ModelSpec) -> dict[str, Any]:
    """What an ensemble's sidecar says of one member (its box and registration, if any)."""
    arch = spec.extra.get("architecture") or {}
    return {"version": spec.version, "sha256": spec.sha256, "architecture": arch.get("name"),
            "params": arch.get("params"), "last_conv": arch.get("last_conv"),
            **{k: arch[k] for k in ("crop", "register_chest") if k in arch},
            "internal-test": (spec.extra.get("metrics") or {}).get("internal-test")}


def build_ensemble(members: list[Any], input_size: int,
                   guards: list[A.Guard] | None = None) -> Any:
    """The uncalibrated ensemble: ``pneumonia_logit`` (the mean member logit), ``pneumonia``
    (its sigmoid), ``viral`` (the mean viral probability) and, given each member's guard,
    ``atypicality`` (the mean of the members' scores); one input, one call."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 1), name="image")
    outs = [member_outputs(m, i, guards[i].layers if guards else ())(inputs)
            for i, m in enumerate(members)]
    if len(outs) == 1:
        logit = layers.Identity(name="pneumonia_logit")(outs[0]["logit"])
        viral = layers.Identity(name="viral")(outs[0]["viral"])
    else:
        logit = layers.Average(name="pneumonia_logit")([o["logit"] for o in outs])
        viral = layers.Average(name="viral")([o["viral"] for o in outs])
    prob = layers.Activation("sigmoid", dtype="float32", name="pneumonia")(logit)
    outputs = {"pneumonia": prob, "viral": viral}
    if guards is not None:
        outputs["atypicality"] = A.output_layer([
            A.guard_branch([o[f"guard_{j}"] for j in range(len(g.layers))], g, i)
            for i, (o, g) in enumerate(zip(outs, guards, strict=True))])
    return keras.Model(inputs, outputs, name="pneumoscreen_ensemble")


def _shared_manifest(paths: list[Path]) -> dict[str, Any]:
    manifests = []
    for path in paths:
        spec = read_spec(path)
        name = (spec.extra.get("training") or {}).get("split_manifest", MANIFEST_NAME)
        mpath = Path(path).parent / name
        if not mpath.is_file():
            raise EnsembleError(f"{path}: no split manifest beside it ({mpath.name})")
        manifests.append(json.loads(mpath.read_text()))
    first = manifests[0]["files"]
    for path, other in zip(paths[1:], manifests[1:], strict=True):
        if other["files"] != first:
            raise EnsembleError(f"{path} was trained on another patient split than {paths[0]}")
    return manifests[0]


def make_ensemble(paths: list[Path], out_dir: Path, data_dir: Path, *, target_recall: float = 0.95,
                  n_boot: int = 2000, seed: int = 42, version: str | None = None,
                  cache_dir: Path | None = None, progress: Progress | None = None
                  ) -> EnsembleResult:
    """Average the models at ``paths`` into one, calibrate and tune it on the shared validation
    split, evaluate it on the shared internal test, and save it into ``out_dir``."""

    from pneumoscreen.model.dataset import training_root

    progress = progress or Silent()
    paths = [Path(p) for p in paths]
    if not paths:
        raise EnsembleError("an ensemble needs at least one member")
    specs = [verified_spec(p) for p in paths]
    sizes = {s.input_size for s in specs}
    if len(sizes) != 1:
        raise EnsembleError(f"members have different input sizes {sorted(sizes)}")
    size = sizes.pop()
    manifest = _shared_manifest(paths)
    root = training_root(data_dir)
    parts = split_from_manifest(manifest, root).parts()
    arrays: dict[str, Arrays] = {}
    for name in ("train", "validation", "internal-test"):
        stage = f"preprocessing {name}"
        progress.start(stage, len(parts[name]))
        arrays[name] = load_arrays(parts[name], size, cache_dir=cache_dir,
                                   progress=lambda n, stage=stage: progress.advance(stage, n))
    members = [load_keras(p) for p in paths]
    progress.note("fitting the atypicality score on the training split")
    guards = [A.fit_guard(m, arrays["train"].x, arrays["validation"].x) for m in members]
    raw = build_ensemble(members, size, guards)
    tuned = tune(raw, arrays, progress, target_recall=target_recall, n_boot=n_boot, seed=seed)
    final = calibrated_model(raw, tuned.temperature)
    scope = {**A.threshold_on(final, arrays["validation"].x), **A.guard_record(guards)}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.keras"
    final.save(model_path)
    shutil.copyfile(paths[0].parent / (specs[0].extra.get("training") or {}).get(
        "split_manifest", MANIFEST_NAME), out / MANIFEST_NAME)
    spec = ModelSpec(
        name=MODEL_NAME,
        version=version or dt.datetime.now(dt.timezone.utc).strftime("2.0.0-ens+%Y%m%d%H%M"),
        input_size=size, threshold=tuned.threshold, trained=True, target_recall=target_recall,
        extra={
            "architecture": {
                "name": ENSEMBLE_ARCH, "params": int(final.count_params()),
                "members": [_member_record(s) for s in specs],
                "combination": "mean of the members' calibrated logits, then a temperature",
            },
            "outputs": OUTPUT_MEANINGS,
            "calibration": tuned.calibration,
            "atypicality": scope,
            "training": {"split_manifest": MANIFEST_NAME, "split_source": manifest.get("source"),
                         "seconds": sum(float((s.extra.get("training") or {}).get("seconds", 0))
                                        for s in specs)},
            "history": (specs[0].extra.get("history") or {}),
            **tuned_record(tuned, target_recall),
        })
    write_sidecar(model_path, spec)
    write_metrics(out, tuned)
    spec.sha256 = file_sha256(model_path)
    return EnsembleResult(model_path, spec, tuned)


__all__ = ["EnsembleError", "build_ensemble", "make_ensemble"]


def reguard(model_path: Path, data_dir: Path, out_dir: Path, version: str) -> Path:
    """Re-fit the guard of a saved ensemble (:mod:`pneumoscreen.model.atypicality`'s current
    layers) on its own split and save it as ``version`` into ``out_dir``: the same members and
    temperature, so ``pneumonia`` and ``viral`` are unchanged (checked on the validation
    split), a new ``atypicality``."""
    import numpy as np

    from pneumoscreen.model.dataset import training_root

    model_path = Path(model_path)
    spec = read_spec(model_path)
    manifest_path = model_path.parent / MANIFEST_NAME
    parts = split_from_manifest(json.loads(manifest_path.read_text()),
                                training_root(data_dir)).parts()
    train_x = load_arrays(parts["train"], spec.input_size).x
    val_x = load_arrays(parts["validation"], spec.input_size).x
    old = load_keras(model_path)
    members = [layer for layer in old.layers if layer.name.startswith("member_")]
    if not members:
        raise EnsembleError(f"{model_path} is not an ensemble (no member_ layers)")
    guards = [A.fit_guard(m, train_x, val_x) for m in members]
    temperature = 1.0 / float(old.get_layer("temperature").scale)
    final = calibrated_model(build_ensemble(members, spec.input_size, guards), temperature)
    def outputs(model: Any, name: str) -> np.ndarray:
        return np.concatenate([np.asarray(model(val_x[i:i + 128])[name])
                               for i in range(0, len(val_x), 128)])

    for name in ("pneumonia", "viral"):
        if not np.allclose(outputs(old, name), outputs(final, name), atol=1e-5):
            raise EnsembleError(f"re-fitting the guard changed the {name} output")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / model_path.name
    final.save(target)
    shutil.copyfile(manifest_path, out / MANIFEST_NAME)
    spec.version = version
    spec.extra["atypicality"] = {**A.threshold_on(final, val_x), **A.guard_record(guards)}
    spec.extra["architecture"]["params"] = int(final.count_params())
    write_sidecar(target, spec)
    return target

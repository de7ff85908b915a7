"""How far a film lies from the training films, in the network's own features.

For each measured layer (the penultimate features, and for MobileNetV2 also a middle block,
:data:`MIDDLE_LAYERS`) the score is the squared Mahalanobis distance of the image's pooled
activations to the training split's, in the first ``k`` principal components with a Ledoit-Wolf
covariance, divided by ``k`` and by that layer's validation 99th percentile (so 1 is the edge of
the validation films, on every layer). A network's score is the largest of its layers'; an
ensemble's is the mean of its members'. It is built into the saved model as a third output,
``atypicality``, from standard layers only (pooling, a projection ``Dense``, a square, a sum, a
maximum), so one ``.keras`` file still carries everything and loads with ``safe_mode``. The
threshold is the validation split's 99th percentile of the output, stored in the sidecar.

Why a middle block: the penultimate features keep what separates pneumonia from normal in
children, and little else; an adult's larger chest, bones and proportions still show a block
earlier. On the five adult chest films of ``../shared/dicom/chest`` with their ages removed the
features alone reach 2 of 5 above the threshold, with ``block_8_add`` (14 x 14 at 224 px) 4 of 5,
at 0.4 % of the internal test (``python -m pneumoscreen.model.atypicality`` re-fits a saved model;
``screen bench scope`` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model.architectures import FEATURES_LAYER, load_keras

DEFAULT_COMPONENTS = 64
DEFAULT_QUANTILE = 0.99
#: Middle layers the guard measures besides the features, where a network has them.
MIDDLE_LAYERS = ("block_8_add",)  # MobileNetV2 (measured); other families: features only


@dataclass(frozen=True)
class Projection:
    """``score = sum((f @ kernel + bias) ** 2) / k``."""

    kernel: np.ndarray  # (features, k)
    bias: np.ndarray  # (k,)

    @property
    def k(self) -> int:
        return int(self.kernel.shape[1])

    def score(self, features: np.ndarray) -> np.ndarray:
        v = np.asarray(features, np.float64) @ self.kernel + self.bias
        return (v * v).sum(axis=1) / self.k


def fit_projection(features: np.ndarray, components: int = DEFAULT_COMPONENTS) -> Projection:
    """PCA to ``components`` dimensions, then a whitening by the Ledoit-Wolf precision."""
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    f = np.asarray(features, np.float64)
    k = int(min(components, f.shape[1], max(1, f.shape[0] - 1)))
    pca = PCA(n_components=k, random_state=0).fit(f)
    z = pca.transform(f)
    lw = LedoitWolf().fit(z)
    # Whitening by the covariance's eigenvectors: d^2 = ||(z - mu) W||^2 with W = V diag(1/sqrt
    # lambda); a floor on lambda keeps degenerate (near-constant) features finite.
    lam, vec = np.linalg.eigh(lw.covariance_)
    white = vec / np.sqrt(np.maximum(lam, 1e-6 * max(float(lam.max()), 1e-12)))
    kernel = pca.components_.T @ white
    bias = -(pca.mean_ @ kernel) - lw.location_ @ white
    return Projection(kernel.astype(np.float32), bias.astype(np.float32))


def features_layer(net: Any) -> str:
    """The penultimate features: ``features`` in v2 networks, ``fc`` in the wave-1 ``cnn-s``."""
    names = {layer.name for layer in net.layers}
    for name in (FEATURES_LAYER, "fc"):
        if name in names:
            return name
    raise ValueError(f"{net.name} has no features layer ({FEATURES_LAYER} or fc)")


def guard_layers(net: Any) -> tuple[str, ...]:
    """The layers the guard measures in ``net``: the features, then any middle layer."""
    names = {layer.name for layer in net.layers}
    return (features_layer(net), *[n for n in MIDDLE_LAYERS if n in names])


@dataclass(frozen=True)
class Guard:
    """One network's guard: per layer a projection and its validation quantile."""

    layers: tuple[str, ...]
    projections: tuple[Projection, ...]
    scales: tuple[float, ...]


def pooled(tensor: Any, name: str) -> Any:
    """A layer's activations as one vector per image (the mean over space for feature maps)."""
    from keras import layers

    return layers.GlobalAveragePooling2D(name=name)(tensor) if len(tensor.shape) == 4 else tensor


def guard_net(net: Any, names: tuple[str, ...]) -> Any:
    """Input -> the pooled activations of each of ``names``."""
    import keras

    return keras.Model(net.input, [pooled(net.get_layer(n).output, f"guard_pool_{j}")
                                   for j, n in enumerate(names)])


def layer_features(net: Any, x: np.ndarray, chunk_size: int = 128) -> list[np.ndarray]:
    outs = [net(x[i:i + chunk_size], training=False) for i in range(0, len(x), chunk_size)]
    outs = [o if isinstance(o, list | tuple) else [o] for o in outs]  # one layer: one tensor
    return [np.concatenate([np.asarray(o[j], np.float32) for o in outs])
            for j in range(len(outs[0]))]


def fit_guard(net: Any, train_x: np.ndarray, validation_x: np.ndarray,
              quantile: float = DEFAULT_QUANTILE) -> Guard:
    """Fit each guard layer's projection on the training split and its scale (the validation
    ``quantile`` of its score) on the validation split."""
    names = guard_layers(net)
    fnet = guard_net(net, names)
    projections = tuple(fit_projection(f) for f in layer_features(fnet, train_x))
    scales = tuple(max(float(np.quantile(p.score(f), quantile)), 1e-6) for p, f in
                   zip(projections, layer_features(fnet, validation_x), strict=True))
    return Guard(names, projections, scales)


def score_branch(features: Any, proj: Projection, index: int | str = 0,
                 scale: float = 1.0) -> Any:
    """The score as layers on a features tensor: a fixed projection, a square, a mean (over
    the ``k`` components, divided by ``scale``)."""
    from keras import layers

    dense = layers.Dense(proj.k, name=f"atypicality_projection_{index}", trainable=False)
    v = dense(features)
    dense.set_weights([proj.kernel, proj.bias])
    squared = layers.Multiply(name=f"atypicality_square_{index}")([v, v])
    total = layers.Dense(1, use_bias=False, trainable=False, name=f"atypicality_sum_{index}")
    score = total(squared)
    total.set_weights([np.full((proj.k, 1), 1.0 / (proj.k * scale), np.float32)])
    return score


def guard_branch(tensors: list[Any], guard: Guard, index: int = 0) -> Any:
    """A network's guard score as layers on its guard layers' activations: each layer's score
    on its own scale, the largest of them."""
    from keras import layers

    scores = [score_branch(pooled(t, f"atypicality_pool_{index}_{j}"), p, f"{index}_{j}", s)
              for j, (t, p, s) in enumerate(zip(tensors, guard.projections, guard.scales,
                                                strict=True))]
    return layers.Maximum(name=f"atypicality_max_{index}")(scores) if len(scores) > 1 else (
        scores[0])


def output_layer(scores: list[Any]) -> Any:
    from keras import layers

    mean = layers.Average(name="atypicality_mean")(scores) if len(scores) > 1 else scores[0]
    return layers.Activation("linear", dtype="float32", name="atypicality")(mean)


def with_atypicality(keras_model: Any, guard: Guard) -> Any:
    """A single network with a third output, ``atypicality``."""
    import keras

    score = guard_branch([keras_model.get_layer(n).output for n in guard.layers], guard)
    out = keras_model.output
    outputs = ({k: v for k, v in dict(out).items() if k != "atypicality"}
               if isinstance(out, dict) else {"pneumonia": out})  # wave 1: one output
    outputs["atypicality"] = output_layer([score])
    return keras.Model(keras_model.input, outputs, name=keras_model.name)


def threshold_on(model: Any, validation_x: np.ndarray, quantile: float = DEFAULT_QUANTILE,
                 chunk_size: int = 128) -> dict[str, Any]:
    """The validation quantile of the model's ``atypicality`` output, and what the sidecar
    records about the score."""
    val = np.concatenate([np.asarray(model(validation_x[i:i + chunk_size],
                                           training=False)["atypicality"]).reshape(-1)
                          for i in range(0, len(validation_x), chunk_size)])
    threshold = float(np.quantile(val, quantile))
    return {"method": "mahalanobis", "covariance": "Ledoit-Wolf", "fitted_on": "train",
            "threshold": threshold, "threshold_rule": f"validation {quantile:.0%} quantile",
            "validation_above": float((val > threshold).mean())}


def guard_record(guards: list[Guard]) -> dict[str, Any]:
    """What the sidecar says of the guard's layers."""
    return {"components": guards[0].projections[0].k, "layers": list(guards[0].layers),
            "combination": "each layer's score over its validation 99th percentile; the largest "
                           "per network; the mean over ensemble members"}


def attach(model_path: Path, data_dir: Path, out_dir: Path, version: str | None = None) -> Path:
    """Give a saved single model the ``atypicality`` output (fitted on its own training split,
    thresholded on its validation split; an earlier one is replaced) and save it, with its
    sidecar, into ``out_dir`` (as ``version`` if given)."""
    import json
    import shutil

    from pneumoscreen.model.bundle import read_spec, write_sidecar
    from pneumoscreen.model.dataset import (
        MANIFEST_NAME,
        load_arrays,
        split_from_manifest,
        training_root,
    )

    spec = read_spec(model_path)
    manifest = Path(model_path).parent / (spec.extra.get("training") or {}).get(
        "split_manifest", MANIFEST_NAME)
    parts = split_from_manifest(json.loads(manifest.read_text()),
                                training_root(data_dir)).parts()
    train = load_arrays(parts["train"], spec.input_size).x
    validation = load_arrays(parts["validation"], spec.input_size).x
    model = load_keras(model_path)
    guard = fit_guard(model, train, validation)
    final = with_atypicality(model, guard)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / Path(model_path).name
    final.save(target)
    spec.extra["atypicality"] = {**threshold_on(final, validation), **guard_record([guard])}
    if version:
        spec.version = version
    spec.extra.setdefault("outputs", {})["atypicality"] = "see the model card"
    write_sidecar(target, spec)
    shutil.copyfile(manifest, out / MANIFEST_NAME)
    return target


if __name__ == "__main__":
    import sys

    # python -m pneumoscreen.model.atypicality MODEL DATA OUT [VERSION]: an ensemble is
    # re-fitted as VERSION (its members kept), a single network gets the output attached.
    from pneumoscreen.model.bundle import read_spec

    model_path, data, out = (Path(a) for a in sys.argv[1:4])
    if (read_spec(model_path).extra.get("architecture") or {}).get("name") == "ensemble":
        from pneumoscreen.model.ensemble import reguard

        print(reguard(model_path, data, out, sys.argv[4]))
    else:
        print(attach(model_path, data, out, sys.argv[4] if len(sys.argv) > 4 else None))

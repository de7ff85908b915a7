"""How far a film lies from the training films, in the network's own penultimate features.

The score is the squared Mahalanobis distance of an image's pooled features to the training
split's, in the feature space's first ``k`` principal components with a Ledoit-Wolf covariance,
divided by ``k`` (about 1 for a typical training film). It is built into the saved model as a
third output, ``atypicality``, from standard layers only (a projection ``Dense``, a square, a
sum), so one ``.keras`` file still carries everything and loads with ``safe_mode``. For an
ensemble it is the mean of its members' scores. The threshold is the validation split's 99th
percentile, stored in the sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscreen.model.architectures import FEATURES_LAYER

DEFAULT_COMPONENTS = 64
DEFAULT_QUANTILE = 0.99


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


def feature_net(net: Any) -> Any:
    """Input -> pooled features of a single (not ensemble) network."""
    import keras

    return keras.Model(net.input, net.get_layer(features_layer(net)).output)


def features_of(net: Any, x: np.ndarray, chunk_size: int = 128) -> np.ndarray:
    return np.concatenate([np.asarray(net(x[i:i + chunk_size], training=False), np.float32)
                           for i in range(0, len(x), chunk_size)])


def score_branch(features: Any, proj: Projection, index: int = 0) -> Any:
    """The score as layers on a features tensor: a fixed projection, a square, a mean."""
    from keras import layers

    dense = layers.Dense(proj.k, name=f"atypicality_projection_{index}", trainable=False)
    v = dense(features)
    dense.set_weights([proj.kernel, proj.bias])
    squared = layers.Multiply(name=f"atypicality_square_{index}")([v, v])
    total = layers.Dense(1, use_bias=False, trainable=False, name=f"atypicality_sum_{index}")
    score = total(squared)
    total.set_weights([np.full((proj.k, 1), 1.0 / proj.k, np.float32)])
    return score


def output_layer(scores: list[Any]) -> Any:
    from keras import layers

    mean = layers.Average(name="atypicality_mean")(scores) if len(scores) > 1 else scores[0]
    return layers.Activation("linear", dtype="float32", name="atypicality")(mean)


def with_atypicality(keras_model: Any, proj: Projection) -> Any:
    """A single network with a third output, ``atypicality``."""
    import keras

    score = score_branch(keras_model.get_layer(features_layer(keras_model)).output, proj)
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


def attach(model_path: Path, data_dir: Path, out_dir: Path) -> Path:
    """Give a saved single model the ``atypicality`` output (fitted on its own training split,
    thresholded on its validation split) and save it, with its sidecar, into ``out_dir``."""
    import json
    import shutil

    import keras

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
    model = keras.saving.load_model(model_path, compile=False)
    proj = fit_projection(features_of(feature_net(model), train))
    final = with_atypicality(model, proj)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / Path(model_path).name
    final.save(target)
    spec.extra["atypicality"] = {**threshold_on(final, validation), "components": proj.k}
    spec.extra.setdefault("outputs", {})["atypicality"] = "see the model card"
    write_sidecar(target, spec)
    shutil.copyfile(manifest, out / MANIFEST_NAME)
    return target


if __name__ == "__main__":
    import sys

    print(attach(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))

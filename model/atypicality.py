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


def feature_net(net: Any) -> Any:
    """Input -> pooled features of a single (not ensemble) network."""
    import keras

    return keras.Model(net.input, net.get_layer(FEATURES_LAYER).output)


def features_of(net: Any, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    return np.concatenate([np.asarray(net(x[i:i + batch_size], training=False), np.float32)
                           for i in range(0, len(x), batch_size)])


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

    score = score_branch(keras_model.get_layer(FEATURES_LAYER).output, proj)
    outputs = {k: v for k, v in dict(keras_model.output).items() if k != "atypicality"}
    outputs["atypicality"] = output_layer([score])
    return keras.Model(keras_model.input, outputs, name=keras_model.name)


def threshold_on(model: Any, validation_x: np.ndarray, quantile: float = DEFAULT_QUANTILE,
                 batch_size: int = 128) -> dict[str, Any]:
    """The validation quantile of the model's ``atypicality`` output, and what the sidecar
    records about the score."""
    val = np.concatenate([np.asarray(model(validation_x[i:i + batch_size],
                                           training=False)["atypicality"]).reshape(-1)
                          for i in range(0, len(validation_x), batch_size)])
    threshold = float(np.quantile(val, quantile))
    return {"method": "mahalanobis", "covariance": "Ledoit-Wolf", "fitted_on": "train",
            "threshold": threshold, "threshold_rule": f"validation {quantile:.0%} quantile",
            "validation_above": float((val > threshold).mean())}

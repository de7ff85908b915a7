"""The guard's score as built into a model: per measured layer a Mahalanobis distance on its own
validation scale, the largest of them, the same numbers as the numpy fit."""

from __future__ import annotations

import numpy as np

from pneumoscreen.model import atypicality as A


def _net(size: int = 16) -> object:
    """A small functional network with a middle block named as MobileNetV2's and features."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    x = keras.Input((size, size, 1), name="image")
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    b = layers.Conv2D(8, 3, padding="same")(a)
    mid = layers.Add(name="block_8_add")([a, b])
    pooled = layers.GlobalAveragePooling2D()(mid)
    features = layers.Dense(6, activation="relu", name="features")(pooled)
    out = layers.Dense(1, activation="sigmoid", name="pneumonia")(features)
    return keras.Model(x, {"pneumonia": out})


def test_the_guard_measures_the_middle_block_and_takes_the_largest_score() -> None:
    rng = np.random.default_rng(0)
    net = _net()
    train, val = rng.random((120, 16, 16, 1), np.float32), rng.random((60, 16, 16, 1), np.float32)
    guard = A.fit_guard(net, train, val)
    assert guard.layers == ("features", "block_8_add")
    model = A.with_atypicality(net, guard)
    odd = np.concatenate([val[:5], 1 - val[:5], np.zeros_like(val[:2])])
    got = np.asarray(model(odd, training=False)["atypicality"]).reshape(-1)
    feats = A.layer_features(A.guard_net(net, guard.layers), odd)
    expected = np.max([p.score(f) / s for p, f, s in
                       zip(guard.projections, feats, guard.scales, strict=True)], axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    # On its own scale each layer puts about 1 % of the validation films above 1.
    on_val = np.asarray(model(val, training=False)["atypicality"]).reshape(-1)
    assert 0.0 < (on_val > 1.0).mean() <= 0.05
    assert A.guard_record([guard])["layers"] == ["features", "block_8_add"]


def test_a_network_without_a_middle_block_is_measured_on_its_features() -> None:
    import keras
    from keras import layers

    x = keras.Input((8, 8, 1))
    f = layers.Dense(4, name="features")(layers.Flatten()(x))
    net = keras.Model(x, {"pneumonia": layers.Dense(1, activation="sigmoid")(f)})
    assert A.guard_layers(net) == ("features",)

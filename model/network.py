"""The CNN: a compact single-channel convolutional network with a sigmoid pneumonia output."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


def build_cnn(
    input_size: int = 128,
    widths: Sequence[int] = (16, 32, 64, 128),
    dense: int = 64,
    dropout: float = 0.3,
    name: str = "pneumoscreen_cnn",
) -> keras.Model:
    """Conv blocks (conv-BN-ReLU twice, max-pool) then global pooling and a sigmoid unit.

    The output layer is float32 even under mixed precision, so probabilities stay exact.
    """
    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = inputs
    for i, width in enumerate(widths):
        for j in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"b{i}_bn{j}")(x)
            x = layers.Activation("relu", name=f"b{i}_relu{j}")(x)
        x = layers.MaxPooling2D(name=f"b{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(dense, activation="relu", name="fc")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="pneumonia")(x)
    return keras.Model(inputs, outputs, name=name)

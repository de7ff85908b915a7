"""The network, its preprocessing, training and evaluation."""

from pneumoscreen.model.bundle import (
    LoadedModel,
    ModelFileError,
    ModelSpec,
    bundled_model_path,
    load_model,
)
from pneumoscreen.model.preprocess import InputRangeError, preprocess

__all__ = [
    "InputRangeError",
    "LoadedModel",
    "ModelFileError",
    "ModelSpec",
    "bundled_model_path",
    "load_model",
    "preprocess",
]

"""The network, its preprocessing, training and evaluation.

The names below load on first use (PEP 562): importing a light submodule such as
``pneumoscreen.model.progress`` must not pull in NumPy and Pillow (read-only CLI commands).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LoadedModel": "bundle",
    "ModelFileError": "bundle",
    "ModelSpec": "bundle",
    "bundled_model_path": "bundle",
    "load_model": "bundle",
    "InputRangeError": "preprocess",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

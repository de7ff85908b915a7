"""The models' names, without loading anything heavy: the bundled models, where they live, and
the identity (sha256, label) a model's sidecar records. Read-only commands use this to know the
default model without importing NumPy or TensorFlow."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

# The models shipped inside the package, by name; ``bundled:NAME`` selects one wherever a model
# file is asked for (``SCREEN_MODEL_PATH=bundled:cnn-s``).
BUNDLED = {"v2": "pneumoscreen-v2.keras", "v3": "pneumoscreen-v3.keras",
           "cnn-s": "pneumoscreen-cnn.keras"}
DEFAULT_BUNDLED = "v3"
BUNDLED_PREFIX = "bundled:"


def bundled_dir() -> Path:
    """The folder of the models shipped inside the package (always an allowed model folder)."""
    return Path(str(resources.files("pneumoscreen.model") / "bundled"))


def model_path_of(ref: str | Path | None) -> Path | None:
    """The model file a setting or option names (a path, ``bundled:NAME``, None for the default
    bundled model); None for an unknown bundled name."""
    text = "" if ref is None else str(ref)
    if not text:
        return bundled_dir() / BUNDLED[DEFAULT_BUNDLED]
    if text.startswith(BUNDLED_PREFIX):
        name = BUNDLED.get(text[len(BUNDLED_PREFIX):])
        return None if name is None else bundled_dir() / name
    return Path(text).expanduser()


def sidecar_sha256(ref: str | Path | None) -> str | None:
    """The sha256 the model's sidecar records (what the database knows the model by), or None
    when there is no readable sidecar. Not a verification: loading a model checks the file."""
    path = model_path_of(ref)
    if path is None:
        return None
    try:
        sha = json.loads(path.with_suffix(".json").read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) and len(sha) == 64 else None

"""The bundled models' names as the tool prints them, read from their sidecars (tests that
show them do not hard-code a version)."""

from __future__ import annotations

from pneumoscreen.model.bundle import bundled_model_path, read_spec

SPEC = read_spec(bundled_model_path())
DEFAULT_VERSION: str = SPEC.version
DEFAULT_LABEL: str = SPEC.label
CNN_S = read_spec(bundled_model_path("cnn-s"))
CNN_S_VERSION: str = CNN_S.version
CNN_S_LABEL: str = CNN_S.label

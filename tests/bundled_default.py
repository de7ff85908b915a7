"""The bundled default model's name as the tool prints it, read from its sidecar (tests that
show it do not hard-code a version)."""

from __future__ import annotations

from pneumoscreen.model.bundle import bundled_model_path, read_spec

SPEC = read_spec(bundled_model_path())
DEFAULT_VERSION: str = SPEC.version
DEFAULT_LABEL: str = SPEC.label

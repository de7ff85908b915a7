"""Which model a task screens with: the configured default, or a registered version by its id.

A broker message never names a file. A registered version's file must lie inside the model
folders (``SCREEN_MODEL_DIRS``, the bundled folder, the configured model's folder), and its
sha256 and threshold must still be the ones recorded when an operator registered it.
"""

from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy.orm import Session

from pneumoscreen.db import Batch, ModelVersion
from pneumoscreen.model.bundle import (
    BUNDLED_PREFIX,
    LoadedModel,
    ModelFileError,
    bundled_dir,
    inside,
    load_model,
    verified_spec,
)
from pneumoscreen.worker.settings import Settings


def model_dirs(settings: Settings) -> list[Path]:
    """The folders a model may be loaded from."""
    dirs = [bundled_dir(), *settings.model_dirs]
    configured = settings.model_path
    if configured and not str(configured).startswith(BUNDLED_PREFIX):
        dirs.append(Path(configured).expanduser().resolve().parent)
    return dirs


def configured_model(settings: Settings) -> LoadedModel:
    """The operator's configured model (``SCREEN_MODEL_PATH``, default the bundled one)."""
    return load_model(settings.model_path, runtime=settings.runtime_config())


def rescreen_version(batch_id: int | None, *, session: Session) -> int | None:
    """The model version a re-screen batch was made for (None for other batches)."""
    if batch_id is None:
        return None
    batch = session.get(Batch, batch_id)
    if batch is None or batch.kind != "rescreen":
        return None
    return batch.model_version_id


def registered_model(version_id: int, settings: Settings, *, session: Session) -> LoadedModel:
    """The model of registered version ``version_id``, verified before it is loaded."""
    mv = session.get(ModelVersion, version_id)
    if mv is None:
        raise ModelFileError(f"model version {version_id} is not registered")
    path = (mv.sidecar or {}).get("path")
    if not path:
        raise ModelFileError(f"model version {version_id} has no registered file; an operator "
                             "registers one with `screen models register PATH`")
    if not inside(Path(path), model_dirs(settings)):
        raise ModelFileError(f"model version {version_id}: its file lies outside the model "
                             "folders (SCREEN_MODEL_DIRS)")
    spec = verified_spec(Path(path))
    if spec.sha256 != mv.file_sha256:
        raise ModelFileError(f"model version {version_id}: the file's sha256 is not the one "
                             "recorded at registration")
    if not math.isclose(float(spec.threshold), float(mv.threshold), rel_tol=0, abs_tol=1e-9):
        raise ModelFileError(f"model version {version_id}: the sidecar's threshold is not the "
                             "one recorded at registration")
    loaded = load_model(path, runtime=settings.runtime_config())
    if loaded.spec.sha256 != mv.file_sha256:  # swapped between the check and the load
        raise ModelFileError(f"model version {version_id}: the file changed while loading")
    return loaded

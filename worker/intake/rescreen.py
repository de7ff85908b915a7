"""Re-screening: finished images go through another model version.

Its predictions are added beside the earlier ones (one per image and model version). The batch
records the registered model version (its file's path and sha256 in the database); the tasks name
that version by id, and every worker verifies the file before loading it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from pneumoscreen.db import Batch, ImageStatus, ModelVersion
from pneumoscreen.db.images import mark_for_rescreen
from pneumoscreen.db.queries import model_version_for, model_version_rows, model_version_with_sha
from pneumoscreen.model.bundle import (
    BUNDLED_PREFIX,
    ModelFileError,
    inside,
    model_file,
    verified_spec,
)
from pneumoscreen.model.progress import Progress
from pneumoscreen.worker.audit import audit
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.settings import Settings


def resolve_model(ref: str, *, session: Session) -> Path:
    """A model file from a path, ``bundled:NAME``, or a registered version: its id, version or
    name:version."""
    if ref.isdigit():
        by_id = session.get(ModelVersion, int(ref))
        stored = (by_id.sidecar or {}).get("path") if by_id is not None else None
        if stored and Path(stored).is_file():
            return Path(stored)
    if ref.startswith(BUNDLED_PREFIX):
        return model_file(ref)
    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    rows = model_version_rows(session=session)
    for mv in rows:
        if ref in (mv.version, f"{mv.name}:{mv.version}"):
            stored = (mv.sidecar or {}).get("path")
            if stored and Path(stored).is_file():
                return Path(stored)
            raise ModelFileError(
                f"model version {ref!r} is known but its file is not recorded or gone "
                f"({stored or 'no path'}); pass the .keras path instead")
    known = ", ".join(sorted({mv.version for mv in rows})) or "none yet"
    raise ModelFileError(f"{ref!r} is neither a model file nor a known model version "
                         f"(known: {known})")


def register_model(path: Path, *, session: Session, settings: Settings) -> ModelVersion:
    """The model version row for ``path``, with the path stored in its sidecar JSON.

    Only a file inside the model folders, with a valid sidecar whose sha256 matches it.
    """
    from pneumoscreen.worker.screening.model_choice import model_dirs

    dirs = model_dirs(settings)
    if not inside(path, dirs):
        listed = ", ".join(str(d) for d in dirs[1:]) or "none besides the bundled one"
        raise ModelFileError(f"{path} lies outside the model folders ({listed}); copy it into "
                             "one, or add its folder to SCREEN_MODEL_DIRS")
    path = path.resolve()
    spec = verified_spec(path)
    spec.extra["path"] = str(path)
    before = model_version_with_sha(spec.sha256, session=session)
    known_path = (before.sidecar or {}).get("path") if before is not None else None
    mv = model_version_for(spec, session=session)
    if known_path != str(path):
        mv.sidecar = {**(mv.sidecar or {}), "path": str(path)}  # a new dict: JSON is not mutable
        session.flush()
        audit(session, "model.register", model_version=mv.id, label=mv.label, path=str(path),
              sha256=mv.file_sha256, threshold=mv.threshold)
    return mv


def rescreen(model_ref: str, *, settings: Settings, status: str = "done",
             task_size: int | None = None, progress: Progress | None = None) -> Enqueued:
    """Enqueue every ``status`` image not yet screened by the model ``model_ref``."""
    wanted = ImageStatus(status)
    with settings.session() as session:
        path = resolve_model(model_ref, session=session)
        mv = register_model(path, session=session, settings=settings)
        batch = Batch(kind="rescreen", source=str(path), model_version_id=mv.id)
        session.add(batch)
        session.flush()
        audit(session, "rescreen", batch=batch.id, model_version=mv.id, status=wanted.value)
        # Marked until the re-screen reaches them: a broker that is down now, or a worker that
        # dies, leaves them for `screen resume`, which sends them back here, as a re-screen.
        ids = mark_for_rescreen(wanted, mv.id, batch.id, session=session)
        batch.n_files = batch.n_new = len(ids)
        result = Enqueued(batch_id=batch.id, queued_ids=ids)
    enqueue(result, settings=settings, task_size=task_size, progress=progress, rescreen=True,
            model_version=mv.id)
    return result



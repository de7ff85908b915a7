"""Re-screening: finished studies go through another model version.

Its predictions are added beside the earlier ones (one per study and model version). The batch
records the model version, whose sidecar carries the file's path, so every worker loads that very
file.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from pneumoscreen.db import Batch, ModelVersion, Prediction, Study, StudyStatus
from pneumoscreen.db.queries import model_version_for
from pneumoscreen.model.bundle import BUNDLED_PREFIX, ModelFileError, model_file, verified_spec
from pneumoscreen.model.progress import Progress
from pneumoscreen.worker.intake.enqueue import Enqueued, enqueue
from pneumoscreen.worker.settings import Settings


def resolve_model(ref: str, *, session: Session) -> Path:
    """A model file from a path, ``bundled:NAME``, or a version (or name:version) seen before."""
    if ref.startswith(BUNDLED_PREFIX):
        return model_file(ref)
    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    rows = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).all()
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


def register_model(path: Path, *, session: Session) -> ModelVersion:
    """The model version row for ``path``, with the path stored in its sidecar JSON."""
    spec = verified_spec(path)
    spec.extra["path"] = str(path)
    mv = model_version_for(spec, session=session)
    if (mv.sidecar or {}).get("path") != str(path):
        mv.sidecar = {**(mv.sidecar or {}), "path": str(path)}  # a new dict: JSON is not mutable
    return mv


def rescreen(model_ref: str, *, settings: Settings, status: str = "done",
             task_size: int | None = None, progress: Progress | None = None) -> Enqueued:
    """Enqueue every ``status`` study not yet screened by the model ``model_ref``."""
    wanted = StudyStatus(status)
    with settings.session() as session:
        path = resolve_model(model_ref, session=session)
        mv = register_model(path, session=session)
        batch = Batch(kind="rescreen", source=str(path), model_version_id=mv.id)
        session.add(batch)
        session.flush()
        already = exists().where(Prediction.study_id == Study.id,
                                 Prediction.model_version_id == mv.id)
        ids = sorted(session.scalars(select(Study.id).where(Study.status == wanted, ~already)))
        batch.n_files = batch.n_new = len(ids)
        # Marked until the re-screen reaches them: a broker that is down now, or a worker that
        # dies, leaves them for `screen resume`, which sends them back here, as a re-screen.
        session.execute(update(Study).where(Study.id.in_(ids))
                        .values(rescreen_batch_id=batch.id)
                        .execution_options(synchronize_session=False))
        result = Enqueued(batch_id=batch.id, queued_ids=ids)
    enqueue(result, settings=settings, task_size=task_size, progress=progress, rescreen=True)
    return result



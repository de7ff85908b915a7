"""Queries and writes shared by the CLI, the worker and the model code. Callers own the session."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pneumoscreen.db.models import ModelVersion


def get_or_create_model_version(
    *,
    session: Session,
    name: str,
    version: str,
    file_sha256: str,
    input_spec: dict[str, Any],
    threshold: float,
    target_recall: float | None,
    trained: bool,
    sidecar: dict[str, Any] | None = None,
) -> ModelVersion:
    """The row for the model file with this sha256, created on first sight."""
    row = session.scalar(select(ModelVersion).where(ModelVersion.file_sha256 == file_sha256))
    if row is not None:
        return row
    row = ModelVersion(name=name, version=version, file_sha256=file_sha256,
                       input_spec=input_spec, threshold=threshold,
                       target_recall=target_recall, trained=trained, sidecar=sidecar)
    try:
        with session.begin_nested():  # two workers may meet a new model at the same moment
            session.add(row)
    except IntegrityError:
        row = session.scalars(
            select(ModelVersion).where(ModelVersion.file_sha256 == file_sha256)
        ).one()
    return row


def model_version_for(spec: Any, *, session: Session) -> ModelVersion:
    """The row for a :class:`pneumoscreen.model.ModelSpec` (sha256 filled in by ``load_model``)."""
    return get_or_create_model_version(
        session=session, name=spec.name, version=spec.version, file_sha256=spec.sha256,
        input_spec=spec.input_spec, threshold=spec.threshold, target_recall=spec.target_recall,
        trained=spec.trained, sidecar=spec.to_json(),
    )

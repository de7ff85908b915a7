"""Schema, migrations and sessions of pneumoscreen's SQL database."""

from pneumoscreen.db.models import (
    AuditEvent,
    Base,
    Batch,
    EvaluationReport,
    Export,
    ExportStatus,
    FileRole,
    Heatmap,
    ModelVersion,
    Prediction,
    ReceivedInstance,
    Run,
    Study,
    StudyFile,
    StudyStatus,
)
from pneumoscreen.db.session import get_engine, reset_engines, session_scope

__all__ = [
    "AuditEvent",
    "Base",
    "Batch",
    "EvaluationReport",
    "Export",
    "ExportStatus",
    "FileRole",
    "Heatmap",
    "ModelVersion",
    "Prediction",
    "ReceivedInstance",
    "Run",
    "Study",
    "StudyFile",
    "StudyStatus",
    "get_engine",
    "reset_engines",
    "session_scope",
]

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
    Image,
    ImageFile,
    ImageStatus,
    ModelVersion,
    Prediction,
    ReceivedInstance,
    Run,
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
    "Image",
    "ImageFile",
    "ImageStatus",
    "ModelVersion",
    "Prediction",
    "ReceivedInstance",
    "Run",
    "get_engine",
    "reset_engines",
    "session_scope",
]

"""Schema, migrations and sessions of pneumoscreen's SQL database."""

from pneumoscreen.db.models import (
    Base,
    Batch,
    EvaluationReport,
    Export,
    ExportStatus,
    Heatmap,
    ModelVersion,
    Prediction,
    Run,
    Study,
    StudyStatus,
)
from pneumoscreen.db.session import get_engine, reset_engines, session_scope

__all__ = [
    "Base",
    "Batch",
    "EvaluationReport",
    "Export",
    "ExportStatus",
    "Heatmap",
    "ModelVersion",
    "Prediction",
    "Run",
    "Study",
    "StudyStatus",
    "get_engine",
    "reset_engines",
    "session_scope",
]

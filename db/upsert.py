"""INSERT … ON CONFLICT DO NOTHING for the dialects the project supports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session


def insert_ignore(session: Session, model: type[Any], conflict: Sequence[str]) -> Any:
    """An insert of ``model`` rows that skips rows colliding on the unique ``conflict`` columns."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"no INSERT … ON CONFLICT for the {dialect} dialect")
    return insert(model).on_conflict_do_nothing(index_elements=list(conflict))

"""The web's one door to the database: the reading list (the query ``screen flagged`` uses),
one image's page, reads and users. Pages call these, never SQL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

READ_STATUSES = ("all", "unread", "read")


def image_id_of(row: dict[str, Any]) -> int:
    """The image id of a ``flagged`` row (its JSON key is still ``study_id``; ``image_id``
    once the rename reaches the output fields)."""
    return int(row["image_id"] if "image_id" in row else row["study_id"])


@dataclass
class ReadingList:
    flagged: list[dict[str, Any]]
    outside: list[dict[str, Any]]
    newest: int  # the newest prediction id: rows above the page's own are new
    models: list[str] = field(default_factory=list)


def reading_list(*, session: Session, since: dt.datetime | None = None,
                 model: str | None = None, status: str = "all", limit: int = 500,
                 opened: int | None = None) -> ReadingList:
    """``screen flagged``'s rows (flagged first by probability, then those outside the
    validated scope), each with its newest read, ``new`` when screened after ``opened`` (a
    prediction id), filtered by read status in the query (before the row limit)."""
    from pneumoscreen.db import web as q
    from pneumoscreen.db.queries import UnknownModel, flagged, model_version_named

    version_id = None
    if model:
        try:
            version_id = model_version_named(model, session=session).id
        except UnknownModel:
            version_id = -1  # a model that never screened here: an empty list, not every row
    rows = flagged(session=session, since=since, limit=limit, model_version=version_id,
                   outside_scope=True, read_status=status)
    read = q.latest_reads([image_id_of(r) for r in rows], session=session)
    kept = [dict(row, image_id=image_id_of(row), name=Path(row["path"]).name,
                 read=read.get(image_id_of(row)),
                 new=opened is not None and row["prediction_id"] > opened) for row in rows]
    versions = q.model_version_names(session=session)
    return ReadingList(flagged=[r for r in kept if r["in_scope"] is not False],
                       outside=[r for r in kept if r["in_scope"] is False],
                       newest=q.newest_prediction_id(session=session), models=versions)


def image_page(image_id: int, *, session: Session) -> dict[str, Any] | None:
    from pneumoscreen.db import web as q

    page = q.image_page(image_id, session=session)
    if page is not None:
        page["name"] = Path(page["path"]).name
    return page


def add_read(image_id: int, user_id: int, verdict: str, label: str | None,
             subtype: str | None, *, session: Session) -> Any:
    from pneumoscreen.db import web as q

    return q.add_read(image_id, user_id, verdict, session=session, label=label, subtype=subtype)


def reads(*, session: Session, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    from pneumoscreen.db import web as q

    return q.reads(session=session, since=since)

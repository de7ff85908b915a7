"""Statements over the instances ``screen listen`` received (table ``received_instances``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pneumoscreen.db.lists import IN_LIST_MAX, split
from pneumoscreen.db.models import Image, ImageStatus, ReceivedInstance, utcnow


def registered_spool_files(shas: list[str], *, session: Session) -> set[str]:
    """Which of these spool files are registered already."""
    found: set[str] = set()
    for part in split(shas, IN_LIST_MAX):
        found.update(session.scalars(select(ReceivedInstance.sha256).where(
            ReceivedInstance.sha256.in_(part))))
    return found


def mark_enqueued(image_ids: Iterable[int], *, session: Session) -> None:
    """The received instances of these images are enqueued (now)."""
    for part in split(list(image_ids), IN_LIST_MAX):
        session.execute(update(ReceivedInstance).where(
            ReceivedInstance.image_id.in_(part),
            ReceivedInstance.enqueued_at.is_(None)).values(enqueued_at=utcnow()))


def not_enqueued(*, session: Session) -> list[tuple[int, int | None, ImageStatus]]:
    """(image id, batch id, status) of the received instances never enqueued."""
    return [tuple(r) for r in session.execute(  # type: ignore[misc]
        select(ReceivedInstance.image_id, Image.batch_id, Image.status)
        .join(Image, Image.id == ReceivedInstance.image_id)
        .where(ReceivedInstance.enqueued_at.is_(None))).all()]

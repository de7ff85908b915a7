"""Statements over images (table ``studies``) for registration, screening, resuming and the
sweep: each takes a session, none reads settings."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import exists, insert, or_, select, update
from sqlalchemy.orm import Session

from pneumoscreen.db.lists import IN_LIST_MAX, split
from pneumoscreen.db.models import Image, ImageFile, ImageStatus, Prediction, utcnow


def known_sha256s(shas: Sequence[str], *, session: Session) -> set[str]:
    """Which of these contents are registered already (as an image or as one of its copies)."""
    known = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(shas))))
    return known | set(session.scalars(select(ImageFile.sha256).where(ImageFile.sha256.in_(shas))))


def image_with_sop_uid(uid: str, *, session: Session) -> Image | None:
    return session.scalars(select(Image).where(Image.sop_instance_uid == uid)).first()


def image_of_file(sha256: str, *, session: Session) -> int | None:
    """The image a file with this content is the primary copy, a twin or a duplicate of."""
    image_id = session.scalar(select(ImageFile.image_id).where(
        ImageFile.sha256 == sha256).limit(1))
    if image_id is None:
        image_id = session.scalar(select(Image.id).where(Image.sha256 == sha256))
    return image_id


def statuses(image_ids: Iterable[int], *, session: Session) -> list[tuple[int, ImageStatus]]:
    """(id, status) of these images, in bounded IN lists."""
    out: list[tuple[int, ImageStatus]] = []
    for part in split(sorted(image_ids), IN_LIST_MAX):
        out += [(i, s) for i, s in session.execute(
            select(Image.id, Image.status).where(Image.id.in_(part))).all()]
    return out


def images_by_id(image_ids: Sequence[int], *, session: Session) -> dict[int, Image]:
    return {i.id: i for i in session.scalars(select(Image).where(Image.id.in_(image_ids)))}


def predicted(image_ids: Sequence[int], *, session: Session,
              model_version_id: int | None = None) -> dict[int, int]:
    """image id → prediction id of these images' predictions (of one model version if given)."""
    query = select(Prediction.image_id, Prediction.id).where(Prediction.image_id.in_(image_ids))
    if model_version_id is not None:
        query = query.where(Prediction.model_version_id == model_version_id)
    return dict(session.execute(query).all())


def left_over(*, session: Session, lease_s: float, now: dt.datetime | None = None
              ) -> tuple[dict[tuple[int | None, bool], list[int]], int]:
    """Images to send again, by (batch, is a re-screen); and how many were stuck processing.

    Queued images, processing ones whose lease has expired, and images a re-screen has not
    reached yet (``rescreen_batch_id``; they go back to that re-screen batch, so its model reads
    them and a failed re-read cannot undo their earlier verdict). Images held by a process of
    this host that is gone are freed first (queued again: not after the lease) and counted as
    stuck.
    """
    from pneumoscreen.db.claims import free_orphans

    freed = free_orphans(session=session)
    stale = (now or utcnow()) - dt.timedelta(seconds=lease_s)
    expired = (Image.status == ImageStatus.processing) & or_(Image.claimed_at.is_(None),
                                                              Image.claimed_at < stale)
    rows = session.execute(
        select(Image.id, Image.batch_id, Image.rescreen_batch_id, Image.status)
        .where(or_(Image.status == ImageStatus.queued, expired,
                   Image.rescreen_batch_id.is_not(None) & (Image.status != ImageStatus.processing)))
        .order_by(Image.id)).all()
    groups: dict[tuple[int | None, bool], list[int]] = defaultdict(list)
    for image_id, batch_id, rescreen_batch_id, _status in rows:
        key = (rescreen_batch_id, True) if rescreen_batch_id is not None else (batch_id, False)
        groups[key].append(image_id)
    n_stale = sum(1 for *_, status in rows if status == ImageStatus.processing)
    return dict(groups), n_stale + freed


def changed_since(image_ids: Sequence[int], since: dt.datetime, *, session: Session) -> set[int]:
    """Those of these images updated after ``since``."""
    recent: set[int] = set()
    for part in split(image_ids, IN_LIST_MAX):
        recent.update(session.scalars(select(Image.id).where(
            Image.id.in_(part), Image.updated_at > since)))
    return recent


def mark_for_rescreen(status: ImageStatus, model_version_id: int, batch_id: int, *,
                      session: Session) -> list[int]:
    """The ``status`` images with no prediction by this model version, marked as waiting for
    the re-screen batch ``batch_id`` (until it reaches them); their ids."""
    already = exists().where(Prediction.image_id == Image.id,
                             Prediction.model_version_id == model_version_id)
    ids = sorted(session.scalars(select(Image.id).where(Image.status == status, ~already)))
    session.execute(update(Image).where(Image.id.in_(ids))
                    .values(rescreen_batch_id=batch_id)
                    .execution_options(synchronize_session=False))
    return ids


def insert_images(rows: list[dict[str, Any]], *, session: Session) -> None:
    """Plain inserts of image rows (the benchmarks' synthetic corpora)."""
    for part in split(rows, 1000):
        session.execute(insert(Image), part)


def images_of_batch(batch_id: int, *, session: Session) -> list[int]:
    return list(session.scalars(select(Image.id).where(Image.batch_id == batch_id)
                                .order_by(Image.id)))

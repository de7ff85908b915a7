"""Which received spool files may be deleted: their study (Study Instance UID) is final, its
result was delivered everywhere it was due, and the last delivery is older than a cut-off."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pneumoscreen.db.models import Export, ExportStatus, Image, ImageStatus, ReceivedInstance


def expired_spool_paths(*, session: Session, delivered_before: dt.datetime,
                        limit: int = 500) -> list[str]:
    """Spool paths of received instances whose study is final and exported before the cut-off
    (no export of it pending, held or failed; every image of it final)."""
    final = [s.value for s in ImageStatus.final()]
    unsettled = select(Image.study_instance_uid).where(Image.status.not_in(final))
    undelivered = select(Export.study_instance_uid).where(Export.status.in_(
        [ExportStatus.pending, ExportStatus.held, ExportStatus.failed]))
    delivered = (select(Export.study_instance_uid).where(Export.status == ExportStatus.sent)
                 .group_by(Export.study_instance_uid)
                 .having(func.max(Export.sent_at) < delivered_before))
    query = (select(ReceivedInstance.spool_path)
             .join(Image, Image.id == ReceivedInstance.image_id)
             .where(Image.study_instance_uid.in_(delivered),
                    Image.study_instance_uid.not_in(unsettled.where(
                        Image.study_instance_uid.is_not(None))),
                    Image.study_instance_uid.not_in(undelivered))
             .order_by(ReceivedInstance.id).limit(limit))
    return list(session.scalars(query))

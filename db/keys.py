"""The pseudonym key's fingerprint, recorded at first use: one key per database."""

from __future__ import annotations

from sqlalchemy.orm import Session

from pneumoscreen.db.models import KeyFingerprint
from pneumoscreen.db.upsert import insert_ignore


class KeyMismatch(RuntimeError):
    """This database was written with another pseudonym key."""


def check_fingerprint(session: Session, fingerprint: str) -> bool:
    """Record ``fingerprint`` if none is yet (True), or check it is the recorded one
    (KeyMismatch otherwise)."""
    created = session.execute(insert_ignore(session, KeyFingerprint.__table__, ["id"]),
                              {"id": 1, "fingerprint": fingerprint}).rowcount
    stored = session.get(KeyFingerprint, 1, populate_existing=True)
    if stored is None or stored.fingerprint != fingerprint:
        raise KeyMismatch(
            f"this database was written with another patient key (fingerprint "
            f"{(stored.fingerprint if stored else '?')[:12]}, this key's {fingerprint[:12]}): "
            "set SCREEN_PATIENT_KEY_FILE (or SCREEN_PATIENT_KEY) to the key the submitter and "
            "workers share, or use another database")
    return bool(created)

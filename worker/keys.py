"""The pseudonym key, checked against the database it writes to.

The first writer records the key's fingerprint (an HMAC of a fixed label: the key cannot be
recovered from it); a writer holding another key is refused, so one patient never gets two
pseudonyms in one database.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

from pneumoscreen.db import session_scope
from pneumoscreen.db.keys import check_fingerprint
from pneumoscreen.worker.audit import audit
from pneumoscreen.worker.settings import Settings

_LABEL = b"pneumoscreen patient-key fingerprint v1"
_checked: set[tuple[str, str]] = set()
_lock = threading.Lock()


def key_fingerprint(key: bytes) -> str:
    return hmac.new(key, _LABEL, hashlib.sha256).hexdigest()


def checked_key(settings: Settings) -> bytes:
    """The configured key, once per process and database checked against (or recorded as) the
    database's key; PatientKeyError or KeyMismatch with one line naming the fix."""
    key = settings.effective_patient_key()
    fingerprint = key_fingerprint(key)
    url = settings.effective_database_url
    with _lock:
        if (url, fingerprint) in _checked:
            return key
    with session_scope(url) as session:
        if check_fingerprint(session, fingerprint):
            audit(session, "key.first_use", fingerprint=fingerprint[:12])
    with _lock:
        _checked.add((url, fingerprint))
    return key

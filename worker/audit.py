"""Who did what: operator actions into the audit trail, with the OS user and host.

Call :func:`audit` inside the transaction that makes the change (it lands with it), or
:func:`audit_to` with a database URL for an action that changes nothing else. Parameters are
ids, counts, folder and model paths: never patient data. Every event is sealed into a keyed hash
chain (db/audit.py) with :func:`chain_key`.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import socket
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from pneumoscreen.db import session_scope
from pneumoscreen.db.audit import record_event

if TYPE_CHECKING:
    from pneumoscreen.worker.settings import Settings

_CHAIN_LABEL = b"pneumoscreen audit chain v1"


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container with an unnamed uid)
        import os

        return f"uid:{os.getuid()}"


def chain_key(settings: Settings | None = None) -> bytes:
    """The audit chain's key: SCREEN_AUDIT_KEY_FILE's contents, else derived from the pseudonym
    key (an HMAC of a fixed label: neither key can be recovered from the other). Every writer of
    one database shares the pseudonym key already, so the chain needs no secret of its own."""
    from pneumoscreen.worker.settings import get_settings

    settings = settings or get_settings()
    own = settings.effective_audit_key()
    if own is not None:
        return own
    return hmac.new(settings.effective_patient_key(), _CHAIN_LABEL, hashlib.sha256).digest()


def audit(session: Session, action: str, **params: Any) -> None:
    """Append ``action`` with ``params`` in ``session``'s transaction."""
    record_event(session, action=action, os_user=os_user(), host=socket.gethostname(),
                 params={k: v for k, v in params.items() if v is not None},
                 chain_key=chain_key())


def audit_to(url: str, action: str, **params: Any) -> None:
    """Append ``action`` in a transaction of its own on the database at ``url``."""
    with session_scope(url) as session:
        audit(session, action, **params)

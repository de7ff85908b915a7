"""Who did what: operator actions into the audit trail, with the OS user and host.

Call :func:`audit` inside the transaction that makes the change (it lands with it), or
:func:`audit_to` with a database URL for an action that changes nothing else. Parameters are
ids, counts, folder and model paths: never patient data.
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from sqlalchemy.orm import Session

from pneumoscreen.db import session_scope
from pneumoscreen.db.audit import record_event


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container with an unnamed uid)
        import os

        return f"uid:{os.getuid()}"


def audit(session: Session, action: str, **params: Any) -> None:
    """Append ``action`` with ``params`` in ``session``'s transaction."""
    record_event(session, action=action, os_user=os_user(), host=socket.gethostname(),
                 params={k: v for k, v in params.items() if v is not None})


def audit_to(url: str, action: str, **params: Any) -> None:
    """Append ``action`` in a transaction of its own on the database at ``url``."""
    with session_scope(url) as session:
        audit(session, action, **params)

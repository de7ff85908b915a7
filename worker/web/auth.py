"""Who may read: password hashes (argon2id), the cookie-signing key, CSRF tokens and the
sign-in rate limit."""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_SECRET_BYTES = 32
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; a bound keeps a hostile form cheap
_hasher = PasswordHasher()
# Verifying against this when the user does not exist costs the same time as a real check,
# so the answer's timing does not tell which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    return _hasher.hash(password)


def check_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored`` (a missing hash never matches)."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def secret_key(configured: Path | None, data_dir: Path) -> str:
    """The key that signs session cookies: the configured file, or one made once (mode 600) in
    ``data_dir`` so that sessions survive a restart. ValueError for a short or unreadable key."""
    if configured is not None:
        try:
            key = configured.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the web secret key file {configured}: "
                             f"{exc.strerror}") from exc
        source = str(configured)
    else:
        path = data_dir / "web.key"
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        key, source = path.read_text().strip(), str(path)
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the web secret key in {source} is {len(key)} bytes; it needs at least "
                         f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)")
    return key


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class LoginLimiter:
    """At most ``attempts`` failed sign-ins per key (a user name, a client address) within
    ``window`` seconds; in memory, per server process."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # a flood of names: forget the quiet ones
                for k in [k for k, v in self._failures.items() if not v]:
                    del self._failures[k]

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

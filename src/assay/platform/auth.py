"""Who is calling: passwords, logins, sessions, CSRF, the login throttle and the audit log, shared by every web
service of Assay (the annotation app and the knowledge server log in the same users).

* Passwords are hashed with Argon2id at OWASP's minimum cost (m = 19 MiB, t = 2, p = 1: ≈ 25 ms of one core), so a
  shift of 100 people logging in at once is verified in a few seconds on two cores. Each process verifies at most as
  many passwords at a time as it has cores (``ASSAY_ANNOTATE_HASH_SLOTS`` overrides; ``serve --workers N`` gives each
  worker its share), so a burst of logins cannot starve the annotators already at work. Hashes made with other
  parameters (older defaults: 64 MiB, t = 3, p = 4) still verify, and are rehashed at the next successful login.
* Login throttling (:func:`login`): failed logins are counted per account (the name as typed, so unknown names behave
  like known ones) and per client address, in the database so all workers share them. After a few failures each
  further attempt must wait an exponential backoff; after many the account is locked for an hour (an admin unlocks it
  sooner); a count starts over only after a quiet spell longer than the longest backoff. A refused attempt is answered 429 with ``Retry-After`` *before* any password is checked. Failures and
  lockouts go to the audit log (``auth_events``).
* A login creates a row in ``sessions`` keyed by the SHA-256 of a random token; the browser holds the token in an
  HttpOnly, SameSite=Lax cookie, API clients send it as ``Authorization: Bearer``. Logging out deletes the row; so do a
  password change and deactivating the account (for every session of the user).
* CSRF: every state-changing request authenticated by the cookie must carry the session's CSRF token (form field
  ``csrf_token`` or header ``X-CSRF-Token``); bearer-token requests carry no ambient credential and are exempt. The
  login form, before any session exists, uses a double-submit cookie.
* What a caller may do is each service's business: the annotation app's project roles are in
  :mod:`assay.annotate.access`, the knowledge server's domain roles in :mod:`assay.knowledge.access`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session as DBSession

from assay.platform.models import AuthEvent, LoginThrottle, Session, User, now

SESSION_COOKIE = "assay_session"
LOGIN_CSRF_COOKIE = "assay_login_csrf"
SESSION_SECONDS = 7 * 24 * 3600

# OWASP Password Storage Cheat Sheet, Argon2id minimum: 19 MiB, 2 iterations, 1 degree of parallelism
ARGON2_PARAMETERS = {"memory_cost": 19 * 1024, "time_cost": 2, "parallelism": 1}

_hasher = None


def _password_hasher():  # noqa: ANN202
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher

        _hasher = PasswordHasher(**ARGON2_PARAMETERS)
    return _hasher


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("empty password")
    with _HASH_SLOTS:
        return _password_hasher().hash(password)


def hash_slots() -> int:
    """How many passwords this process verifies at a time: ``ASSAY_ANNOTATE_HASH_SLOTS``, else its CPU count."""
    configured = os.environ.get("ASSAY_ANNOTATE_HASH_SLOTS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# Hashing and verifying both take a slot; argon2-cffi releases the GIL, so the slots run on separate cores.
_HASH_SLOTS = threading.BoundedSemaphore(hash_slots())




def verify_password(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    with _HASH_SLOTS:
        try:
            return _password_hasher().verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than :data:`ARGON2_PARAMETERS` (or is not Argon2id)."""
    from argon2.exceptions import InvalidHashError

    try:
        return _password_hasher().check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


# A hash to verify against when the user does not exist, so the response time does not reveal valid usernames.
_DUMMY_HASH: str | None = None


def authenticate(db: DBSession, username: str, password: str) -> User | None:
    """The active user with this name and password, or None (a password is checked either way). No throttling:
    the login endpoints use :func:`login`."""
    global _DUMMY_HASH
    user = db.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password("not-a-real-password")
        verify_password(_DUMMY_HASH, password or "x")
        return None
    return user if verify_password(user.password_hash, password) else None


# -- login throttling ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThrottleRule:
    """The first ``free`` failures cost nothing; from then on the key waits 2^(failures - free) seconds (at most
    ``max_backoff``) after each failure; at ``lock_after`` failures it is locked for ``lock_seconds``. The count
    starts over once ``window`` seconds pass without a failure (and the key is not blocked): ``max_backoff`` is
    shorter than ``window``, so somebody who waits out every backoff still reaches the lock."""

    free: int
    window: float
    max_backoff: float = 300.0
    lock_after: int | None = None
    lock_seconds: float = 3600.0

    def blocked_for(self, failures: int) -> float:
        if self.lock_after is not None and failures >= self.lock_after:
            return self.lock_seconds
        if failures < self.free:
            return 0.0
        return min(2.0 ** (failures - self.free), self.max_backoff)


ACCOUNT_RULE = ThrottleRule(free=5, window=900, lock_after=20, lock_seconds=3600)
ADDRESS_RULE = ThrottleRule(free=30, window=600)


class LoginThrottled(Exception):
    """Too many failed logins for this account or address: refused without checking the password."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(f"too many failed logins; try again in {self.retry_after} s")


def _account_key(username: str) -> str:
    return f"user:{username[:64]}"


def _keys(username: str, ip: str | None) -> dict[str, ThrottleRule]:
    keys = {_account_key(username): ACCOUNT_RULE}
    if ip:
        keys[f"ip:{ip[:64]}"] = ADDRESS_RULE
    return keys


def throttled_for(s: DBSession, username: str, ip: str | None, t: float | None = None) -> float:
    """Seconds until a login as ``username`` from ``ip`` may be tried again (0: now). One indexed read."""
    t = now() if t is None else t
    until = s.scalar(select(LoginThrottle.blocked_until).where(LoginThrottle.key.in_(list(_keys(username, ip))))
                     .order_by(LoginThrottle.blocked_until.desc()).limit(1))
    return max(0.0, (until or 0.0) - t)


def _insert_ignore(s: DBSession, row: dict[str, Any]) -> None:
    """INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL."""
    if s.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    s.execute(insert(LoginThrottle).values(**row).on_conflict_do_nothing(index_elements=["key"]))


def record_failure(s: DBSession, username: str, ip: str | None, t: float | None = None) -> None:
    """Count a failed login against the account and the address (in the caller's write transaction), log it, and
    log a lockout when this failure locks the account."""
    t = now() if t is None else t
    # forget keys nobody failed on for a day (an attacker spraying made-up names must not grow the table forever)
    s.execute(delete(LoginThrottle).where(LoginThrottle.last_failure < t - 86400, LoginThrottle.blocked_until < t))
    for key, rule in _keys(username, ip).items():
        _insert_ignore(s, {"key": key, "failures": 0, "window_start": t, "last_failure": t, "blocked_until": 0.0})
        row = s.scalars(select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()).one()
        if t - row.last_failure > rule.window and row.blocked_until <= t:
            row.failures, row.window_start = 0, t
        row.failures += 1
        row.last_failure = t
        wait = rule.blocked_for(row.failures)
        if wait:
            row.blocked_until = max(row.blocked_until, t + wait)
        if rule.lock_after is not None and row.failures == rule.lock_after:
            s.add(AuthEvent(at=t, kind="locked", username=username[:64], ip=ip))
    s.add(AuthEvent(at=t, kind="login_failed", username=username[:64], ip=ip))


def unlock(s: DBSession, username: str, actor: str | None = None) -> bool:
    """Forget the failed logins of an account (an admin ending a lockout early). True if it had any."""
    res = s.execute(delete(LoginThrottle).where(LoginThrottle.key == _account_key(username)))
    s.add(AuthEvent(at=now(), kind="unlocked", username=username[:64], actor=actor))
    return bool(res.rowcount)


def account_blocks(s: DBSession, usernames: list[str]) -> dict[str, float]:
    """Username → until when the account is refused (only accounts refused now)."""
    t = now()
    rows = s.execute(select(LoginThrottle.key, LoginThrottle.blocked_until)
                     .where(LoginThrottle.key.in_([_account_key(u) for u in usernames]),
                            LoginThrottle.blocked_until > t))
    return {k[len(_account_key("")):]: until for k, until in rows}


@dataclass
class LoginResult:
    user_id: int
    username: str
    role: str
    token: str
    csrf_token: str


def login(db: Any, username: str, password: str, ip: str | None) -> LoginResult | None:
    """The throttled login behind ``POST /api/login`` and the login form, over a :class:`~assay.platform.db.Database`:
    raises :class:`LoginThrottled` before any password check when the account or address must wait; None for a wrong
    username or password (counted); else a new session. A hash with outdated parameters is replaced."""
    username = username[:64]
    with db.read() as s:  # the slow password check holds no write lock
        wait = throttled_for(s, username, ip)
        if wait > 0:
            raise LoginThrottled(wait)
        user = authenticate(s, username, password)
    if user is None:
        with db.write() as s:
            record_failure(s, username, ip)
        return None
    # outdated parameters: hash again now (before the write transaction: no lock held while hashing)
    new_hash = hash_password(password) if needs_rehash(user.password_hash) else None
    with db.write() as s:
        s.execute(delete(LoginThrottle).where(LoginThrottle.key == _account_key(username)))
        if new_hash is not None:
            s.execute(User.__table__.update().where(User.id == user.id, User.password_hash == user.password_hash)
                      .values(password_hash=new_hash))
        token, csrf = create_session(s, user)
    return LoginResult(user.id, user.username, user.role, token, csrf)


def revoke_sessions(s: DBSession, user_id: int) -> int:
    """End every login of a user at once (password change, deactivation); returns how many."""
    return s.execute(delete(Session).where(Session.user_id == user_id)).rowcount or 0


def audit(s: DBSession, kind: str, username: str, *, actor: str | None = None, ip: str | None = None) -> None:
    s.add(AuthEvent(at=now(), kind=kind, username=username[:64], actor=actor, ip=ip))


def recent_events(s: DBSession, limit: int = 100, username: str | None = None) -> list[AuthEvent]:
    q = select(AuthEvent).order_by(AuthEvent.id.desc()).limit(max(1, min(limit, 10_000)))
    if username:
        q = q.where(or_(AuthEvent.username == username, AuthEvent.actor == username))
    return list(s.scalars(q))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_session(db: DBSession, user: User, seconds: int = SESSION_SECONDS) -> tuple[str, str]:
    """A new login for ``user``: returns (token, csrf_token). Expired sessions of the user are cleaned up."""
    t = now()
    db.execute(delete(Session).where(Session.user_id == user.id, Session.expires_at < t))
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    db.add(Session(token_hash=token_digest(token), user_id=user.id, csrf_token=csrf, created_at=t,
                   expires_at=t + seconds))
    return token, csrf


@dataclass
class Caller:
    """The authenticated user of a request, and how they authenticated."""

    user_id: int
    username: str
    role: str
    csrf_token: str
    via_cookie: bool
    token_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def resolve(db: DBSession, token: str | None, via_cookie: bool) -> Caller | None:
    if not token or len(token) > 256:
        return None
    row = db.execute(
        select(Session.token_hash, Session.csrf_token, Session.expires_at, User.id, User.username, User.role,
               User.active)
        .join(User, User.id == Session.user_id)
        .where(Session.token_hash == token_digest(token))).first()
    if row is None or row.expires_at < now() or not row.active:
        return None
    return Caller(row.id, row.username, row.role, row.csrf_token, via_cookie, row.token_hash)


def csrf_ok(caller: Caller, submitted: str | None) -> bool:
    if not caller.via_cookie:
        return True
    return bool(submitted) and hmac.compare_digest(caller.csrf_token, submitted)

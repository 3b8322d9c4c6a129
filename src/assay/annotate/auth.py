"""Who is calling, and may they do this?

* Passwords are hashed with Argon2id (argon2-cffi defaults, RFC 9106's second recommended parameters).
* A login creates a row in ``sessions`` keyed by the SHA-256 of a random token; the browser holds the token in an
  HttpOnly, SameSite=Lax cookie, API clients send it as ``Authorization: Bearer``. Logging out deletes the row.
* CSRF: every state-changing request authenticated by the cookie must carry the session's CSRF token (form field
  ``csrf_token`` or header ``X-CSRF-Token``); bearer-token requests carry no ambient credential and are exempt. The
  login form, before any session exists, uses a double-submit cookie.
* Authorisation is per project: admins see everything; everybody else sees only projects they are a member of, with
  the role of their membership (annotator or reviewer). Non-members get 404 so project ids don't leak.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, select
from sqlalchemy.orm import Session as DBSession

from assay.annotate.models import Membership, Project, Session, User, now

SESSION_COOKIE = "assay_session"
LOGIN_CSRF_COOKIE = "assay_login_csrf"
SESSION_SECONDS = 7 * 24 * 3600

_hasher = None


def _password_hasher():  # noqa: ANN202
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher

        _hasher = PasswordHasher()
    return _hasher


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("empty password")
    return _password_hasher().hash(password)


# Argon2 is deliberately expensive (CPU and 64 MiB per hash): a burst of logins must not starve the annotators
# already at work, so each process verifies at most two passwords at a time.
_VERIFY_SLOTS = threading.BoundedSemaphore(2)


def verify_password(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    with _VERIFY_SLOTS:
        try:
            return _password_hasher().verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


# A hash to verify against when the user does not exist, so the response time does not reveal valid usernames.
_DUMMY_HASH: str | None = None


def authenticate(db: DBSession, username: str, password: str) -> User | None:
    global _DUMMY_HASH
    user = db.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password("not-a-real-password")
        verify_password(_DUMMY_HASH, password or "x")
        return None
    return user if verify_password(user.password_hash, password) else None


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


def project_role(db: DBSession, caller: Caller, project_id: int) -> str | None:
    """``admin``, ``reviewer`` or ``annotator`` for this project, or None when the caller may not see it."""
    if caller.is_admin:
        return "admin" if db.get(Project, project_id) is not None else None
    return db.scalar(select(Membership.role).where(Membership.project_id == project_id,
                                                   Membership.user_id == caller.user_id))


def can_review(role: str | None) -> bool:
    return role in ("admin", "reviewer")


# One query answers "who is calling, what may they do in this project, and what is the project": every API call
# on a project pays for one round trip of authorisation, not three. Built once; SQLAlchemy caches its compilation.
_PROJECT_COLUMNS = (Project.id, Project.name, Project.task_type, Project.guidelines, Project.config, Project.overlap,
                    Project.gold_rate, Project.lease_seconds, Project.review, Project.created_at)
_AUTHORIZE = (
    select(Session.token_hash, Session.csrf_token, Session.expires_at, User.id.label("user_id"), User.username,
           User.role, User.active, Membership.role.label("member_role"),
           *[c.label(f"p_{c.key}") for c in _PROJECT_COLUMNS])
    .select_from(Session)
    .join(User, User.id == Session.user_id)
    .outerjoin(Membership, and_(Membership.user_id == User.id, Membership.project_id == bindparam("pid")))
    .outerjoin(Project, Project.id == bindparam("pid"))
    .where(Session.token_hash == bindparam("th")))


def resolve_for_project(db: DBSession, token: str | None, via_cookie: bool, project_id: int
                        ) -> tuple[Caller | None, str | None, Project | None]:
    """(caller, their role in the project or None, the project as a detached object or None)."""
    if not token or len(token) > 256:
        return None, None, None
    row = db.execute(_AUTHORIZE, {"pid": project_id, "th": token_digest(token)}).first()
    if row is None or row.expires_at < now() or not row.active:
        return None, None, None
    caller = Caller(row.user_id, row.username, row.role, row.csrf_token, via_cookie, row.token_hash)
    if row.p_id is None:
        return caller, None, None
    project = Project(**{c.key: getattr(row, f"p_{c.key}") for c in _PROJECT_COLUMNS})
    role = "admin" if caller.is_admin else row.member_role
    return caller, role, project

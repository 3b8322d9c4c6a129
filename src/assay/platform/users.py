"""User accounts, shared by every web service (the annotation app's annotators, reviewers and admins are the knowledge
layer's authors, reviewers and publishers): create one, find one, change a password, deactivate or reactivate.

A password change and a deactivation end every login of the user at once; both, like reactivation, go to the audit
log with the acting admin (``actor``; ``cli`` for the shell). What else deactivating means is each service's business
(the annotation workflow also hands the user's leased slots back to the queue: ``assay.annotate.workflow.set_active``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.platform import auth
from assay.platform.errors import Conflict, NotFound, RequestError
from assay.platform.models import ROLES, User, now

MIN_PASSWORD = 8


def create_user(s: Session, username: str, password: str, role: str = "annotator") -> User:
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise RequestError("username must be 1-64 characters without spaces")
    if role not in ROLES:
        raise RequestError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise RequestError(f"password must have at least {MIN_PASSWORD} characters")
    if s.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} exists")
    user = User(username=username, password_hash=auth.hash_password(password), role=role, active=True,
                created_at=now())
    s.add(user)
    s.flush()
    return user


def find_user(s: Session, username: str) -> User:
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def set_password(s: Session, username: str, password: str, actor: str | None = None) -> None:
    """Change a password; every existing login of the user ends at once."""
    user = find_user(s, username)
    if len(password) < MIN_PASSWORD:
        raise RequestError(f"password must have at least {MIN_PASSWORD} characters")
    user.password_hash = auth.hash_password(password)
    auth.revoke_sessions(s, user.id)
    auth.audit(s, "password_changed", user.username, actor=actor)


def set_active(s: Session, username: str, active: bool, actor: str | None = None) -> User:
    """Deactivate (offboard) or reactivate a user; deactivating ends every login of the user at once."""
    user = find_user(s, username)
    if not active and actor == user.username:
        raise RequestError("you cannot deactivate yourself")
    user.active = active
    if not active:
        auth.revoke_sessions(s, user.id)
    auth.audit(s, "reactivated" if active else "deactivated", user.username, actor=actor)
    return user

"""What a caller may do in an annotation project. Who the caller is comes from the shared layer
(:mod:`assay.platform.auth`); this module adds the project: admins see everything; everybody else sees only projects
they are a member of, with the role of their membership (annotator or reviewer). Non-members get 404 so project ids
don't leak.
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session as DBSession

from assay.annotate.models import Membership, Project
from assay.platform.auth import Caller, token_digest
from assay.platform.models import Session, User, now


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

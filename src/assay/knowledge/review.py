"""The review workflow's rules: who may do what in a domain, how many accepting reviews a patch needs, and what
status a set of reviews leads to.

* **Domain roles** (table ``knowledge_roles``): ``reviewer`` may review patches of the domain; ``publisher`` may sign
  (publish) and retract them; ``admin`` adjudicates conflicts and grants roles in the domain. A role in domain ``*``
  holds in every domain; a user whose global role is ``admin`` (``assay annotate create-user --role admin``) is an
  admin of every domain. Roles are independent: an admin is not a reviewer unless granted that too. A patch with
  several domains may be reviewed (published, adjudicated) by anyone holding the role in **any** of them.
* **Quorum**: a patch needs ``k`` accepting reviews from distinct reviewers who are not its authors; ``k`` is the
  largest quorum configured for its domains (``knowledge_domains``), else the store's default (2).
* **Decision** (:func:`decide`): an adjudication, when present, decides (accept → ``approved``, reject →
  ``rejected``). Otherwise accept and reject both present → ``needs_adjudication`` (a conflict, flagged in the change
  feed); ``k`` accepts → ``approved`` (waiting for a publisher's signature); ``k`` rejects → ``rejected``; some
  reviews → ``under_review``; none → ``proposed``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from assay.knowledge.models import DOMAIN_ROLES, KnowledgeDomain, KnowledgeRole
from assay.knowledge.patch import DOMAIN_RE, Review
from assay.platform.errors import RequestError
from assay.platform.models import User

DEFAULT_QUORUM = 2
ANY_DOMAIN = "*"


class KnowledgeError(RequestError):
    """A knowledge request that cannot be carried out (``status``: the HTTP status an API answers with)."""

    status = 400


class NotAllowed(KnowledgeError, PermissionError):
    """The user lacks the domain role, or the key lacks the purpose, for this action."""

    status = 403


class NotFound(KnowledgeError):
    status = 404


class Conflict(KnowledgeError):
    """The action does not fit the patch's current state (already reviewed, not approved yet, ...)."""

    status = 409


def check_domain(domain: str) -> str:
    d = domain.strip().lower()
    if d != ANY_DOMAIN and not DOMAIN_RE.match(d):
        raise KnowledgeError(f"bad domain {domain!r}: 1-64 characters of a-z 0-9 . _ / -")
    return d


def find_user(s: Session, username: str) -> User:
    user = s.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        raise NotFound(f"no active user {username!r} (create one with `assay annotate create-user`)")
    return user


# -- roles ---------------------------------------------------------------------------------------------------------
def grant(s: Session, username: str, domain: str, role: str) -> None:
    if role not in DOMAIN_ROLES:
        raise KnowledgeError(f"domain role must be one of {', '.join(DOMAIN_ROLES)}")
    user = find_user(s, username)
    domain = check_domain(domain)
    if s.get(KnowledgeRole, (user.id, domain, role)) is None:
        s.add(KnowledgeRole(user_id=user.id, domain=domain, role=role))
        s.flush()


def revoke(s: Session, username: str, domain: str, role: str) -> bool:
    user = find_user(s, username)
    res = s.execute(delete(KnowledgeRole).where(KnowledgeRole.user_id == user.id,
                                                KnowledgeRole.domain == check_domain(domain),
                                                KnowledgeRole.role == role))
    return bool(res.rowcount)


def list_roles(s: Session, username: str | None = None) -> list[dict[str, str]]:
    q = select(User.username, KnowledgeRole.domain, KnowledgeRole.role).join(User, User.id == KnowledgeRole.user_id)
    if username:
        q = q.where(User.username == username)
    return [{"user": u, "domain": d, "role": r}
            for u, d, r in s.execute(q.order_by(KnowledgeRole.domain, User.username, KnowledgeRole.role))]


def has_role(s: Session, user: User, domains: Iterable[str], role: str) -> bool:
    """Does ``user`` hold ``role`` in at least one of ``domains`` (or in ``*``; global admins are domain admins)?"""
    if role == "admin" and user.role == "admin":
        return True
    wanted = [*domains, ANY_DOMAIN]
    return s.scalar(select(KnowledgeRole.user_id).where(KnowledgeRole.user_id == user.id,
                                                        KnowledgeRole.role == role,
                                                        KnowledgeRole.domain.in_(wanted)).limit(1)) is not None


def require_role(s: Session, user: User, domains: Sequence[str], role: str, action: str) -> None:
    if not has_role(s, user, domains, role):
        article = "an" if role[0] in "aeiou" else "a"
        raise NotAllowed(f"{user.username} may not {action}: not {article} {role} of {', '.join(domains)} "
                         f"(grant with `assay knowledge grant {user.username} DOMAIN {role}`)")


# -- quorum --------------------------------------------------------------------------------------------------------
def set_quorum(s: Session, domain: str, quorum: int) -> None:
    if not 1 <= quorum <= 50:
        raise KnowledgeError("the quorum must be between 1 and 50 accepting reviews")
    domain = check_domain(domain)
    if domain == ANY_DOMAIN:
        raise KnowledgeError("set the store-wide default with KnowledgeStore(default_quorum=...)")
    row = s.get(KnowledgeDomain, domain)
    if row is None:
        s.add(KnowledgeDomain(domain=domain, quorum=quorum))
    else:
        row.quorum = quorum  # settings, not history: the quorum a patch was published under is in its signature
    s.flush()


def quorum_for(s: Session, domains: Sequence[str], default: int = DEFAULT_QUORUM) -> int:
    configured = list(s.scalars(select(KnowledgeDomain.quorum).where(KnowledgeDomain.domain.in_(list(domains)))))
    return max(configured) if configured else default


# -- decision ------------------------------------------------------------------------------------------------------
def decide(reviews: Sequence[Review], quorum: int) -> str:
    """The status a version's reviews lead to (see the module docstring)."""
    adjudications = [r for r in reviews if r.kind == "adjudication"]
    if adjudications:
        return "approved" if adjudications[-1].verdict == "accept" else "rejected"
    accepts = {r.reviewer for r in reviews if r.verdict == "accept"}
    rejects = {r.reviewer for r in reviews if r.verdict == "reject"}
    if accepts and rejects:
        return "needs_adjudication"
    if len(accepts) >= quorum:
        return "approved"
    if len(rejects) >= quorum:
        return "rejected"
    return "under_review" if reviews else "proposed"


def tally(reviews: Sequence[Review]) -> dict[str, int]:
    return {"accept": sum(r.kind == "review" and r.verdict == "accept" for r in reviews),
            "reject": sum(r.kind == "review" and r.verdict == "reject" for r in reviews),
            "adjudications": sum(r.kind == "adjudication" for r in reviews)}

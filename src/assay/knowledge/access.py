"""Who may read which patch versions, by status and domain.

* **Anonymous** readers (a server started with ``--public-read``, no login) read ``accepted`` versions only.
* **Logged-in** users read published history: ``accepted``, ``superseded`` and ``retracted`` versions.
* **Drafts** (``proposed``, ``under_review``, ``needs_adjudication``, ``approved``, ``rejected``), with their reviews
  and reviewer names, are read only by their authors, by users holding a knowledge role (reviewer, publisher,
  admin) in one of the patch's domains (``*``: all), and by global admins.
* The **local** reader (the library, the CLI, MCP over stdio: whoever can open the database) reads everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

PUBLIC_STATUSES = ("accepted",)
PUBLISHED_STATUSES = ("accepted", "superseded", "retracted")


@dataclass(frozen=True)
class Reader:
    name: str | None = None                  # None: anonymous
    everything: bool = False                 # the local, trusted reader
    is_admin: bool = False
    draft_domains: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_caller(cls, store: Any, caller: Any | None) -> "Reader":
        """The reader behind an annotation-server login (``assay.platform.auth.Caller``; None: anonymous)."""
        if caller is None:
            return ANONYMOUS
        return cls(name=caller.username, is_admin=caller.is_admin,
                   draft_domains=frozenset(r["domain"] for r in store.roles(caller.username)))

    @property
    def sees_all(self) -> bool:
        return self.everything or self.is_admin

    def may_read(self, status: str | None, domains: Sequence[str], authors: Sequence[str]) -> bool:
        if self.sees_all:
            return True
        if status is None:
            return False
        if self.name is None:
            return status in PUBLIC_STATUSES
        if status in PUBLISHED_STATUSES:
            return True
        return (self.name in authors or "*" in self.draft_domains
                or bool(self.draft_domains.intersection(domains)))

    def status_filter(self, requested: Sequence[str] | None) -> list[str] | None:
        """The status filter a search may use for this reader (None: every status; [] : nothing readable). Domain
        rights on drafts are checked on each hit afterwards."""
        if self.sees_all or (self.name is not None and self.draft_domains):
            return None if requested is None else list(requested)
        allowed = PUBLIC_STATUSES if self.name is None else PUBLISHED_STATUSES
        return [s for s in (requested if requested is not None else allowed) if s in allowed]


ANONYMOUS = Reader()
LOCAL = Reader(everything=True)

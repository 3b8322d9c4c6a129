"""``KnowledgeService``: the read side of the knowledge base, as the REST API and the MCP server use it.

Four calls, all returning JSON-able dicts: :meth:`~KnowledgeService.search`, :meth:`~KnowledgeService.get_patch`,
:meth:`~KnowledgeService.verify_patch`, :meth:`~KnowledgeService.changes_since`.

The search index (:class:`assay.knowledge.search.HybridIndex`) is fed from the store's change feed: before each
search the service reads the events after its cursor and re-indexes the versions they touched (a status change
re-indexes that one version). With a persistent index the cursor is kept in the index folder
(``feed_cursor.json``), so a restart re-reads only what changed since; a cursor saved for another database, or
beyond the end of this database's feed (a reset), re-indexes everything from the start.

Trust (see :mod:`assay.knowledge.trust`): the service trusts only what it was given out of band, never what its
database says on its own — the pinned root keys (``roots``), which make the stored key certificates, revocations and
checkpoints count, and keys pinned one by one (``public_keys``, trusted for both purposes, bound to no user).
Registered key rows are trusted only with ``trust_registered=True`` (a development convenience, never for a service
others rely on). Every status the service reports or filters on comes from the signed event log, verified
incrementally (:mod:`assay.knowledge.eventlog`); a broken log makes every verification fail with the place it broke.

Reading rights (:mod:`assay.knowledge.access`): every call takes a ``reader``; the default is the local reader, who
reads everything. Sizes are limited here, for every face alike: a query has at most :data:`MAX_QUERY_CHARS`
characters, a patch sent for verification at most :data:`MAX_DOCUMENT_BYTES` bytes of JSON.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from assay.knowledge.access import LOCAL, Reader
from assay.knowledge.eventlog import LogState, verify_events
from assay.knowledge.patch import Patch, verify
from assay.knowledge.review import KnowledgeError
from assay.knowledge.store import KnowledgeStore
from assay.knowledge.trust import TrustedKey, TrustRing
from assay.platform.db import Database

if TYPE_CHECKING:
    from assay.knowledge.search import HybridIndex

log = logging.getLogger(__name__)
CURSOR_FILE = "feed_cursor.json"
_SYNC_PAGE = 5000
MAX_QUERY_CHARS = 2000
MAX_DOCUMENT_BYTES = 1 << 20
VERIFIABLE_STATUSES = ("accepted", "superseded")  # a retracted or unpublished version does not verify


class TooLarge(KnowledgeError):
    """A query or document over the service's size limits."""

    status = 413


def index_doc(p: Patch) -> dict[str, Any]:
    """The index entry of a patch version (the text searched is the title and the content)."""
    return {"doc_id": p.ref(), "patch_id": p.patch_id, "version": p.version, "text": f"{p.title}\n{p.content}",
            "domains": list(p.domains), "status": p.status,
            "valid_from": p.valid_from.isoformat() if p.valid_from else None,
            "valid_to": p.valid_to.isoformat() if p.valid_to else None}


class KnowledgeService:
    """Search, fetch, verify and follow knowledge patches stored in ``db`` (see the module docstring)."""

    def __init__(self, db: Database, index: "HybridIndex | None" = None,
                 public_keys: dict[str, bytes] | None = None, *, store: KnowledgeStore | None = None,
                 roots: dict[str, bytes] | None = None, trust_registered: bool = False) -> None:
        self.db = db
        self.store = store or KnowledgeStore(db)
        self._index = index
        self.trusted_keys = dict(public_keys or {})
        self.roots = dict(roots or {})
        self.trust_registered = trust_registered
        self._log = LogState()
        self._log_basis: str | None = None
        self._ring: tuple[Any, tuple[TrustRing, list[dict[str, Any]], str]] | None = None
        self._lock = threading.RLock()
        self._cursor = self._load_cursor()
        self._cursor_checked = False

    # -- the index and its cursor ----------------------------------------------------------------------------------
    @property
    def index(self) -> "HybridIndex":
        """The search index (an in-memory one with the default embedder when none was given)."""
        with self._lock:
            if self._index is None:
                from assay.knowledge.search import HybridIndex

                self._index = HybridIndex(None)
            return self._index

    def _cursor_path(self) -> Path | None:
        path = getattr(self._index, "path", None)
        return Path(path) / CURSOR_FILE if path is not None else None

    def _load_cursor(self) -> int:
        path = self._cursor_path()
        if path is None or not path.exists():
            return 0
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("db") != self._db_identity():
                return 0
            return int(saved["cursor"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            log.warning("ignoring the feed cursor in %s (%s): re-indexing from the start", path, e)
            return 0

    def _save_cursor(self) -> None:
        path = self._cursor_path()
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"db": self._db_identity(), "cursor": self._cursor}), encoding="utf-8")
        os.replace(tmp, path)

    def _db_identity(self) -> str:
        return self.db.url.split("@")[-1]  # no credentials in a file on disk

    # -- trust and the verified log --------------------------------------------------------------------------------
    def trust_ring(self) -> tuple[TrustRing, list[dict[str, Any]], str]:
        """The keyring (pinned roots + the certificates and revocations that verify against them + keys pinned one
        by one [+ registered keys with ``trust_registered``]), the stored checkpoints, and a fingerprint of both.
        Rebuilt only when the stored trust documents (or, with ``trust_registered``, the registered keys) change."""
        version = (self.store.trust_version(),
                   tuple(sorted(self.store.public_keys())) if self.trust_registered else ())
        with self._lock:
            if self._ring is not None and self._ring[0] == version:
                return self._ring[1]
        docs = self.store.trust_documents()
        ring = TrustRing.from_roots(self.roots, docs["certificates"], docs["revocations"])
        for kid, raw in self.trusted_keys.items():
            ring.keys.setdefault(kid, TrustedKey(raw, None, {"reviewer", "publisher"}))
        if self.trust_registered:
            raw = self.store.public_keys()
            for k in self.store.list_keys():
                ring.keys.setdefault(k["key_id"], TrustedKey(raw[k["key_id"]], k["user"], set())
                                     ).purposes.add(k["purpose"])
        basis = json.dumps([sorted(self.roots), sorted(self.trusted_keys), self.trust_registered, docs,
                            self.store.list_keys() if self.trust_registered else []], sort_keys=True, default=str)
        with self._lock:
            self._ring = (version, (ring, docs["checkpoints"], basis))
        return ring, docs["checkpoints"], basis

    def log_state(self) -> LogState:
        """The event log verified up to its end (incrementally; from the start again when the trust changed)."""
        with self._lock:
            ring, checkpoints, basis = self.trust_ring()
            if basis != self._log_basis:
                self._log, self._log_basis = LogState(), basis
            self._log = verify_events(self.store.log_entries(self._log.seq), ring, checkpoints, self._log)
            if self._log.errors:
                log.error("knowledge event log: %s", "; ".join(self._log.errors))
            return self._log

    def sync(self) -> int:
        """Bring the index up to date with the verified change feed; returns the number of versions re-indexed.
        Statuses in the index are the verified ones; events past a break in the log are not indexed."""
        with self._lock:
            index = self.index
            state = self.log_state()
            page = self.store.changes(self._cursor, _SYNC_PAGE)
            if not self._cursor_checked and not page["changes"] and self._cursor > 0 \
                    and self._feed_end() < self._cursor:  # checked once: a saved cursor from a reset database
                log.warning("the index's cursor is ahead of the database's change feed: re-indexing from the start")
                self._cursor = 0
                page = self.store.changes(0, _SYNC_PAGE)
            self._cursor_checked = True
            updated = 0
            while page["changes"]:
                verified = [c for c in page["changes"] if c["seq"] <= state.seq]
                refs = list(dict.fromkeys((c["patch_id"], c["version"]) for c in verified))
                patches = self.store.get_many(refs)
                docs = [index_doc(self._with_status(patches[r], state)) for r in refs if r in patches]
                if docs:
                    index.upsert(docs)
                updated += len(docs)
                if len(verified) < len(page["changes"]):  # the log is broken after state.seq: stop there
                    self._cursor = state.seq
                    self._save_cursor()
                    break
                self._cursor = page["cursor"]
                self._save_cursor()
                if not page["more"]:
                    break
                page = self.store.changes(self._cursor, _SYNC_PAGE)
            return updated

    @staticmethod
    def _with_status(p: Patch, state: LogState) -> Patch:
        """``p`` with the status the verified log gives it (``proposed`` when the log says nothing)."""
        p.status = state.statuses.get((p.patch_id, p.version), "proposed")  # type: ignore[assignment]
        return p

    def _feed_end(self) -> int:
        from sqlalchemy import func, select

        from assay.knowledge.models import PatchEvent

        with self.db.read() as s:
            return s.scalar(select(func.max(PatchEvent.seq))) or 0

    def close(self) -> None:
        """Save and close the index when it has a folder (the database belongs to the caller)."""
        with self._lock:
            if self._index is not None:
                for name in ("save", "close"):
                    fn = getattr(self._index, name, None)
                    if callable(fn) and getattr(self._index, "path", None) is not None:
                        fn()

    # -- the four calls --------------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, *, domains: list[str] | None = None,
               status: Sequence[str] | None = ("accepted",), at: datetime | None = None,
               mode: str = "hybrid", reader: Reader = LOCAL) -> list[dict[str, Any]]:
        """The ``k`` best patch versions for ``query`` (newest matching version of each patch) that ``reader`` may
        read, filtered by domains (any of), status (any of; None: every status) and validity at ``at``. Each hit:
        patch_id, version, title, content, domains, status, score."""
        if len(query) > MAX_QUERY_CHARS:
            raise TooLarge(f"the query has {len(query):,} characters; at most {MAX_QUERY_CHARS:,}")
        statuses = reader.status_filter(list(status) if status else None)
        if statuses == []:
            return []
        self.sync()
        state = self._log
        depth = k if reader.sees_all or not reader.draft_domains else 4 * k
        hits = self.index.search(query, depth, mode=mode, domains=domains, status=statuses, at=at)
        refs = []
        for doc_id, _score in hits:
            pid, _, ver = doc_id.rpartition("@")
            refs.append((pid, int(ver)))
        patches = self.store.get_many(refs)
        out = []
        for (doc_id, score), ref in zip(hits, refs):
            p = patches.get(ref)
            if p is None:
                continue
            self._with_status(p, state)
            if (statuses is not None and p.status not in statuses) or not reader.may_read(p.status, p.domains,
                                                                                             p.authors):
                continue
            if len(out) == k:
                break
            out.append({"patch_id": p.patch_id, "version": p.version, "title": p.title, "content": p.content,
                        "domains": list(p.domains), "status": p.status, "score": float(score)})
        return out

    def _readable(self, patch_id: str, version: int | None, reader: Reader) -> Patch | None:
        """The version (None: the newest accepted per the verified log, else the newest verified) if ``reader`` may
        read it."""
        state = self.log_state()
        known = state.versions.get(patch_id, set())
        if version is None:
            accepted = [v for v in known if state.statuses[(patch_id, v)] == "accepted"]
            version = max(accepted or known, default=None)
        if version is None or version not in known:
            return None
        p = self.store.get(patch_id, version)
        if p is None:
            return None
        self._with_status(p, state)
        return p if reader.may_read(p.status, p.domains, p.authors) else None

    def get_patch(self, patch_id: str, version: int | None = None, *, reader: Reader = LOCAL
                  ) -> dict[str, Any] | None:
        """The full patch (reviews, signature, key id, verified status); ``version=None``: the newest accepted
        version, else the newest. None when there is no such patch or ``reader`` may not read it."""
        p = self._readable(patch_id, version, reader)
        return None if p is None else p.model_dump(mode="json")

    def verify_patch(self, patch: dict[str, Any] | str, version: int | None = None, *,
                     reader: Reader = LOCAL) -> dict[str, Any]:
        """Verify a patch: a dict as given (a copy the caller holds), a string as the id of a stored one
        (``version``: which one). Checks (see :func:`assay.knowledge.patch.verify`): content hash, publisher
        signature and reviews against the pinned trust; ``log``: the event log verifies; ``status``: per the
        log this version is accepted (or superseded by a newer one), not retracted or unpublished."""
        if isinstance(patch, str):
            found = self._readable(patch, version, reader)
            if found is None:
                return {"valid": False, "patch_id": patch, "version": version,
                        "checks": {"content_hash": False, "signature": False, "reviews": False, "log": False,
                                   "status": False},
                        "errors": [f"no patch {patch}" + (f" version {version}" if version else "")]}
            target: Any = found
        else:
            size = len(json.dumps(patch, ensure_ascii=False, default=str).encode("utf-8"))
            if size > MAX_DOCUMENT_BYTES:
                raise TooLarge(f"the patch document has {size:,} bytes; at most {MAX_DOCUMENT_BYTES:,}")
            target = patch
        ring, _checkpoints, _basis = self.trust_ring()
        res = verify(target, trust=ring).as_dict()
        state = self.log_state()
        res["checks"]["log"] = state.intact
        res["errors"] += state.errors
        ref = (res["patch_id"], res["version"])
        status = state.statuses.get(ref) if res["patch_id"] else None
        res["status"] = status
        res["checks"]["status"] = status in VERIFIABLE_STATUSES
        if not res["checks"]["status"]:
            last = state.last_event.get(ref)
            why = f" ({last.detail['reason']})" if last is not None and last.detail.get("reason") else ""
            res["errors"].append(f"status: {res['patch_id']}@{res['version']} is "
                                 f"{status or 'not in this knowledge base'}{why} per the signed event log")
        res["valid"] = all(res["checks"].values()) and not res["errors"]
        return res

    def changes_since(self, cursor: int = 0, limit: int = 100, *, reader: Reader = LOCAL) -> dict[str, Any]:
        """Verified events after ``cursor``: ``{"changes": [{"seq", "patch_id", "version", "event", "status",
        "at"}...], "cursor": last seq, "more": bool}``; pass the returned cursor back to continue. Events of
        versions ``reader`` may not read are left out (the cursor still moves past them)."""
        state = self.log_state()
        page = self.store.changes(cursor, limit)
        changes = [c for c in page["changes"] if c["seq"] <= state.seq]
        if len(changes) < len(page["changes"]):
            page["more"] = False
            page["cursor"] = changes[-1]["seq"] if changes else int(cursor)
        if not reader.sees_all:
            refs = list(dict.fromkeys((c["patch_id"], c["version"]) for c in changes))
            patches = self.store.get_many(refs)
            readable = {r for r in refs if r in patches and reader.may_read(
                state.statuses.get(r), patches[r].domains, patches[r].authors)}
            changes = [c for c in changes if (c["patch_id"], c["version"]) in readable]
        page["changes"] = changes
        return page

"""``KnowledgeService``: the read side of the knowledge base, as the REST API and the MCP server use it.

Four calls, all returning JSON-able dicts: :meth:`~KnowledgeService.search`, :meth:`~KnowledgeService.get_patch`,
:meth:`~KnowledgeService.verify_patch`, :meth:`~KnowledgeService.changes_since`.

The search index (:class:`assay.knowledge.search.HybridIndex`) is fed from the store's change feed: before each
search the service reads the events after its cursor and re-indexes the versions they touched (a status change
re-indexes that one version). With a persistent index the cursor is kept in the index folder
(``feed_cursor.json``), so a restart re-reads only what changed since; a cursor saved for another database, or
beyond the end of this database's feed (a reset), re-indexes everything from the start.

Trust: ``verify_patch`` accepts a patch signed by a registered ``publisher`` key, with reviews signed by registered
``reviewer`` keys; keys passed as ``public_keys`` are trusted for both (a deployment's pinned keys). A reviewer's
registered key never passes as a publisher's.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from assay.annotate.db import Database
from assay.knowledge.patch import Patch, verify
from assay.knowledge.store import KnowledgeStore

if TYPE_CHECKING:
    from assay.knowledge.search import HybridIndex

log = logging.getLogger(__name__)
CURSOR_FILE = "feed_cursor.json"
_SYNC_PAGE = 5000


def index_doc(p: Patch) -> dict[str, Any]:
    """The index entry of a patch version (the text searched is the title and the content)."""
    return {"doc_id": p.ref(), "patch_id": p.patch_id, "version": p.version, "text": f"{p.title}\n{p.content}",
            "domains": list(p.domains), "status": p.status,
            "valid_from": p.valid_from.isoformat() if p.valid_from else None,
            "valid_to": p.valid_to.isoformat() if p.valid_to else None}


class KnowledgeService:
    """Search, fetch, verify and follow knowledge patches stored in ``db`` (see the module docstring)."""

    def __init__(self, db: Database, index: "HybridIndex | None" = None,
                 public_keys: dict[str, bytes] | None = None, *, store: KnowledgeStore | None = None) -> None:
        self.db = db
        self.store = store or KnowledgeStore(db)
        self._index = index
        self.trusted_keys = dict(public_keys or {})
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

    def sync(self) -> int:
        """Bring the index up to date with the change feed; returns the number of versions re-indexed."""
        with self._lock:
            index = self.index
            page = self.store.changes(self._cursor, _SYNC_PAGE)
            if not self._cursor_checked and not page["changes"] and self._cursor > 0 \
                    and self._feed_end() < self._cursor:  # checked once: a saved cursor from a reset database
                log.warning("the index's cursor is ahead of the database's change feed: re-indexing from the start")
                self._cursor = 0
                page = self.store.changes(0, _SYNC_PAGE)
            self._cursor_checked = True
            updated = 0
            while page["changes"]:
                refs = list(dict.fromkeys((c["patch_id"], c["version"]) for c in page["changes"]))
                patches = self.store.get_many(refs)
                docs = [index_doc(patches[r]) for r in refs if r in patches]
                if docs:
                    index.upsert(docs)
                updated += len(docs)
                self._cursor = page["cursor"]
                self._save_cursor()
                if not page["more"]:
                    break
                page = self.store.changes(self._cursor, _SYNC_PAGE)
            return updated

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
               mode: str = "hybrid") -> list[dict[str, Any]]:
        """The ``k`` best patch versions for ``query`` (newest matching version of each patch), filtered by domains
        (any of), status (any of; None: every status) and validity at ``at``. Each hit: patch_id, version, title,
        content, domains, status, score."""
        self.sync()
        hits = self.index.search(query, k, mode=mode, domains=domains, status=list(status) if status else None,
                                 at=at)
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
            out.append({"patch_id": p.patch_id, "version": p.version, "title": p.title, "content": p.content,
                        "domains": list(p.domains), "status": p.status, "score": float(score)})
        return out

    def get_patch(self, patch_id: str, version: int | None = None) -> dict[str, Any] | None:
        """The full patch (reviews, signature, key id, current status); ``version=None``: the newest accepted version,
        else the newest. None when there is no such patch."""
        p = self.store.get(patch_id, version)
        return None if p is None else p.model_dump(mode="json")

    def keyrings(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(reviewer keys, publisher keys) trusted for verification: the registered ones plus the pinned ones."""
        reviewers = {**self.store.public_keys("reviewer"), **self.trusted_keys}
        publishers = {**self.store.public_keys("publisher"), **self.trusted_keys}
        return reviewers, publishers

    def verify_patch(self, patch: dict[str, Any] | str, version: int | None = None) -> dict[str, Any]:
        """Verify a patch. A dict is checked offline from its own content (no lookup of the stored copy); a string is
        a patch id, fetched from the store (``version``: which one). See :func:`assay.knowledge.patch.verify`."""
        if isinstance(patch, str):
            found = self.store.get(patch, version)
            if found is None:
                return {"valid": False, "patch_id": patch, "version": version,
                        "checks": {"content_hash": False, "signature": False, "reviews": False},
                        "errors": [f"no patch {patch}" + (f" version {version}" if version else "")]}
            target: Any = found
        else:
            target = patch
        reviewers, publishers = self.keyrings()
        return verify(target, reviewers, publisher_keys=publishers).as_dict()

    def changes_since(self, cursor: int = 0, limit: int = 100) -> dict[str, Any]:
        """Events after ``cursor``: ``{"changes": [{"seq", "patch_id", "version", "event", "status", "at"}...],
        "cursor": last seq, "more": bool}``; pass the returned cursor back to continue."""
        return self.store.changes(cursor, limit)

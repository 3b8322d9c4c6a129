"""``KnowledgeStore``: knowledge patches in the annotation server's database — append-only versions, signed
reviews, signed publications, and the change feed.

Nothing is overwritten: a change to a patch is a new version (``supersedes`` the one it replaces, which stays
retrievable by version); reviews, publications and status changes are new rows; the database refuses UPDATE and
DELETE on these tables. Every write runs in one transaction that first takes the knowledge write lock (``BEGIN
IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL), so workflow decisions never race and change
feed rows commit in ``seq`` order: a client that read up to ``seq`` n never later finds a new row below n.

Signing happens where the private key is: :meth:`KnowledgeStore.review` and :meth:`KnowledgeStore.publish` take a
key and sign locally, then hand the signed document to :meth:`submit_review` / :meth:`submit_publication`, which an
API can call with documents signed on the client. Both check the signature against the key registered for that
user and purpose (``reviewer`` keys review, ``publisher`` keys publish, never the other way round).
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from assay.knowledge import eventlog
from assay.knowledge import keys as keylib
from assay.knowledge import review as rules
from assay.knowledge import trust as trustlib
from assay.knowledge.models import (CheckpointRow, KeyCertificateRow, KeyRevocationRow, KnowledgeKey, PatchEvent,
                                    PatchPublication, PatchReview, PatchVersion)
from assay.knowledge.patch import (OPEN_STATUSES, Patch, PatchRef, Review, check_signature, new_patch, sign_patch,
                                   sign_review, utcnow, verify)
from assay.knowledge.review import Conflict, KnowledgeError, NotAllowed, NotFound
from assay.platform.db import Database
from assay.platform.models import User, now

_PG_LOCK_KEY = 0x4B4E4F57  # "KNOW": the advisory lock that serialises knowledge writes on PostgreSQL


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KnowledgeStore:
    """Patches, reviews, publications and the change feed over a :class:`~assay.platform.db.Database` (migrated to
    revision 0003 or later)."""

    def __init__(self, db: Database, *, default_quorum: int = rules.DEFAULT_QUORUM) -> None:
        if not 1 <= default_quorum <= 50:
            raise ValueError("default_quorum must be between 1 and 50")
        self.db = db
        self.default_quorum = default_quorum

    # -- transactions ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self) -> Iterator[Session]:
        with self.db.write() as s:
            if not self.db.is_sqlite:
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            yield s

    @staticmethod
    def _entries(s: Session, after: int = 0, limit: int | None = None, *, last: bool = False) -> list[eventlog.Entry]:
        """Events as log entries (see :mod:`assay.knowledge.eventlog`), in ``seq`` order (``last``: only the last)."""
        q = (select(PatchEvent.seq, PatchEvent.patch_id, PatchEvent.version, PatchEvent.event, PatchEvent.status,
                    User.username, PatchEvent.detail, PatchEvent.at, PatchEvent.key_id, PatchEvent.signature)
             .outerjoin(User, User.id == PatchEvent.user_id).where(PatchEvent.seq > after))
        q = q.order_by(PatchEvent.seq.desc()).limit(1) if last else q.order_by(PatchEvent.seq)
        if limit is not None and not last:
            q = q.limit(limit)
        return [eventlog.Entry.from_row(*row) for row in s.execute(q)]

    def _head(self, s: Session) -> tuple[int, str]:
        """The last event's seq and hash (the writer's bookkeeping: verifiers recompute every hash themselves).
        Events written before revision 0006 have no stored hash: then the chain is hashed from the start."""
        row = s.execute(select(PatchEvent.seq, PatchEvent.entry_hash).order_by(PatchEvent.seq.desc()).limit(1)).first()
        if row is None:
            return 0, eventlog.GENESIS
        if row.entry_hash:
            return row.seq, row.entry_hash
        prev = eventlog.GENESIS
        for e in self._entries(s):
            prev = eventlog.entry_hash(e.payload(prev))
        return row.seq, prev

    def _event(self, s: Session, patch_id: str, version: int, event: str, status: str, user: User,
               key: Ed25519PrivateKey | None, detail: dict[str, Any] | None = None) -> None:
        """Append an event to the log, chained to the one before and signed by the acting user's ``key`` (under the
        write lock, so nothing can come between reading the head and writing after it)."""
        seq, prev = self._head(s)
        entry = eventlog.Entry(seq=seq + 1, patch_id=patch_id, version=version, event=event, status=status,
                               user=user.username, detail=json.loads(json.dumps(detail or {}, sort_keys=True)),
                               at=now())
        h = eventlog.seal(entry, prev, key)
        s.add(PatchEvent(seq=entry.seq, patch_id=patch_id, version=version, event=event, status=status,
                         user_id=user.id, detail=json.dumps(entry.detail, sort_keys=True), at=entry.at,
                         key_id=entry.key_id, signature=entry.signature, entry_hash=h))
        s.flush()

    # -- roles, quorum, keys ---------------------------------------------------------------------------------------
    def grant(self, username: str, domain: str, role: str) -> None:
        with self._writing() as s:
            rules.grant(s, username, domain, role)

    def revoke(self, username: str, domain: str, role: str) -> bool:
        with self._writing() as s:
            return rules.revoke(s, username, domain, role)

    def roles(self, username: str | None = None) -> list[dict[str, str]]:
        with self.db.read() as s:
            return rules.list_roles(s, username)

    def set_quorum(self, domain: str, quorum: int) -> None:
        with self._writing() as s:
            rules.set_quorum(s, domain, quorum)

    def quorum(self, domains: Sequence[str]) -> int:
        with self.db.read() as s:
            return rules.quorum_for(s, domains, self.default_quorum)

    def register_key(self, username: str, public_key: bytes | str, purpose: str) -> str:
        """Register a user's public key for ``purpose`` (``publisher`` or ``reviewer``); returns its key id."""
        if purpose not in keylib.PURPOSES:
            raise KnowledgeError(f"key purpose must be one of {', '.join(keylib.PURPOSES)}")
        try:
            raw = keylib.parse_public_key(public_key)
        except keylib.KeyFileError as e:
            raise KnowledgeError(str(e)) from None
        kid = keylib.key_id(raw)
        with self._writing() as s:
            user = rules.find_user(s, username)
            existing = s.get(KnowledgeKey, kid)
            if existing is not None:
                if existing.user_id == user.id and existing.purpose == purpose:
                    return kid
                raise Conflict(f"key {kid} is already registered (to another user or for another purpose); "
                               "use one key per user and purpose")
            s.add(KnowledgeKey(key_id=kid, user_id=user.id, purpose=purpose, public_key=raw.hex(), created_at=now()))
        return kid

    def public_keys(self, purpose: str | None = None) -> dict[str, bytes]:
        """Registered keys (key id → raw bytes), all or those of one purpose."""
        with self.db.read() as s:
            q = select(KnowledgeKey.key_id, KnowledgeKey.public_key)
            if purpose:
                q = q.where(KnowledgeKey.purpose == purpose)
            return {k: bytes.fromhex(v) for k, v in s.execute(q)}

    def list_keys(self) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.execute(select(KnowledgeKey.key_id, User.username, KnowledgeKey.purpose, KnowledgeKey.created_at)
                             .join(User, User.id == KnowledgeKey.user_id).order_by(KnowledgeKey.created_at))
            return [{"key_id": k, "user": u, "purpose": p, "created_at": _iso(t)} for k, u, p, t in rows]

    @staticmethod
    def _key_of(s: Session, kid: str, user: User, purpose: str | None, action: str) -> bytes:
        """The registered public key ``kid`` of ``user`` for ``purpose`` (None: any), refused once revoked."""
        row = s.get(KnowledgeKey, kid)
        if row is None:
            raise NotAllowed(f"key {kid} is not registered (register it with `assay knowledge keygen` or "
                             "`register-key`)")
        if row.user_id != user.id:
            raise NotAllowed(f"key {kid} belongs to another user, not {user.username}")
        if purpose is not None and row.purpose != purpose:
            raise NotAllowed(f"key {kid} is a {row.purpose} key: only a registered {purpose} key can {action}")
        if s.scalar(select(KeyRevocationRow.id).where(KeyRevocationRow.key_id == kid).limit(1)) is not None:
            raise NotAllowed(f"key {kid} was revoked: it may not {action} any more (certify a new key)")
        return bytes.fromhex(row.public_key)

    # -- trust: certificates, revocations, checkpoints (each signed by a root key) ----------------------------------
    def certify(self, root: Ed25519PrivateKey, key_id: str | None = None) -> list[trustlib.KeyCertificate]:
        """Sign a certificate with the ``root`` key binding a registered key (``key_id``; None: every registered key
        not yet certified by this root) to its user and purpose; returns the new certificates."""
        root_id = keylib.key_id(root)
        made = []
        with self._writing() as s:
            q = select(KnowledgeKey, User.username).join(User, User.id == KnowledgeKey.user_id)
            if key_id is not None:
                q = q.where(KnowledgeKey.key_id == key_id)
            rows = list(s.execute(q.order_by(KnowledgeKey.created_at)))
            if key_id is not None and not rows:
                raise NotFound(f"no registered key {key_id}")
            done = {(d["key_id"], d["issuer"]) for d in s.scalars(select(KeyCertificateRow.document))}
            for key, username in rows:
                if (key.key_id, root_id) in done:
                    continue
                cert = trustlib.certify(root, username, bytes.fromhex(key.public_key), key.purpose)
                s.add(KeyCertificateRow(key_id=key.key_id, document=cert.model_dump(mode="json"), created_at=now()))
                made.append(cert)
        return made

    def revoke_key(self, root: Ed25519PrivateKey, key_id: str, reason: str,
                   revoked_at: datetime | None = None) -> trustlib.KeyRevocation:
        """Record a root-signed revocation of ``key_id`` (``compromised`` or ``rotated``, see
        :mod:`assay.knowledge.trust`); the store refuses the key for any new signature from now on."""
        try:
            rev = trustlib.revoke(root, key_id, reason, revoked_at)
        except ValueError as e:
            raise KnowledgeError(str(e)) from None
        with self._writing() as s:
            if s.get(KnowledgeKey, key_id) is None:
                raise NotFound(f"no registered key {key_id}")
            s.add(KeyRevocationRow(key_id=key_id, document=rev.model_dump(mode="json"), created_at=now()))
        return rev

    def checkpoint(self, root: Ed25519PrivateKey) -> trustlib.Checkpoint | None:
        """Sign the log's current head with the ``root`` key (None when the log is empty): it vouches for every event
        up to there, including unsigned ones written before revision 0006, and shows later truncation."""
        with self._writing() as s:
            seq, head = self._head(s)
            if seq == 0:
                return None
            cp = trustlib.sign_checkpoint(root, seq, head)
            s.add(CheckpointRow(seq=seq, document=cp.model_dump(mode="json"), created_at=now()))
        return cp

    def trust_documents(self) -> dict[str, list[dict[str, Any]]]:
        """Every stored certificate, revocation and checkpoint (what a verifier checks against its pinned roots)."""
        with self.db.read() as s:
            return {name: list(s.scalars(select(model.document).order_by(model.id)))
                    for name, model in (("certificates", KeyCertificateRow), ("revocations", KeyRevocationRow),
                                        ("checkpoints", CheckpointRow))}

    def trust_version(self) -> tuple[int, ...]:
        """Changes whenever a certificate, revocation or checkpoint is added (one query; for caching keyrings)."""
        cols = [select(f(m.id)).scalar_subquery() for m in (KeyCertificateRow, KeyRevocationRow, CheckpointRow)
                for f in (func.count, func.max)]
        with self.db.read() as s:
            return tuple(s.execute(select(*cols)).one())

    def log_entries(self, after: int = 0, limit: int | None = None) -> list[eventlog.Entry]:
        """Log entries after ``after`` in ``seq`` order, for :func:`assay.knowledge.eventlog.verify_events`."""
        with self.db.read() as s:
            return self._entries(s, after, limit)

    # -- reading ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _status(s: Session, patch_id: str, version: int) -> str | None:
        return s.scalar(select(PatchEvent.status).where(PatchEvent.patch_id == patch_id, PatchEvent.version == version)
                        .order_by(PatchEvent.seq.desc()).limit(1))

    @staticmethod
    def _version_row(s: Session, patch_id: str, version: int) -> PatchVersion:
        row = s.scalar(select(PatchVersion).where(PatchVersion.patch_id == patch_id, PatchVersion.version == version))
        if row is None:
            raise NotFound(f"no patch {patch_id} version {version}")
        return row

    @staticmethod
    def _reviews(s: Session, patch_id: str, version: int) -> list[Review]:
        docs = s.scalars(select(PatchReview.document).where(PatchReview.patch_id == patch_id,
                                                            PatchReview.version == version).order_by(PatchReview.id))
        return [Review.model_validate(d) for d in docs]

    def _build(self, s: Session, row: PatchVersion) -> Patch:
        status = self._status(s, row.patch_id, row.version) or "proposed"
        pub = s.scalar(select(PatchPublication.document).where(PatchPublication.patch_id == row.patch_id,
                                                               PatchPublication.version == row.version))
        reviews = None if pub is not None else [r.model_dump(mode="json")
                                                for r in self._reviews(s, row.patch_id, row.version)]
        return self._assemble(row, status, pub, reviews)

    @staticmethod
    def _assemble(row: PatchVersion, status: str, publication: dict | None, reviews: list[dict] | None) -> Patch:
        """A version as a Patch: the signed publication document when there is one, else the content document with
        the reviews so far; with the current status either way."""
        if publication is not None:
            p = Patch.model_validate(publication)
            p.status = status
            return p
        return Patch.model_validate({**row.document, "content_hash": row.content_hash, "status": status,
                                     "reviews": reviews or []})

    def _current_version(self, s: Session, patch_id: str) -> int | None:
        """The newest accepted version, else the newest version."""
        accepted = s.scalars(select(PatchPublication.version).where(PatchPublication.patch_id == patch_id)
                             .order_by(PatchPublication.version.desc()))
        for v in accepted:
            if self._status(s, patch_id, v) == "accepted":
                return v
        return s.scalar(select(func.max(PatchVersion.version)).where(PatchVersion.patch_id == patch_id))

    def get(self, patch_id: str, version: int | None = None) -> Patch | None:
        """A version (``version=None``: the newest accepted one, else the newest), with its reviews, signature (when
        published) and current status; None when there is no such patch or version."""
        with self.db.read() as s:
            if version is None:
                version = self._current_version(s, patch_id)
                if version is None:
                    return None
            row = s.scalar(select(PatchVersion).where(PatchVersion.patch_id == patch_id,
                                                      PatchVersion.version == version))
            return None if row is None else self._build(s, row)

    def get_many(self, refs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Patch]:
        """Several versions at once (for search results and index feeding): four queries per 500 patch ids."""
        out: dict[tuple[str, int], Patch] = {}
        if not refs:
            return out
        wanted = set(refs)
        ids = sorted({p for p, _ in wanted})
        with self.db.read() as s:
            for k in range(0, len(ids), 500):
                chunk = ids[k:k + 500]
                status: dict[tuple[str, int], str] = {}
                for pid, ver, st in s.execute(select(PatchEvent.patch_id, PatchEvent.version, PatchEvent.status)
                                              .where(PatchEvent.patch_id.in_(chunk)).order_by(PatchEvent.seq)):
                    status[(pid, ver)] = st  # the latest event wins
                pubs = {(pid, ver): doc for pid, ver, doc in s.execute(
                    select(PatchPublication.patch_id, PatchPublication.version, PatchPublication.document)
                    .where(PatchPublication.patch_id.in_(chunk)))}
                reviews: dict[tuple[str, int], list[dict]] = {}
                for pid, ver, doc in s.execute(select(PatchReview.patch_id, PatchReview.version, PatchReview.document)
                                               .where(PatchReview.patch_id.in_(chunk)).order_by(PatchReview.id)):
                    reviews.setdefault((pid, ver), []).append(doc)
                for row in s.scalars(select(PatchVersion).where(PatchVersion.patch_id.in_(chunk))):
                    ref = (row.patch_id, row.version)
                    if ref in wanted:
                        out[ref] = self._assemble(row, status.get(ref, "proposed"), pubs.get(ref),
                                                  reviews.get(ref))
        return out

    def history(self, patch_id: str) -> dict[str, Any]:
        """Every version (number, status, content hash, author, time) and every event of a patch."""
        with self.db.read() as s:
            rows = list(s.execute(select(PatchVersion.version, PatchVersion.content_hash, PatchVersion.created_at,
                                         User.username).join(User, User.id == PatchVersion.author_id)
                                  .where(PatchVersion.patch_id == patch_id).order_by(PatchVersion.version)))
            if not rows:
                raise NotFound(f"no patch {patch_id}")
            versions = [{"version": v, "status": self._status(s, patch_id, v), "content_hash": h,
                         "author": u, "created_at": _iso(t)} for v, h, t, u in rows]
            events = [self._event_dict(e, u) for e, u in s.execute(
                select(PatchEvent, User.username).outerjoin(User, User.id == PatchEvent.user_id)
                .where(PatchEvent.patch_id == patch_id).order_by(PatchEvent.seq))]
        return {"patch_id": patch_id, "versions": versions, "events": events}

    @staticmethod
    def _event_dict(e: PatchEvent, username: str | None = None) -> dict[str, Any]:
        d = {"seq": e.seq, "patch_id": e.patch_id, "version": e.version, "event": e.event, "status": e.status,
             "at": _iso(e.at)}
        if username is not None:
            d["user"] = username
        detail = json.loads(e.detail or "{}")
        if detail:
            d["detail"] = detail
        return d

    def changes(self, cursor: int = 0, limit: int = 100) -> dict[str, Any]:
        """Events after ``cursor`` in ``seq`` order: ``{"changes": [...], "cursor": last seq, "more": bool}``."""
        limit = max(1, min(int(limit), 10_000))
        with self.db.read() as s:
            rows = list(s.scalars(select(PatchEvent).where(PatchEvent.seq > int(cursor)).order_by(PatchEvent.seq)
                                  .limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return {"changes": [self._event_dict(e) for e in rows], "cursor": rows[-1].seq if rows else int(cursor),
                "more": more}

    # -- proposing -------------------------------------------------------------------------------------------------
    def propose(self, author: str, *, title: str, content: str, domains: Sequence[str],
                sources: Sequence[dict[str, Any]] | None = None, coauthors: Sequence[str] = (),
                valid_from: datetime | None = None, valid_to: datetime | None = None,
                supersedes: str | None = None, key: Ed25519PrivateKey | None = None) -> Patch:
        """A new patch (version 1), or with ``supersedes=PATCH_ID`` a new version of that patch; status ``proposed``.
        The new version supersedes the patch's accepted version (else its newest) once it is itself published.
        ``key``: the author's registered key, to sign the ``proposed`` event (optional: a proposal grants nothing)."""
        with self._writing() as s:
            user = rules.find_user(s, author)
            if key is not None:
                self._key_of(s, keylib.key_id(key), user, None, "sign a proposal")
            authors = [user.username] + [a for a in coauthors if a != user.username]
            for a in authors[1:]:
                rules.find_user(s, a)  # co-authors are users, so that they cannot review their own patch
            patch_id, version, ref = None, 1, None
            if supersedes:
                patch_id = supersedes
                latest = s.scalar(select(func.max(PatchVersion.version)).where(PatchVersion.patch_id == patch_id))
                if latest is None:
                    raise NotFound(f"no patch {patch_id} to supersede")
                for v in range(1, latest + 1):
                    st = self._status(s, patch_id, v)
                    if st in OPEN_STATUSES:
                        raise Conflict(f"version {v} of {patch_id} is still {st}: finish or reject it before "
                                       "proposing another version")
                version = latest + 1
                ref = PatchRef(patch_id=patch_id, version=self._current_version(s, patch_id) or latest)
            try:
                patch = new_patch(title=title, content=content, domains=list(domains), authors=authors,
                                  sources=list(sources or []), valid_from=valid_from, valid_to=valid_to,
                                  patch_id=patch_id, version=version, supersedes=ref)
            except ValueError as e:  # pydantic's ValidationError is a ValueError
                raise KnowledgeError(f"invalid patch: {e}") from None
            s.add(PatchVersion(patch_id=patch.patch_id, version=patch.version, author_id=user.id,
                               document=patch.content_document(), content_hash=patch.content_hash, created_at=now()))
            s.flush()
            self._event(s, patch.patch_id, patch.version, "proposed", "proposed", user, key,
                        {"supersedes": ref.version} if ref else None)
        return patch

    # -- reviewing -------------------------------------------------------------------------------------------------
    def review(self, patch_id: str, version: int, reviewer: str, verdict: str, key: Ed25519PrivateKey,
               comment: str = "", *, adjudicate: bool = False) -> Patch:
        """Sign a review (or, ``adjudicate=True``, an admin's ruling on a conflict) with ``key`` and submit it."""
        with self.db.read() as s:
            content_hash = self._version_row(s, patch_id, version).content_hash
        try:
            r = Review(patch_id=patch_id, version=version, content_hash=content_hash, reviewer=reviewer,
                       key_id=keylib.key_id(key), kind="adjudication" if adjudicate else "review", verdict=verdict,
                       comment=comment, at=utcnow())
        except ValueError as e:
            raise KnowledgeError(f"invalid review: {e}") from None
        return self.submit_review(sign_review(r, key), key)

    def submit_review(self, review: Review | dict[str, Any], key: Ed25519PrivateKey) -> Patch:
        """Record a signed review after checking the reviewer's domain role, key and signature, authorship, and that
        the version is open for it; returns the patch with its new status. ``key`` (the reviewer's, the one that
        signed the review) signs the log events the review causes."""
        try:
            r = review if isinstance(review, Review) else Review.model_validate(review)
        except ValueError as e:
            raise KnowledgeError(f"invalid review: {e}") from None
        with self._writing() as s:
            row = self._version_row(s, r.patch_id, r.version)
            user = rules.find_user(s, r.reviewer)
            domains = row.document["domains"]
            status = self._status(s, r.patch_id, r.version)
            if r.kind == "review":
                rules.require_role(s, user, domains, "reviewer", "review this patch")
                if status not in ("proposed", "under_review"):
                    raise Conflict(f"{r.patch_id}@{r.version} is {status}: it takes no more reviews"
                                   + (" (an admin adjudicates)" if status == "needs_adjudication" else ""))
            else:
                rules.require_role(s, user, domains, "admin", "adjudicate this patch")
                if status != "needs_adjudication":
                    raise Conflict(f"{r.patch_id}@{r.version} is {status}: only a conflict is adjudicated")
            if user.username in row.document["authors"] or user.id == row.author_id:
                raise NotAllowed(f"{user.username} is an author of {r.patch_id}@{r.version} and may not review it")
            if r.content_hash != row.content_hash:
                raise Conflict("the review judged other content (content hash mismatch)")
            raw = self._key_of(s, r.key_id, user, "reviewer", "sign reviews")
            if keylib.key_id(key) != r.key_id:
                raise NotAllowed("the log events of a review are signed with the key that signed the review")
            errors: list[str] = []
            if not check_signature(r.payload(), r.signature, r.key_id, {r.key_id: raw}, "review", errors):
                raise NotAllowed("; ".join(errors))
            earlier = self._reviews(s, r.patch_id, r.version)
            if any(e.reviewer == user.username and e.kind == r.kind for e in earlier):
                raise Conflict(f"{user.username} already reviewed {r.patch_id}@{r.version}")
            if r.kind == "adjudication" and any(e.reviewer == user.username for e in earlier):
                raise NotAllowed(f"{user.username} reviewed this version and may not also adjudicate it")
            # (under the write lock nobody can slip a review in between; the unique constraint is the backstop)
            s.add(PatchReview(patch_id=r.patch_id, version=r.version, reviewer_id=user.id, kind=r.kind,
                              verdict=r.verdict, document=r.model_dump(mode="json"), created_at=now()))
            s.flush()
            reviews = earlier + [r]
            quorum = rules.quorum_for(s, domains, self.default_quorum)
            new_status = rules.decide(reviews, quorum)
            self._event(s, r.patch_id, r.version, "review", new_status, user, key,
                        {"kind": r.kind, "verdict": r.verdict, **rules.tally(reviews), "quorum": quorum})
            if new_status == "needs_adjudication" and status != "needs_adjudication":
                self._event(s, r.patch_id, r.version, "conflict", new_status, user, key, rules.tally(reviews))
            elif new_status == "rejected":
                self._event(s, r.patch_id, r.version, "rejected", new_status, user, key, rules.tally(reviews))
            return self._build(s, row)

    # -- publishing ------------------------------------------------------------------------------------------------
    def publish(self, patch_id: str, version: int, publisher: str, key: Ed25519PrivateKey) -> Patch:
        """Sign an approved version with the publisher's key and publish it (see :meth:`submit_publication`)."""
        with self.db.read() as s:
            row = self._version_row(s, patch_id, version)
            p = self._build(s, row)
            quorum = rules.quorum_for(s, row.document["domains"], self.default_quorum)
        if p.status != "approved":
            raise Conflict(self._not_ready(p, quorum))
        return self.submit_publication(sign_patch(p, key, publisher=publisher, quorum=quorum), key)

    @staticmethod
    def _not_ready(p: Patch, quorum: int) -> str:
        t = rules.tally(p.reviews)
        return (f"{p.ref()} is {p.status}, not approved: it has {t['accept']} of {quorum} accepting review(s)"
                + (", and a conflict to adjudicate" if p.status == "needs_adjudication" else ""))

    def submit_publication(self, signed: Patch | dict[str, Any], key: Ed25519PrivateKey) -> Patch:
        """Record a publisher-signed patch: the signer must be a publisher of the patch's domain signing with their
        registered publisher key; the document must carry exactly the stored content and reviews, and verify.
        Marks the version it supersedes ``superseded``. ``key`` (the one that signed the patch) signs the log
        events."""
        try:
            p = signed if isinstance(signed, Patch) else Patch.model_validate(signed)
        except ValueError as e:
            raise KnowledgeError(f"invalid patch: {e}") from None
        with self._writing() as s:
            row = self._version_row(s, p.patch_id, p.version)
            stored = self._build(s, row)
            if stored.status != "approved":
                raise Conflict(self._not_ready(stored, rules.quorum_for(s, row.document["domains"],
                                                                        self.default_quorum)))
            if not p.publisher or not p.key_id:
                raise KnowledgeError("the patch names no publisher or key")
            user = rules.find_user(s, p.publisher)
            rules.require_role(s, user, row.document["domains"], "publisher", "publish this patch")
            raw = self._key_of(s, p.key_id, user, "publisher", "publish")
            if keylib.key_id(key) != p.key_id:
                raise NotAllowed("the log events of a publication are signed with the key that signed the patch")
            if (p.content_document() != stored.content_document() or p.content_hash != row.content_hash
                    or [r.model_dump(mode="json") for r in p.reviews]
                    != [r.model_dump(mode="json") for r in stored.reviews]):
                raise Conflict("the signed document differs from the stored content or reviews")
            reviewer_keys = {k: bytes.fromhex(v) for k, v in s.execute(
                select(KnowledgeKey.key_id, KnowledgeKey.public_key).where(KnowledgeKey.purpose == "reviewer"))}
            ring = trustlib.TrustRing.pinned(reviewer_keys, {p.key_id: raw})
            owners = {kid: name for kid, name in s.execute(select(KnowledgeKey.key_id, User.username)
                                                           .join(User, User.id == KnowledgeKey.user_id))}
            for kid, tk in ring.keys.items():
                tk.user = owners.get(kid)  # a review counts for the user its key is registered to, and only once
            check = verify(p, trust=ring)
            if not check.valid:
                raise NotAllowed("the publication does not verify: " + "; ".join(check.errors))
            s.add(PatchPublication(patch_id=p.patch_id, version=p.version, publisher_id=user.id, key_id=p.key_id,
                                   document=p.model_dump(mode="json", exclude={"status"}), published_at=now()))
            s.flush()
            self._event(s, p.patch_id, p.version, "accepted", "accepted", user, key, {"key_id": p.key_id})
            if p.supersedes is not None:
                old = p.supersedes
                if self._status(s, old.patch_id, old.version) == "accepted":
                    self._event(s, old.patch_id, old.version, "superseded", "superseded", user, key,
                                {"by": p.version})
            return self._build(s, row)

    def retract(self, patch_id: str, version: int, by: str, reason: str, key: Ed25519PrivateKey) -> Patch:
        """Withdraw an accepted version (a publisher or admin of its domain, signing with their registered
        publisher ``key``); the reason goes into the feed."""
        if not reason.strip():
            raise KnowledgeError("a retraction needs a reason")
        with self._writing() as s:
            row = self._version_row(s, patch_id, version)
            user = rules.find_user(s, by)
            domains = row.document["domains"]
            if not (rules.has_role(s, user, domains, "publisher") or rules.has_role(s, user, domains, "admin")):
                raise NotAllowed(f"{by} may not retract: not a publisher or admin of {', '.join(domains)}")
            self._key_of(s, keylib.key_id(key), user, "publisher", "sign a retraction")
            status = self._status(s, patch_id, version)
            if status != "accepted":
                raise Conflict(f"{patch_id}@{version} is {status}: only an accepted version is retracted")
            self._event(s, patch_id, version, "retracted", "retracted", user, key, {"reason": reason.strip()})
            return self._build(s, row)

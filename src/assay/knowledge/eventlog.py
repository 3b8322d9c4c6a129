"""The change feed as a signed hash chain: every status a patch version has is established by signed log entries.

Each event (a row of ``knowledge_events``) has an **entry**: ``seq``, patch id, version, event, status after it, the
acting user's name, detail, time, the key id that signed it, and ``prev`` — the hash of the entry before it (64
zeros for the first). Its hash is SHA-256 of ``"assay-knowledge-event-v1\\n"`` + the entry's canonical JSON, and the
acting user signs those same bytes with their key when the event is written (reviewer key for ``review``,
``conflict`` and ``rejected``; publisher key for ``accepted``, ``superseded`` and ``retracted``). ``proposed`` may be
unsigned: authors need no key, and a proposal grants nothing.

:func:`verify_events` replays the log in ``seq`` order and checks, for every entry: the chain (``prev`` is the
recomputed hash of the entry before; so **deleting, inserting or reordering** any event breaks the next signature),
the signature by a key the verifier trusts for that purpose and that user (:class:`~assay.knowledge.trust.TrustRing`),
and that the event is a legal step of the version's lifecycle (``proposed`` first, ``accepted`` only after
``approved``, ``retracted``/``superseded`` only after ``accepted``). Unsigned entries other than ``proposed`` (written
before events were signed) are accepted only below a root-signed :class:`~assay.knowledge.trust.Checkpoint` whose
head hash matches; so are entries signed by a key revoked as compromised (after a compromise the administrators
check the log and seal it with a new checkpoint). A checkpoint beyond the end of the log means the log was cut
short.

The replay stops at the first bad entry: statuses are those established before it, and the error says where.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from assay.knowledge import keys as keylib
from assay.knowledge.patch import OPEN_STATUSES, _b64, canonical_json
from assay.knowledge.trust import Checkpoint, TrustRing

EVENT_CONTEXT = b"assay-knowledge-event-v1\n"
GENESIS = "0" * 64
#: the key purpose that signs each event
SIGNER_PURPOSE = {"proposed": "reviewer", "review": "reviewer", "conflict": "reviewer", "rejected": "reviewer",
                  "accepted": "publisher", "superseded": "publisher", "retracted": "publisher"}
#: event -> (statuses it may follow, statuses it may lead to)
_STEPS = {
    "review": (("proposed", "under_review", "needs_adjudication"),
               ("under_review", "approved", "rejected", "needs_adjudication")),
    "conflict": (OPEN_STATUSES, ("needs_adjudication",)),
    "rejected": (OPEN_STATUSES + ("rejected",), ("rejected",)),
    "accepted": (("approved",), ("accepted",)),
    "superseded": (("accepted",), ("superseded",)),
    "retracted": (("accepted",), ("retracted",)),
}


def iso_at(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Entry:
    """One event as the log signs it (``signature`` aside)."""

    seq: int
    patch_id: str
    version: int
    event: str
    status: str
    user: str | None
    detail: dict[str, Any]
    at: float
    key_id: str | None = None
    signature: str | None = None

    def payload(self, prev: str) -> bytes:
        body = {"seq": self.seq, "patch_id": self.patch_id, "version": self.version, "event": self.event,
                "status": self.status, "user": self.user, "detail": self.detail, "at": iso_at(self.at),
                "key_id": self.key_id, "prev": prev}
        return EVENT_CONTEXT + canonical_json(body)

    @staticmethod
    def from_row(seq: int, patch_id: str, version: int, event: str, status: str, user: str | None,
                 detail: str | None, at: float, key_id: str | None, signature: str | None) -> "Entry":
        return Entry(seq, patch_id, version, event, status, user, json.loads(detail or "{}"), at, key_id, signature)


def entry_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def seal(entry: Entry, prev: str, key: Ed25519PrivateKey | None) -> str:
    """Sign ``entry`` (in place) after ``prev`` with ``key`` (None: unsigned); returns the entry's hash."""
    entry.key_id = keylib.key_id(key) if key is not None else None
    payload = entry.payload(prev)
    entry.signature = _b64(key.sign(payload)) if key is not None else None
    return entry_hash(payload)


@dataclass
class LogState:
    """What a replay established: the last good ``seq`` and its hash, each version's status, and the errors."""

    seq: int = 0
    head: str = GENESIS
    statuses: dict[tuple[str, int], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    broken_at: int | None = None
    last_event: dict[tuple[str, int], Entry] = field(default_factory=dict)
    versions: dict[str, set[int]] = field(default_factory=dict)  # patch id -> versions with verified events

    @property
    def intact(self) -> bool:
        return not self.errors


def verify_events(entries: Iterable[Entry], trust: TrustRing, checkpoints: Iterable[Checkpoint | dict] = (),
                  state: LogState | None = None, *, complete: bool = True) -> LogState:
    """Replay ``entries`` (in ``seq`` order, continuing ``state`` when given); see the module docstring.
    ``complete``: these are all entries up to the end of the log (so a checkpoint beyond them is an error)."""
    st = state or LogState()
    if st.broken_at is not None:
        return st
    cps: dict[int, Checkpoint] = {}
    for raw in checkpoints:
        cp = trust.accepts_checkpoint(raw)
        if cp is not None:
            cps[cp.seq] = cp
    sealed_until = max(cps, default=0)
    for e in entries:
        if e.seq <= st.seq:
            continue
        problem = _check(e, st, trust, sealed_until)
        h = entry_hash(e.payload(st.head))
        if problem is None and e.seq in cps and cps[e.seq].head_hash != h:
            problem = "the log differs from the root-signed checkpoint at this seq"
        if problem is not None:
            st.errors.append(f"event log broken at seq {e.seq} ({e.event} of {e.patch_id}@{e.version}): {problem}")
            st.broken_at = e.seq
            return st
        st.seq, st.head = e.seq, h
        st.statuses[(e.patch_id, e.version)] = e.status
        st.last_event[(e.patch_id, e.version)] = e
        st.versions.setdefault(e.patch_id, set()).add(e.version)
    beyond = [s for s in cps if s > st.seq]
    if complete and beyond:
        st.errors.append(f"event log cut short: a root-signed checkpoint vouches for seq {max(beyond)}, "
                         f"the log ends at {st.seq}")
        st.broken_at = st.seq + 1
    return st


def _check(e: Entry, st: LogState, trust: TrustRing, sealed_until: int) -> str | None:
    if e.seq != st.seq + 1:
        return f"expected seq {st.seq + 1} (an event is missing or was inserted)"
    before = st.statuses.get((e.patch_id, e.version))
    if e.event == "proposed":
        if before is not None or e.status != "proposed":
            return "a version is proposed once, as its first event"
    elif e.event not in _STEPS:
        return f"unknown event {e.event!r}"
    else:
        after_ok = _STEPS[e.event]
        if before not in after_ok[0] or e.status not in after_ok[1]:
            return f"{e.event} cannot take a version from {before} to {e.status}"
    if e.signature is None:
        if e.event == "proposed" or e.seq <= sealed_until:
            return None
        return ("not signed, and no root-signed checkpoint covers it (events written before revision 0006: run "
                "`assay knowledge trust init --root-key ROOT.key` once)")
    errors: list[str] = []
    at = datetime.fromtimestamp(e.at, timezone.utc)
    vouched = e.seq <= sealed_until  # a revoked key's entries stand where a root checkpoint vouches for them
    purposes = (SIGNER_PURPOSE[e.event],) if e.event != "proposed" else ("reviewer", "publisher")  # any author key
    for purpose in purposes:
        errors.clear()
        if trust.check(e.payload(st.head), e.signature, e.key_id, purpose, e.user, at, "signature", errors,
                       vouched=vouched):
            return None
    return "; ".join(errors)

"""Knowledge patches and reviews: the models, their canonical serialisation, content hash, and Ed25519 signatures.

A **patch** is one unit of vetted knowledge (a statement with its title, domains, sources, authors, validity
interval), versioned under a stable ``patch_id``. A **review** is one expert's signed verdict on one version. When a
version has enough accepting reviews, a publisher signs the whole patch, reviews included.

Canonical serialisation (what is hashed and signed)
    The model is dumped to JSON types (``model_dump(mode="json")``), then written as JSON with keys sorted, no
    whitespace (separators ``,`` and ``:``), non-ASCII characters as themselves, encoded as UTF-8. Numbers are
    integers only: a float anywhere in a signed document is refused (floats have several textual forms). Times are
    UTC, written ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six fractional digits); a time without a zone is taken as
    UTC. Strings are signed exactly as given (no Unicode normalisation). Domains are lower-cased, de-duplicated and
    sorted when a patch is built, so the same set of domains always serialises the same way.

What is covered
    * ``content_hash`` = SHA-256 (hex) of the canonical JSON of the content fields :data:`CONTENT_FIELDS` (the
      statement and its identity: patch id, version, supersedes, title, content, domains, sources, authors,
      validity, creation time).
    * A review's signature (by the reviewer's key) covers every field of the review except ``signature``:
      patch id, version and the content hash it judged, reviewer, key id, kind, verdict, comment, time. A review
      cannot be moved to another patch or version, or to edited content.
    * The patch signature (by the publisher's key) covers every field except ``signature`` and ``status``,
      **including the reviews with their signatures**, the quorum, publisher, publication time and key id. Editing
      one byte of content, of a domain, or of a review's verdict or comment makes verification fail.
    * ``status`` is left out on purpose: it is lifecycle state that changes after publication (accepted →
      superseded / retracted) without the publisher re-signing. A valid signature means "the publisher published
      exactly this, with these reviews"; whether it is still current comes from the signed, hash-chained event log
      (:mod:`assay.knowledge.eventlog`).
    * Quorum counts keys: each key may sign one review of a version, so one person cannot make a quorum under
      several names. Who may sign at all is the verifier's keyring (:mod:`assay.knowledge.trust`).
    * Each payload starts with a context line (``assay-knowledge-patch-v1`` / ``assay-knowledge-review-v1``), so a
      signature made for a review can never pass as a patch signature or the other way round.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, ValidationError, field_validator,
                      model_validator)

from assay.knowledge import keys as keylib

if TYPE_CHECKING:
    from assay.knowledge.trust import TrustRing

#: proposed → under_review → approved (quorum reached, waiting for the publisher) → accepted (signed);
#: under_review → needs_adjudication (accept and reject both present) → approved | rejected;
#: under_review → rejected; accepted → retracted | superseded.
STATUSES = ("proposed", "under_review", "needs_adjudication", "approved", "accepted", "rejected", "retracted",
            "superseded")
OPEN_STATUSES = ("proposed", "under_review", "needs_adjudication", "approved")
VERDICTS = ("accept", "reject")
REVIEW_KINDS = ("review", "adjudication")
CONTENT_FIELDS = ("patch_id", "version", "supersedes", "title", "content", "domains", "sources", "authors",
                  "valid_from", "valid_to", "created_at")
PATCH_CONTEXT = b"assay-knowledge-patch-v1\n"
REVIEW_CONTEXT = b"assay-knowledge-review-v1\n"
DOMAIN_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,63}$")
PATCH_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_TITLE, MAX_CONTENT, MAX_COMMENT = 500, 200_000, 20_000


# -- canonical form ------------------------------------------------------------------------------------------------
def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def iso_utc(value: datetime) -> str:
    """The one textual form of a time in signed documents: UTC, microseconds, ``Z``."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


UTCDateTime = Annotated[datetime, AfterValidator(_utc), PlainSerializer(iso_utc, return_type=str, when_used="json")]


def _reject_floats(obj: Any, where: str = "$") -> None:
    if isinstance(obj, float):
        raise TypeError(f"floats are not allowed in a signed document (at {where})")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"object keys must be strings (at {where})")
            _reject_floats(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _reject_floats(v, f"{where}[{i}]")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8, integers only (see the module docstring)."""
    _reject_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def new_patch_id() -> str:
    """A time-ordered id (like UUIDv7): 48 bits of Unix milliseconds, then 80 random bits, as 32 hex digits."""
    return f"{int(time.time() * 1000) & (2**48 - 1):012x}{secrets.token_hex(10)}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _b64(sig: bytes) -> str:
    return base64.b64encode(sig).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


# -- models --------------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=False)


class PatchRef(_Strict):
    patch_id: str
    version: int = Field(ge=1)


class Source(_Strict):
    """Evidence for a patch: a URL, an Assay record id, or both; an optional title and quoted passage."""

    url: str | None = None
    record_id: str | None = None
    title: str = ""
    quote: str = ""

    @model_validator(mode="after")
    def _has_pointer(self) -> "Source":
        if not (self.url or self.record_id):
            raise ValueError("a source needs a url or a record_id")
        return self


class Review(_Strict):
    """One reviewer's verdict on one version (``kind="adjudication"``: an admin's ruling on conflicting reviews)."""

    patch_id: str
    version: int = Field(ge=1)
    content_hash: str
    reviewer: str
    key_id: str
    kind: Literal["review", "adjudication"] = "review"
    verdict: Literal["accept", "reject"]
    comment: str = Field(default="", max_length=MAX_COMMENT)
    at: UTCDateTime
    signature: str | None = None

    def payload(self) -> bytes:
        """The bytes the reviewer signs."""
        return REVIEW_CONTEXT + canonical_json(self.model_dump(mode="json", exclude={"signature"}))


class Patch(_Strict):
    """A knowledge patch version; see the module docstring for what the hash and the signatures cover."""

    patch_id: str
    version: int = Field(default=1, ge=1)
    supersedes: PatchRef | None = None
    title: str = Field(min_length=1, max_length=MAX_TITLE)
    content: str = Field(min_length=1, max_length=MAX_CONTENT)
    domains: list[str] = Field(min_length=1)
    sources: list[Source] = Field(default_factory=list)
    authors: list[str] = Field(min_length=1)
    valid_from: UTCDateTime | None = None
    valid_to: UTCDateTime | None = None
    created_at: UTCDateTime
    content_hash: str = ""
    status: Literal["proposed", "under_review", "needs_adjudication", "approved", "accepted", "rejected",
                    "retracted", "superseded"] = "proposed"
    quorum: int | None = Field(default=None, ge=1)  # accepting reviews the publisher required (set at publication)
    reviews: list[Review] = Field(default_factory=list)
    publisher: str | None = None
    published_at: UTCDateTime | None = None
    key_id: str | None = None
    signature: str | None = None

    @field_validator("patch_id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not PATCH_ID_RE.match(v):
            raise ValueError("patch_id must be 32 lower-case hex digits")
        return v

    @field_validator("domains")
    @classmethod
    def _check_domains(cls, v: list[str]) -> list[str]:
        out = sorted({d.strip().lower() for d in v})
        for d in out:
            if not DOMAIN_RE.match(d):
                raise ValueError(f"bad domain {d!r}: 1-64 characters of a-z 0-9 . _ / - , starting with a letter "
                                 "or digit")
        return out

    @field_validator("authors")
    @classmethod
    def _check_authors(cls, v: list[str]) -> list[str]:
        if any(not a or a != a.strip() for a in v):
            raise ValueError("author names must be non-empty without surrounding spaces")
        if len(set(v)) != len(v):
            raise ValueError("an author is listed twice")
        return v

    @model_validator(mode="after")
    def _check_validity(self) -> "Patch":
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        if self.supersedes is not None and (self.supersedes.patch_id != self.patch_id
                                            or self.supersedes.version >= self.version):
            raise ValueError("a version supersedes an earlier version of the same patch")
        return self

    # -- hashing and signing ---------------------------------------------------------------------------------------
    def content_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(CONTENT_FIELDS))

    def compute_content_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.content_document())).hexdigest()

    def payload(self) -> bytes:
        """The bytes the publisher signs: everything except ``signature`` and ``status``."""
        return PATCH_CONTEXT + canonical_json(self.model_dump(mode="json", exclude={"signature", "status"}))

    def ref(self) -> str:
        return f"{self.patch_id}@{self.version}"


def new_patch(*, title: str, content: str, domains: list[str], authors: list[str],
              sources: list[dict | Source] | None = None, valid_from: datetime | None = None,
              valid_to: datetime | None = None, patch_id: str | None = None, version: int = 1,
              supersedes: PatchRef | dict | None = None, created_at: datetime | None = None) -> Patch:
    """A new, unsigned version (status ``proposed``) with its content hash filled in."""
    p = Patch(patch_id=patch_id or new_patch_id(), version=version, supersedes=supersedes, title=title,
              content=content, domains=domains, sources=sources or [], authors=authors, valid_from=valid_from,
              valid_to=valid_to, created_at=created_at or utcnow())
    p.content_hash = p.compute_content_hash()
    return p


def sign_review(review: Review, key: Ed25519PrivateKey) -> Review:
    """Return ``review`` with ``key_id`` set to the key's id and signed by it."""
    r = review.model_copy(update={"key_id": keylib.key_id(key), "signature": None})
    r.signature = _b64(key.sign(r.payload()))
    return r


def sign_patch(patch: Patch, key: Ed25519PrivateKey, *, publisher: str, quorum: int,
               published_at: datetime | None = None) -> Patch:
    """Return ``patch`` published: quorum, publisher, time and key id set, signed over :meth:`Patch.payload`."""
    p = patch.model_copy(update={"publisher": publisher, "quorum": quorum,
                                 "published_at": _utc(published_at or utcnow()), "key_id": keylib.key_id(key),
                                 "signature": None, "status": "accepted"})
    p.signature = _b64(key.sign(p.payload()))
    return p


# -- verification --------------------------------------------------------------------------------------------------
@dataclass
class Verification:
    """The outcome of :func:`verify`: one flag per check, and the reasons of every failure."""

    patch_id: str | None
    version: int | None
    checks: dict[str, bool] = field(default_factory=lambda: {"content_hash": False, "signature": False,
                                                             "reviews": False})
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return all(self.checks.values()) and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "patch_id": self.patch_id, "version": self.version, "checks": dict(self.checks),
                "errors": list(self.errors)}


def check_signature(payload: bytes, signature: str | None, kid: str | None, trusted: Mapping[str, bytes],
                     what: str, errors: list[str]) -> bool:
    if not signature or not kid:
        errors.append(f"{what}: not signed")
        return False
    raw = trusted.get(kid)
    if raw is None:
        errors.append(f"{what}: unknown key {kid!r} (not among the {len(trusted)} trusted key(s))")
        return False
    try:
        if keylib.key_id(raw) != kid:
            errors.append(f"{what}: the trusted key listed as {kid!r} has id {keylib.key_id(raw)!r}")
            return False
        keylib.public_from_raw(raw).verify(_unb64(signature), payload)
    except InvalidSignature:
        errors.append(f"{what}: bad signature (the signed content was changed, or another key signed it)")
        return False
    except (binascii.Error, ValueError, keylib.KeyFileError) as e:
        errors.append(f"{what}: malformed signature or key ({e})")
        return False
    return True


def _check_reviews(p: Patch, trust: "TrustRing", errors: list[str]) -> bool:
    ok = True
    seen: set[tuple[str, str]] = set()
    signer_of: dict[str, str] = {}  # key id -> the reviewer name it signed for
    for i, r in enumerate(p.reviews):
        what = f"review {i} by {r.reviewer}"
        if not trust.check(r.payload(), r.signature, r.key_id, "reviewer", r.reviewer, r.at, what, errors):
            ok = False
        if (r.patch_id, r.version, r.content_hash) != (p.patch_id, p.version, p.content_hash):
            errors.append(f"{what}: judged {r.patch_id}@{r.version} with content hash {r.content_hash[:12]}…, "
                          f"not this version's content")
            ok = False
        if r.reviewer in p.authors:
            errors.append(f"{what}: an author reviewed their own patch")
            ok = False
        if (r.reviewer, r.kind) in seen:
            errors.append(f"{what}: the same reviewer appears twice")
            ok = False
        seen.add((r.reviewer, r.kind))
        if r.key_id in signer_of:  # a quorum counts keys (people), not the names written next to them
            errors.append(f"{what}: key {r.key_id} already signed the review of {signer_of[r.key_id]}: "
                          "one key counts once")
            ok = False
        signer_of.setdefault(r.key_id, r.reviewer)
    if p.signature is None:  # not published: only the review signatures can be checked
        return ok
    adjudications = [r for r in p.reviews if r.kind == "adjudication"]
    accepts = {r.key_id for r in p.reviews if r.kind == "review" and r.verdict == "accept"}
    rejects = {r.key_id for r in p.reviews if r.kind == "review" and r.verdict == "reject"}
    if adjudications:
        if adjudications[-1].verdict != "accept":
            errors.append("reviews: the adjudication rejected this patch")
            ok = False
    elif rejects:
        errors.append("reviews: a reviewer rejected this patch and there is no adjudication")
        ok = False
    elif len(accepts) < (p.quorum or 1):
        errors.append(f"reviews: {len(accepts)} accepting review(s) by distinct keys, the quorum is {p.quorum}")
        ok = False
    return ok


def verify(patch: Patch | Mapping[str, Any] | str | bytes, public_keys: Mapping[str, bytes] | None = None, *,
           publisher_keys: Mapping[str, bytes] | None = None, trust: "TrustRing | None" = None) -> Verification:
    """Check a patch offline: its content hash, the publisher's signature, and every review's signature plus the
    acceptance rule (no author reviewed, distinct reviewers, one review per key, quorum of accepts by distinct
    keys or an accepting adjudication).

    ``trust`` (a :class:`~assay.knowledge.trust.TrustRing`: keys certified by pinned root keys, bound to users,
    with revocations) says who may sign. Without it, ``public_keys`` (key id → 32 raw bytes) are pinned as the
    reviewer keys, and also as the publisher keys unless ``publisher_keys`` is given: then only those may have
    signed the patch, so a reviewer's key cannot publish. Never raises on bad input: a malformed patch is reported
    in ``errors``.
    """
    from assay.knowledge.trust import TrustRing  # trust builds on this module's canonical form

    ring = trust if trust is not None else TrustRing.pinned(public_keys, publisher_keys)
    if isinstance(patch, Patch):
        p = patch
    else:
        try:
            p = (Patch.model_validate_json(patch) if isinstance(patch, (str, bytes))
                 else Patch.model_validate(dict(patch)))
        except ValidationError as e:
            pid = patch.get("patch_id") if isinstance(patch, Mapping) else None
            ver = patch.get("version") if isinstance(patch, Mapping) else None
            res = Verification(pid if isinstance(pid, str) else None, ver if isinstance(ver, int) else None)
            first = e.errors()[0]
            res.errors.append(f"malformed patch: {'.'.join(map(str, first['loc']))}: {first['msg']}"
                              + (f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""))
            return res
    res = Verification(p.patch_id, p.version)
    try:
        h = p.compute_content_hash()
        res.checks["content_hash"] = h == p.content_hash
        if not res.checks["content_hash"]:
            res.errors.append(f"content hash mismatch: computed {h[:16]}…, the patch says {p.content_hash[:16]}…")
        res.checks["signature"] = ring.check(p.payload(), p.signature, p.key_id, "publisher", p.publisher,
                                             p.published_at, "publisher signature", res.errors)
        res.checks["reviews"] = _check_reviews(p, ring, res.errors)
    except TypeError as e:  # a float smuggled into a document
        res.errors.append(f"not canonical: {e}")
    return res

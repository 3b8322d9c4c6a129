"""Who is trusted to sign: root keys, key certificates, revocations, and the keyring a verifier checks against.

The trust model
    * A deployment has one or more **root keys** (``assay knowledge keygen --purpose root``), kept offline by its
      administrators. Verifiers **pin** the root public keys (a file they were given out of band); nothing a
      database says can add a root.
    * A **key certificate** binds one publisher or reviewer key to one user and one purpose, signed by a root key.
      A key is trusted only through a certificate that verifies against a pinned root (or when the verifier pins
      the key itself, see :meth:`TrustRing.pinned`). A key row inserted into the database without a certificate
      is trusted by nobody.
    * A **revocation**, signed by a root key, withdraws a key: ``compromised`` invalidates every signature the key
      ever made; ``rotated`` (the user moved to a new key, the old one was not leaked) invalidates signatures dated
      at or after ``revoked_at`` and keeps older ones valid.
    * A **checkpoint**, signed by a root key, vouches for the event log up to a sequence number and head hash (see
      :mod:`assay.knowledge.eventlog`): it covers events written before events were signed, and lets a verifier
      notice a log cut short below it.

Every document starts its signed bytes with its own context line, so no signature can pass as another kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Iterable, Literal, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field

from assay.knowledge import keys as keylib
from assay.knowledge.patch import UTCDateTime, _b64, _Strict, canonical_json, check_signature, utcnow

CERT_CONTEXT = b"assay-knowledge-keycert-v1\n"
REVOCATION_CONTEXT = b"assay-knowledge-keyrevoke-v1\n"
CHECKPOINT_CONTEXT = b"assay-knowledge-checkpoint-v1\n"
CERTIFIED_PURPOSES = ("publisher", "reviewer")
REVOCATION_REASONS = ("compromised", "rotated")


class _Signed(_Strict):
    context: ClassVar[bytes] = b""

    def payload(self) -> bytes:
        return self.context + canonical_json(self.model_dump(mode="json", exclude={"signature"}))


class KeyCertificate(_Signed):
    """``issuer`` (a root key id) certifies that ``public_key`` belongs to ``user`` for ``purpose``."""

    context: ClassVar[bytes] = CERT_CONTEXT
    user: str = Field(min_length=1, max_length=150)
    key_id: str
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$")
    purpose: Literal["publisher", "reviewer"]
    issued_at: UTCDateTime
    issuer: str
    signature: str | None = None


class KeyRevocation(_Signed):
    """``issuer`` (a root key id) withdraws ``key_id`` (see the module docstring for the two reasons)."""

    context: ClassVar[bytes] = REVOCATION_CONTEXT
    key_id: str
    reason: Literal["compromised", "rotated"]
    revoked_at: UTCDateTime
    issued_at: UTCDateTime
    issuer: str
    signature: str | None = None


class Checkpoint(_Signed):
    """``issuer`` (a root key id) vouches that the event log's entry ``seq`` has hash ``head_hash``."""

    context: ClassVar[bytes] = CHECKPOINT_CONTEXT
    seq: int = Field(ge=1)
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    signed_at: UTCDateTime
    issuer: str
    signature: str | None = None


def _sign(doc: _Signed, root: Ed25519PrivateKey) -> _Signed:
    doc.signature = _b64(root.sign(doc.payload()))
    return doc


def certify(root: Ed25519PrivateKey, user: str, public_key: bytes, purpose: str,
            issued_at: datetime | None = None) -> KeyCertificate:
    if purpose not in CERTIFIED_PURPOSES:
        raise ValueError(f"a certificate is for a {' or '.join(CERTIFIED_PURPOSES)} key, not {purpose!r}")
    return _sign(KeyCertificate(user=user, key_id=keylib.key_id(public_key), public_key=public_key.hex(),
                                purpose=purpose, issued_at=issued_at or utcnow(), issuer=keylib.key_id(root)), root)


def revoke(root: Ed25519PrivateKey, key_id: str, reason: str, revoked_at: datetime | None = None) -> KeyRevocation:
    if reason not in REVOCATION_REASONS:
        raise ValueError(f"the reason is {' or '.join(REVOCATION_REASONS)}, not {reason!r}")
    at = utcnow()
    return _sign(KeyRevocation(key_id=key_id, reason=reason, revoked_at=revoked_at or at, issued_at=at,
                               issuer=keylib.key_id(root)), root)


def sign_checkpoint(root: Ed25519PrivateKey, seq: int, head_hash: str) -> Checkpoint:
    return _sign(Checkpoint(seq=seq, head_hash=head_hash, signed_at=utcnow(), issuer=keylib.key_id(root)), root)


@dataclass
class TrustedKey:
    raw: bytes
    user: str | None                       # None: pinned directly, bound to no user name
    purposes: set[str]
    revocation: KeyRevocation | None = None


@dataclass
class TrustRing:
    """The keys a verifier trusts, and for what. Build it with :meth:`pinned` (keys given directly) or
    :meth:`from_roots` (pinned root keys plus certificates and revocations, each checked against them)."""

    roots: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, TrustedKey] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)   # certificates or revocations that were not accepted

    @classmethod
    def pinned(cls, reviewer_keys: Mapping[str, bytes] | None,
               publisher_keys: Mapping[str, bytes] | None = None) -> "TrustRing":
        """Keys pinned one by one (no user binding): ``reviewer_keys`` sign reviews, ``publisher_keys`` sign patches;
        without ``publisher_keys`` the reviewer keys are trusted for both (the offline ``verify --key`` form)."""
        ring = cls()
        for kid, raw in (reviewer_keys or {}).items():
            ring.keys[kid] = TrustedKey(raw, None, {"reviewer"} | (set() if publisher_keys is not None
                                                                    else {"publisher"}))
        for kid, raw in (publisher_keys or {}).items():
            ring.keys.setdefault(kid, TrustedKey(raw, None, set())).purposes.add("publisher")
        return ring

    @classmethod
    def from_roots(cls, roots: Mapping[str, bytes], certificates: Iterable[KeyCertificate | dict] = (),
                   revocations: Iterable[KeyRevocation | dict] = ()) -> "TrustRing":
        ring = cls(roots=dict(roots))
        for c in certificates:
            ring.add_certificate(c)
        for r in revocations:
            ring.add_revocation(r)
        return ring

    def _root_signed(self, doc: _Signed, what: str) -> bool:
        errors: list[str] = []
        if check_signature(doc.payload(), doc.signature, doc.issuer, self.roots, what, errors):
            return True
        self.problems.extend(errors)
        return False

    def add_certificate(self, cert: KeyCertificate | dict) -> bool:
        c = cert if isinstance(cert, KeyCertificate) else KeyCertificate.model_validate(cert)
        what = f"certificate of key {c.key_id} for {c.user}"
        if not self._root_signed(c, what):
            return False
        raw = bytes.fromhex(c.public_key)
        if keylib.key_id(raw) != c.key_id:
            self.problems.append(f"{what}: the key id does not match the public key")
            return False
        known = self.keys.get(c.key_id)
        if known is not None and known.user != c.user:
            # one key, two users: trust it for neither (a key must prove one person)
            self.problems.append(f"{what}: the key is also certified to {known.user}; trusted for neither")
            known.purposes.clear()
            return False
        if known is None:
            self.keys[c.key_id] = TrustedKey(raw, c.user, {c.purpose})
        else:
            known.purposes.add(c.purpose)
        return True

    def add_revocation(self, revocation: KeyRevocation | dict) -> bool:
        r = revocation if isinstance(revocation, KeyRevocation) else KeyRevocation.model_validate(revocation)
        if not self._root_signed(r, f"revocation of key {r.key_id}"):
            return False
        known = self.keys.get(r.key_id)
        if known is not None and (known.revocation is None or r.reason == "compromised"
                                  or r.revoked_at < known.revocation.revoked_at):
            known.revocation = r  # the strictest revocation wins
        return True

    def accepts_checkpoint(self, cp: Checkpoint | dict) -> Checkpoint | None:
        c = cp if isinstance(cp, Checkpoint) else Checkpoint.model_validate(cp)
        return c if self._root_signed(c, f"checkpoint at seq {c.seq}") else None

    def check(self, payload: bytes, signature: str | None, kid: str | None, purpose: str, user: str | None,
              at: datetime | None, what: str, errors: list[str], *, vouched: bool = False) -> bool:
        """Is ``signature`` over ``payload`` made by a trusted, unrevoked ``purpose`` key of ``user`` (as of
        ``at``)? ``vouched``: a root-signed checkpoint covers this signature, so a revocation does not void it.
        Reasons of a refusal go to ``errors``."""
        if not signature or not kid:
            errors.append(f"{what}: not signed")
            return False
        k = self.keys.get(kid)
        if k is None or purpose not in k.purposes:
            n = sum(purpose in t.purposes for t in self.keys.values())
            held = "" if k is None else f"; it is trusted as: {', '.join(sorted(k.purposes)) or 'nothing'}"
            errors.append(f"{what}: unknown key {kid!r} (not among the {n} trusted {purpose} key(s){held})")
            return False
        if k.user is not None and user is not None and k.user != user:
            errors.append(f"{what}: key {kid} belongs to {k.user}, not {user}")
            return False
        rev = k.revocation
        if rev is not None and not vouched and (rev.reason == "compromised" or at is None or at >= rev.revoked_at):
            errors.append(f"{what}: key {kid} was revoked ({rev.reason}) at {rev.revoked_at.isoformat()}")
            return False
        return check_signature(payload, signature, kid, {kid: k.raw}, what, errors)

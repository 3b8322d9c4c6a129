"""Knowledge patches offline: canonical serialisation, content hash, Ed25519 signatures of the publisher and of the
reviewers, and verification — tampering with one byte of content, of a review, or of a domain breaks it; unknown and
wrong-purpose keys are refused with a clear reason. Signatures are cross-checked with the OpenSSL command line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from assay.knowledge import keys
from assay.knowledge.patch import (CONTENT_FIELDS, PATCH_CONTEXT, Patch, Review, canonical_json, iso_utc, new_patch,
                                   sign_patch, sign_review, utcnow, verify)


def _review(p: Patch, reviewer: str, key, verdict: str = "accept", kind: str = "review",  # noqa: ANN001
            comment: str = "ok") -> Review:
    return sign_review(Review(patch_id=p.patch_id, version=p.version, content_hash=p.content_hash, reviewer=reviewer,
                              key_id="", kind=kind, verdict=verdict, comment=comment, at=utcnow()), key)


@pytest.fixture(scope="module")
def world():
    pub, r1, r2 = keys.generate(), keys.generate(), keys.generate()
    p = new_patch(title="Boiling point", content="At sea level, pure water boils at 100 °C (373.15 K).",
                  domains=["Physics", "chemistry"], authors=["alice"],
                  sources=[{"url": "https://en.wikipedia.org/wiki/Boiling_point", "quote": "100 °C"},
                           {"record_id": "rec-42"}],
                  valid_from=datetime(1990, 1, 1, tzinfo=timezone.utc))
    p.reviews = [_review(p, "bob", r1, comment="matches the CRC handbook"), _review(p, "carol", r2)]
    signed = sign_patch(p, pub, publisher="paul", quorum=2)
    reviewers = {keys.key_id(k): keys.raw_public(k) for k in (r1, r2)}
    publishers = {keys.key_id(pub): keys.raw_public(pub)}
    return {"patch": signed, "pub": pub, "r1": r1, "r2": r2, "reviewers": reviewers, "publishers": publishers,
            "all": {**reviewers, **publishers}}


# -- canonical form ------------------------------------------------------------------------------------------------
def test_canonical_json_is_sorted_compact_utf8_and_refuses_floats():
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode("utf-8")
    with pytest.raises(TypeError, match="floats"):
        canonical_json({"x": {"y": [1, 2.5]}})
    with pytest.raises(TypeError, match="floats"):
        canonical_json({"x": float("nan")})
    t = datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert iso_utc(t) == "2024-03-01T10:00:00.000000Z"
    assert iso_utc(datetime(2024, 3, 1, 10, 0)) == "2024-03-01T10:00:00.000000Z"  # naive = UTC


def test_domains_are_normalised_and_validated():
    p = new_patch(title="t", content="c", domains=["B", "a", " b "], authors=["x"])
    assert p.domains == ["a", "b"]
    with pytest.raises(ValueError, match="bad domain"):
        new_patch(title="t", content="c", domains=["has space"], authors=["x"])
    with pytest.raises(ValueError, match="valid_to"):
        new_patch(title="t", content="c", domains=["a"], authors=["x"], valid_from=datetime(2024, 1, 2),
                  valid_to=datetime(2024, 1, 1))


def test_content_hash_is_sha256_of_the_canonical_content_fields(world):
    p: Patch = world["patch"]
    doc = json.loads(json.dumps(p.model_dump(mode="json")))  # what a client holds
    content = {k: doc[k] for k in CONTENT_FIELDS}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == p.content_hash
    # the same patch parsed back from JSON serialises to the same bytes (the property signatures rely on)
    assert Patch.model_validate_json(p.model_dump_json()).payload() == p.payload()


def test_signature_verifies_with_openssl(world, tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command line is needed for this cross-check (apt-get install openssl)")
    p: Patch = world["patch"]
    (tmp_path / "pub.pem").write_text(keys.public_pem(world["pub"]))
    (tmp_path / "payload").write_bytes(p.payload())
    (tmp_path / "sig").write_bytes(base64.b64decode(p.signature))
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"), "-rawin",
           "-in", str(tmp_path / "payload"), "-sigfile", str(tmp_path / "sig")]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    (tmp_path / "payload").write_bytes(p.payload().replace(b"100", b"101"))
    assert subprocess.run(cmd, capture_output=True, text=True).returncode != 0
    assert p.payload().startswith(PATCH_CONTEXT)


# -- verification --------------------------------------------------------------------------------------------------
def test_a_signed_patch_verifies_offline_from_its_json(world):
    text = world["patch"].model_dump_json()
    res = verify(text, world["reviewers"], publisher_keys=world["publishers"])
    assert res.valid, res.errors
    assert res.checks == {"content_hash": True, "signature": True, "reviews": True}
    assert res.as_dict()["patch_id"] == world["patch"].patch_id
    # status is lifecycle state, not signed: a superseded copy still verifies
    doc = json.loads(text)
    doc["status"] = "superseded"
    assert verify(doc, world["reviewers"], publisher_keys=world["publishers"]).valid


def _flip_one_byte(text: str, context: str, new: str) -> str:
    """Replace the first character of ``context`` (which occurs once in the JSON text) by ``new``: one byte."""
    assert text.count(context) == 1 and len(new) == 1
    i = text.index(context)
    out = text[:i] + new + text[i + 1:]
    assert len(out.encode()) == len(text.encode())
    assert sum(a != b for a, b in zip(text.encode(), out.encode())) == 1
    return out


def test_tampering_one_byte_of_content_fails(world):
    text = world["patch"].model_dump_json()
    bad = _flip_one_byte(text, "100 °C (373", "2")  # "boils at 100 °C" → "boils at 200 °C"
    res = verify(bad, world["reviewers"], publisher_keys=world["publishers"])
    assert not res.valid
    assert res.checks["content_hash"] is False and res.checks["signature"] is False
    assert any("content hash mismatch" in e for e in res.errors)


def test_tampering_a_domain_fails(world):
    doc = world["patch"].model_dump(mode="json")
    doc["domains"] = ["chemistry", "physicz"]
    res = verify(doc, world["reviewers"], publisher_keys=world["publishers"])
    assert not res.valid and not res.checks["content_hash"] and not res.checks["signature"]


@pytest.mark.parametrize("field,value", [("comment", "matches the CRC handbooK"), ("verdict", "reject"),
                                         ("reviewer", "mallory")])
def test_tampering_a_review_fails(world, field, value):
    doc = world["patch"].model_dump(mode="json")
    doc["reviews"][0][field] = value
    res = verify(doc, world["reviewers"], publisher_keys=world["publishers"])
    assert not res.valid
    assert res.checks["content_hash"] is True  # the statement itself is intact …
    assert res.checks["reviews"] is False and res.checks["signature"] is False  # … the review and the patch are not
    assert any("review 0" in e and "bad signature" in e for e in res.errors)


def test_dropping_a_review_breaks_the_publisher_signature(world):
    doc = world["patch"].model_dump(mode="json")
    doc["reviews"] = doc["reviews"][:1]
    res = verify(doc, world["reviewers"], publisher_keys=world["publishers"])
    assert not res.checks["signature"] and not res.checks["reviews"]
    assert any("1 accepting review(s) by distinct keys, the quorum is 2" in e for e in res.errors)


def test_unknown_publisher_key_fails_with_a_clear_reason(world):
    res = verify(world["patch"], world["reviewers"], publisher_keys={})
    assert not res.valid and not res.checks["signature"]
    assert any(f"unknown key {world['patch'].key_id!r}" in e for e in res.errors)
    res = verify(world["patch"], {}, publisher_keys=world["publishers"])
    assert not res.checks["reviews"] and any("review 0 by bob: unknown key" in e for e in res.errors)


def test_a_reviewer_key_cannot_pass_as_the_publisher(world):
    p: Patch = world["patch"]
    forged = sign_patch(p.model_copy(update={"signature": None}), world["r1"], publisher="bob", quorum=2)
    res = verify(forged, world["reviewers"], publisher_keys=world["publishers"])
    assert not res.checks["signature"] and any("unknown key" in e for e in res.errors)
    # without a separate publisher ring every trusted key counts, and the forgery is only caught by the ring
    assert verify(forged, world["all"]).checks["signature"]


def test_review_signed_for_another_version_or_by_an_author_fails(world):
    p: Patch = world["patch"]
    other = new_patch(title="other", content="other", domains=["physics"], authors=["alice"])
    moved = _review(other, "dave", world["r1"])
    doc = p.model_dump(mode="json")
    doc["reviews"][1] = moved.model_dump(mode="json")
    res = verify(doc, world["reviewers"])
    assert not res.checks["reviews"] and any("not this version's content" in e for e in res.errors)
    own = p.model_copy(update={"reviews": [*p.reviews, _review(p, "alice", world["r2"])]})
    res = verify(sign_patch(own, world["pub"], publisher="paul", quorum=2), world["reviewers"],
                 publisher_keys=world["publishers"])
    assert not res.checks["reviews"] and any("an author reviewed" in e for e in res.errors)


def test_adjudicated_conflict_verifies_and_a_rejecting_one_does_not(world):
    p = new_patch(title="t", content="contested claim", domains=["physics"], authors=["alice"])
    admin = keys.generate()
    ring = {**world["reviewers"], keys.key_id(admin): keys.raw_public(admin)}
    base = [_review(p, "bob", world["r1"], "accept"), _review(p, "carol", world["r2"], "reject")]
    unresolved = sign_patch(p.model_copy(update={"reviews": base}), world["pub"], publisher="paul", quorum=2)
    assert any("no adjudication" in e for e in verify(unresolved, ring, publisher_keys=world["publishers"]).errors)
    for verdict, ok in (("accept", True), ("reject", False)):
        ruled = base + [_review(p, "ada", admin, verdict, kind="adjudication")]
        signed = sign_patch(p.model_copy(update={"reviews": ruled}), world["pub"], publisher="paul", quorum=2)
        assert verify(signed, ring, publisher_keys=world["publishers"]).valid is ok


def test_malformed_input_is_reported_not_raised(world):
    res = verify({"patch_id": "nope", "version": 1}, world["all"])
    assert not res.valid and res.errors[0].startswith("malformed patch:")
    assert not verify("{not json", world["all"]).valid
    doc = world["patch"].model_dump(mode="json")
    doc["signature"] = "***"
    res = verify(doc, world["reviewers"], publisher_keys=world["publishers"])
    assert not res.checks["signature"] and any("malformed signature" in e for e in res.errors)
    unsigned = new_patch(title="t", content="c", domains=["a"], authors=["x"])
    res = verify(unsigned, world["all"])
    assert res.checks["content_hash"] and not res.checks["signature"]
    assert "publisher signature: not signed" in res.errors


# -- keys ----------------------------------------------------------------------------------------------------------
def test_keys_save_load_and_ids(tmp_path):
    k = keys.generate()
    priv, pub = keys.save(k, tmp_path / "sub" / "paul.key")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert pub.name == "paul.key.pub"
    raw = keys.raw_public(k)
    assert keys.key_id(k) == hashlib.sha256(raw).hexdigest()[:16] == keys.key_id(raw)
    assert keys.raw_public(keys.load_private(priv)) == raw
    assert keys.load_public(pub) == raw and keys.load_public(priv) == raw
    assert keys.parse_public_key(raw.hex()) == raw
    assert keys.parse_public_key(base64.b64encode(raw).decode()) == raw
    with pytest.raises(FileExistsError):
        keys.save(k, priv)
    with pytest.raises(keys.KeyFileError):
        keys.parse_public_key("not a key")
    # passphrase-protected
    priv2, _ = keys.save(k, tmp_path / "locked.key", passphrase=b"correct horse")
    assert keys.raw_public(keys.load_private(priv2, passphrase=b"correct horse")) == raw
    with pytest.raises(keys.KeyFileError):
        keys.load_private(priv2, passphrase=b"wrong")
    (tmp_path / "junk.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(keys.KeyFileError):
        keys.load_private(tmp_path / "junk.key")

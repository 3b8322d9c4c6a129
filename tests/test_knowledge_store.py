"""The knowledge store and its review workflow on SQLite and PostgreSQL (a fresh schema per test): publish → review →
accept → sign; append-only history enforced by the database; superseded versions stay retrievable; only domain
reviewers review, authors never review their own patch, only a registered publisher key publishes; conflicts go to
adjudication; the change feed is ordered and never skips a row; and the KnowledgeService facade over a real
HybridIndex."""

from __future__ import annotations

import json
import threading

import pytest
from annotate_support import BACKENDS, make_database
from sqlalchemy import text

from assay.knowledge import keys
from assay.knowledge.patch import verify
from assay.knowledge.review import Conflict, KnowledgeError, NotAllowed
from assay.knowledge.store import KnowledgeStore
from assay.platform.users import create_user

PW = "password-123"
FACT = dict(title="Aspirin and COX-1", content="Aspirin irreversibly acetylates cyclooxygenase-1 (COX-1).",
            domains=["medicine"], sources=[{"url": "https://en.wikipedia.org/wiki/Aspirin"}])


@pytest.fixture
def kb(db):
    """Users: alice (author), rev1..rev3 (medicine reviewers), lawrev (law reviewer), paul (medicine publisher),
    ada (medicine admin); each reviewer/publisher has a registered key of the right purpose."""
    with db.write() as s:
        for u in ("alice", "rev1", "rev2", "rev3", "lawrev", "paul", "ada", "nobody"):
            create_user(s, u, PW)
    store = KnowledgeStore(db)
    for r in ("rev1", "rev2", "rev3"):
        store.grant(r, "medicine", "reviewer")
    store.grant("lawrev", "law", "reviewer")
    store.grant("paul", "medicine", "publisher")
    store.grant("ada", "medicine", "admin")
    k = {u: keys.generate() for u in ("rev1", "rev2", "rev3", "lawrev", "ada", "paul", "alice")}
    for u in ("rev1", "rev2", "rev3", "lawrev", "ada", "alice"):
        store.register_key(u, keys.raw_public(k[u]), "reviewer")
    store.register_key("paul", keys.raw_public(k["paul"]), "publisher")
    k["root"] = keys.generate()  # the deployment's root key certifies every registered key
    store.certify(k["root"])
    return store, k


def _roots(k):  # noqa: ANN001, ANN202
    return {keys.key_id(k["root"]): keys.raw_public(k["root"])}


def _accept_and_publish(store, k, patch_id, version=1):  # noqa: ANN001, ANN202
    store.review(patch_id, version, "rev1", "accept", k["rev1"], "checked against the label")
    store.review(patch_id, version, "rev2", "accept", k["rev2"])
    return store.publish(patch_id, version, "paul", k["paul"])


def _verify(store, patch):  # noqa: ANN001, ANN202
    return verify(patch, store.public_keys("reviewer"), publisher_keys=store.public_keys("publisher"))


# -- the happy path and tampering ----------------------------------------------------------------------------------
def test_publish_review_accept_sign_and_tamper(kb):
    store, k = kb
    p = store.propose("alice", **FACT)
    assert p.status == "proposed" and p.version == 1 and p.authors == ["alice"]
    p = store.review(p.patch_id, 1, "rev1", "accept", k["rev1"], "checked against the label")
    assert p.status == "under_review" and len(p.reviews) == 1
    with pytest.raises(Conflict, match="1 of 2 accepting"):
        store.publish(p.patch_id, 1, "paul", k["paul"])
    p = store.review(p.patch_id, 1, "rev2", "accept", k["rev2"])
    assert p.status == "approved" and p.signature is None
    p = store.publish(p.patch_id, 1, "paul", k["paul"])
    assert p.status == "accepted" and p.publisher == "paul" and p.quorum == 2 and p.key_id == keys.key_id(k["paul"])
    again = store.get(p.patch_id)
    assert again.model_dump(mode="json") == p.model_dump(mode="json")
    assert _verify(store, again).valid
    doc = again.model_dump(mode="json")
    for mutate in (lambda d: d.__setitem__("content", d["content"].replace("COX-1", "COX-2")),
                   lambda d: d["reviews"][0].__setitem__("comment", d["reviews"][0]["comment"] + "!"),
                   lambda d: d["reviews"][1].__setitem__("verdict", "reject"),
                   lambda d: d.__setitem__("domains", ["medicinf"])):
        bad = {**doc, "reviews": [dict(r) for r in doc["reviews"]]}
        mutate(bad)
        assert not _verify(store, bad).valid
    events = [c["event"] for c in store.changes(0)["changes"]]
    assert events == ["proposed", "review", "review", "accepted"]
    with pytest.raises(Conflict, match="takes no more reviews"):
        store.review(p.patch_id, 1, "rev3", "reject", k["rev3"])


def test_history_is_append_only_in_the_database(kb, db):
    store, k = kb
    p = _accept_and_publish(store, k, store.propose("alice", **FACT).patch_id)
    for table in ("knowledge_patches", "knowledge_reviews", "knowledge_publications", "knowledge_events"):
        for stmt in (f"UPDATE {table} SET patch_id = patch_id", f"DELETE FROM {table}"):
            with pytest.raises(Exception, match="append-only"):
                with db.write() as s:
                    s.execute(text(stmt))
    assert _verify(store, store.get(p.patch_id)).valid


# -- versions ------------------------------------------------------------------------------------------------------
def test_a_new_version_supersedes_and_the_old_one_stays_retrievable(kb):
    store, k = kb
    v1 = _accept_and_publish(store, k, store.propose("alice", **FACT).patch_id)
    v2 = store.propose("rev3", title=FACT["title"], content=FACT["content"] + " The effect lasts the platelet's life.",
                       domains=["medicine"], supersedes=v1.patch_id)
    assert (v2.patch_id, v2.version, v2.supersedes.version) == (v1.patch_id, 2, 1)
    assert store.get(v1.patch_id).version == 1  # the accepted version is current until v2 is published
    with pytest.raises(Conflict, match="still proposed"):
        store.propose("alice", **{**FACT, "content": "a third"}, supersedes=v1.patch_id)
    with pytest.raises(NotAllowed, match="author"):
        store.review(v1.patch_id, 2, "rev3", "accept", k["rev3"])  # rev3 wrote version 2
    _accept_and_publish(store, k, v1.patch_id, 2)
    current = store.get(v1.patch_id)
    assert current.version == 2 and current.status == "accepted"
    old = store.get(v1.patch_id, 1)
    assert old.status == "superseded" and old.content == FACT["content"]
    assert _verify(store, old).valid  # still the publisher's signed document
    assert [v["status"] for v in store.history(v1.patch_id)["versions"]] == ["superseded", "accepted"]
    assert store.changes(0)["changes"][-1]["event"] == "superseded"
    assert store.get(v1.patch_id, 3) is None and store.get("0" * 32) is None


def test_retraction(kb):
    store, k = kb
    p = _accept_and_publish(store, k, store.propose("alice", **FACT).patch_id)
    with pytest.raises(NotAllowed, match="may not retract"):
        store.retract(p.patch_id, 1, "rev1", "wrong", k["paul"])
    with pytest.raises(KnowledgeError, match="reason"):
        store.retract(p.patch_id, 1, "paul", "  ", k["paul"])
    r = store.retract(p.patch_id, 1, "paul", "the label changed", k["paul"])
    assert r.status == "retracted"
    assert store.changes(0)["changes"][-1]["detail"] == {"reason": "the label changed"}
    with pytest.raises(Conflict):
        store.retract(p.patch_id, 1, "paul", "twice", k["paul"])
    with pytest.raises(NotAllowed, match="only a registered publisher key can sign a retraction"):
        store.retract(p.patch_id, 1, "ada", "an admin signs with a publisher key", k["ada"])


# -- access control ------------------------------------------------------------------------------------------------
def test_only_reviewers_of_the_domain_may_review(kb):
    store, k = kb
    p = store.propose("alice", **FACT)
    with pytest.raises(PermissionError, match="not a reviewer of medicine"):
        store.review(p.patch_id, 1, "lawrev", "accept", k["lawrev"])  # a reviewer, but of law
    with pytest.raises(PermissionError, match="not a reviewer"):
        store.review(p.patch_id, 1, "ada", "accept", k["ada"])  # an admin is not a reviewer
    store.grant("alice", "medicine", "reviewer")
    with pytest.raises(PermissionError, match="author"):
        store.review(p.patch_id, 1, "alice", "accept", k["alice"])
    with pytest.raises(PermissionError, match="belongs to another user"):
        store.review(p.patch_id, 1, "rev1", "accept", k["rev2"])
    store.grant("paul", "medicine", "reviewer")
    with pytest.raises(PermissionError, match="publisher key: only a registered reviewer key"):
        store.review(p.patch_id, 1, "paul", "accept", k["paul"])
    store.review(p.patch_id, 1, "rev1", "accept", k["rev1"])
    with pytest.raises(Conflict, match="already reviewed"):
        store.review(p.patch_id, 1, "rev1", "accept", k["rev1"])
    store.grant("lawrev", "*", "reviewer")  # a role in every domain
    assert store.review(p.patch_id, 1, "lawrev", "accept", k["lawrev"]).status == "approved"


def test_only_the_publisher_key_signs(kb):
    store, k = kb
    p = store.propose("alice", **FACT)
    store.review(p.patch_id, 1, "rev1", "accept", k["rev1"])
    store.review(p.patch_id, 1, "rev2", "accept", k["rev2"])
    with pytest.raises(PermissionError, match="not a publisher"):
        store.publish(p.patch_id, 1, "rev1", k["rev1"])  # a reviewer may not publish …
    store.grant("rev1", "medicine", "publisher")
    with pytest.raises(PermissionError, match="reviewer key: only a registered publisher key can publish"):
        store.publish(p.patch_id, 1, "rev1", k["rev1"])  # … and a reviewer key never signs a patch
    rogue = keys.generate()
    with pytest.raises(PermissionError, match="not registered"):
        store.publish(p.patch_id, 1, "paul", rogue)
    # a client-signed document that changes the content is refused even with the right key
    from assay.knowledge.patch import sign_patch

    stored = store.get(p.patch_id, 1)
    forged = sign_patch(stored.model_copy(update={"content": "Aspirin cures everything."}), k["paul"],
                        publisher="paul", quorum=2)
    with pytest.raises(Conflict, match="differs from the stored content"):
        store.submit_publication(forged.model_dump(mode="json"), k["paul"])
    assert store.get(p.patch_id).status == "approved"
    assert store.publish(p.patch_id, 1, "paul", k["paul"]).status == "accepted"


# -- decisions -----------------------------------------------------------------------------------------------------
def test_conflicting_reviews_go_to_adjudication(kb):
    store, k = kb
    p = store.propose("alice", **FACT)
    store.review(p.patch_id, 1, "rev1", "accept", k["rev1"])
    p = store.review(p.patch_id, 1, "rev2", "reject", k["rev2"], "the source is a wiki")
    assert p.status == "needs_adjudication"
    feed = store.changes(0)["changes"]
    assert feed[-1]["event"] == "conflict" and feed[-1]["status"] == "needs_adjudication"
    with pytest.raises(Conflict, match="adjudicates"):
        store.review(p.patch_id, 1, "rev3", "accept", k["rev3"])
    with pytest.raises(PermissionError, match="not an admin of medicine"):
        store.review(p.patch_id, 1, "rev3", "accept", k["rev3"], adjudicate=True)
    with pytest.raises(Conflict, match="not approved"):
        store.publish(p.patch_id, 1, "paul", k["paul"])
    p = store.review(p.patch_id, 1, "ada", "accept", k["ada"], "the label agrees", adjudicate=True)
    assert p.status == "approved"
    p = store.publish(p.patch_id, 1, "paul", k["paul"])
    assert [(r.reviewer, r.kind, r.verdict) for r in p.reviews] == [
        ("rev1", "review", "accept"), ("rev2", "review", "reject"), ("ada", "adjudication", "accept")]
    assert _verify(store, p).valid


def test_rejection_and_per_domain_quorum(kb):
    store, k = kb
    p = store.propose("alice", **FACT)
    store.review(p.patch_id, 1, "rev1", "reject", k["rev1"])
    p = store.review(p.patch_id, 1, "rev2", "reject", k["rev2"])
    assert p.status == "rejected" and store.changes(0)["changes"][-1]["event"] == "rejected"
    store.set_quorum("medicine", 3)
    q = store.propose("alice", **{**FACT, "content": "Aspirin is acetylsalicylic acid."})
    store.review(q.patch_id, 1, "rev1", "accept", k["rev1"])
    assert store.review(q.patch_id, 1, "rev2", "accept", k["rev2"]).status == "under_review"
    assert store.review(q.patch_id, 1, "rev3", "accept", k["rev3"]).status == "approved"
    assert store.publish(q.patch_id, 1, "paul", k["paul"]).quorum == 3
    with pytest.raises(KnowledgeError):
        store.set_quorum("medicine", 0)


def test_bad_input_is_a_clear_error(kb):
    store, k = kb
    with pytest.raises(KnowledgeError, match="invalid patch"):
        store.propose("alice", title="", content="x", domains=["medicine"])
    with pytest.raises(KnowledgeError, match="invalid patch"):
        store.propose("alice", title="t", content="x", domains=["bad domain"])
    with pytest.raises(KnowledgeError, match="no active user"):
        store.propose("ghost", **FACT)
    with pytest.raises(KnowledgeError, match="no active user"):
        store.propose("alice", **FACT, coauthors=["ghost"])
    p = store.propose("alice", **FACT)
    with pytest.raises(KnowledgeError, match="invalid review"):
        store.review(p.patch_id, 1, "rev1", "maybe", k["rev1"])
    with pytest.raises(KnowledgeError, match="no patch"):
        store.review(p.patch_id, 9, "rev1", "accept", k["rev1"])
    with pytest.raises(KnowledgeError, match="domain role must be"):
        store.grant("rev1", "medicine", "king")
    with pytest.raises(Conflict, match="already registered"):
        store.register_key("rev2", keys.raw_public(k["rev1"]), "reviewer")


# -- the change feed -----------------------------------------------------------------------------------------------
def test_changes_feed_pages_and_never_skips_a_row_under_concurrent_writers(kb):
    store, _k = kb
    seen: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            page = store.changes(cursor, 7)
            seen.extend(c["seq"] for c in page["changes"])
            cursor = page["cursor"]
            if finished and not page["more"] and not page["changes"]:
                return

    def writer(who: str) -> None:
        try:
            for i in range(8):
                store.propose(who, **{**FACT, "content": f"{who} fact {i}"})
        except BaseException as e:  # noqa: BLE001 — reported below
            errors.append(e)

    r = threading.Thread(target=reader)
    r.start()
    ws = [threading.Thread(target=writer, args=(u,)) for u in ("alice", "rev1", "rev2", "rev3")]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    done.set()
    r.join(timeout=60)
    assert not errors
    everything = [c["seq"] for c in store.changes(0, 1000)["changes"]]
    assert len(everything) == 32
    assert seen == everything  # in order, each once, none missed by a reader that polled during the writes
    page = store.changes(everything[9], 5)
    assert [c["seq"] for c in page["changes"]] == everything[10:15] and page["more"]
    last = store.changes(everything[-1], 5)
    assert last == {"changes": [], "cursor": everything[-1], "more": False}


# -- schema --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_matches_the_models_and_downgrades(backend, tmp_path):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import assay.knowledge.models  # noqa: F401
    from assay.platform.db import alembic_config, current_revision
    from assay.platform.models import all_tables

    database, cleanup = make_database(backend, tmp_path, via_alembic=True)
    try:
        with database.write_engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), all_tables())
        assert [d for d in diff if "knowledge" in repr(d)] == []
        command.downgrade(alembic_config(database.write_engine), "0002")
        assert current_revision(database.write_engine) == "0002"
        with database.read() as s:
            tables = s.execute(text("SELECT count(*) FROM users")).scalar()
        assert tables == 0
        database.migrate("0003")
        assert current_revision(database.write_engine) == "0003"
    finally:
        cleanup()


# -- the service facade --------------------------------------------------------------------------------------------
def test_service_search_get_verify_changes(kb, db, tmp_path):
    from assay.knowledge.search import HybridIndex
    from assay.knowledge.service import KnowledgeService

    store, k = kb
    a = _accept_and_publish(store, k, store.propose("alice", **FACT).patch_id)
    b = store.propose("alice", title="Paracetamol overdose",
                      content="Paracetamol overdose damages the liver; acetylcysteine is the antidote.",
                      domains=["medicine", "toxicology"])
    _accept_and_publish(store, k, b.patch_id)
    store.propose("alice", title="Ibuprofen", content="Ibuprofen is a non-selective COX inhibitor.",
                  domains=["medicine"])  # proposed only
    index_dir = tmp_path / "index"
    svc = KnowledgeService(db, index=HybridIndex(index_dir, embedder="hashed"), roots=_roots(k))
    hits = svc.search("antidote for paracetamol overdose", k=3)
    assert hits[0]["patch_id"] == b.patch_id and hits[0]["status"] == "accepted"
    assert set(hits[0]) == {"patch_id", "version", "title", "content", "domains", "status", "score"}
    assert all(h["status"] == "accepted" for h in hits)  # the proposed ibuprofen patch is not served
    assert [h["title"] for h in svc.search("ibuprofen COX inhibitor", k=5, status=None)][0] == "Ibuprofen"
    assert [h["patch_id"] for h in svc.search("liver", domains=["toxicology"], mode="bm25")] == [b.patch_id]

    # a new version under review does not hide the accepted one; once published it replaces it
    store.propose("rev3", title=FACT["title"], content=FACT["content"] + " Platelets cannot make new COX-1.",
                  domains=["medicine"], supersedes=a.patch_id)
    assert [(h["patch_id"], h["version"]) for h in svc.search("aspirin COX-1", k=1)] == [(a.patch_id, 1)]
    _accept_and_publish(store, k, a.patch_id, 2)
    assert [(h["patch_id"], h["version"]) for h in svc.search("aspirin COX-1", k=1)] == [(a.patch_id, 2)]

    full = svc.get_patch(a.patch_id)
    assert full["version"] == 2 and full["signature"] and full["key_id"] == keys.key_id(k["paul"])
    assert svc.get_patch(a.patch_id, 1)["status"] == "superseded"
    assert svc.get_patch("f" * 32) is None
    ok = svc.verify_patch(full)
    assert ok == {"valid": True, "patch_id": a.patch_id, "version": 2, "status": "accepted",
                  "checks": {"content_hash": True, "signature": True, "reviews": True, "log": True, "status": True},
                  "errors": []}
    assert svc.verify_patch(a.patch_id, 1)["valid"]
    bad = {**full, "content": full["content"].replace("COX-1", "COX-2")}
    res = svc.verify_patch(bad)
    assert not res["valid"] and not res["checks"]["content_hash"]
    assert svc.verify_patch("f" * 32)["errors"] == ["no patch " + "f" * 32]
    feed = svc.changes_since(0, limit=3)
    assert len(feed["changes"]) == 3 and feed["more"] and feed["cursor"] == feed["changes"][-1]["seq"]
    assert {"seq", "patch_id", "version", "event", "at"} <= set(feed["changes"][0])

    # the feed cursor lives with the index: a restarted service re-indexes only what changed since
    svc.close()
    svc2 = KnowledgeService(db, index=HybridIndex(index_dir, embedder="hashed"), roots=_roots(k))
    assert svc2.sync() == 0
    store.retract(b.patch_id, 1, "paul", "superseded by new guidance", k["paul"])
    assert svc2.sync() == 1
    assert b.patch_id not in [h["patch_id"] for h in svc2.search("paracetamol overdose antidote", k=5)]
    svc2.close()
    # a saved cursor beyond the end of the feed (the database was reset) re-indexes everything
    cursor_file = index_dir / "feed_cursor.json"
    saved = json.loads(cursor_file.read_text())
    cursor_file.write_text(json.dumps({**saved, "cursor": saved["cursor"] + 1000}))
    svc3 = KnowledgeService(db, index=HybridIndex(index_dir, embedder="hashed"), roots=_roots(k))
    assert svc3.sync() == 4  # every version in the feed: aspirin v1 and v2, paracetamol v1, ibuprofen v1
    svc3.close()

    # the bulk read used for indexing and search results agrees with reading one version at a time
    refs = [(e["patch_id"], e["version"]) for e in store.changes(0, 1000)["changes"]]
    many = store.get_many(refs)
    assert set(many) == set(refs)
    for ref, patch in many.items():
        assert patch.model_dump(mode="json") == store.get(*ref).model_dump(mode="json")

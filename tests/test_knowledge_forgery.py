"""Issue 14 §4: "proof of knowledge" must not be forgeable. Each forgery the issue reports, on SQLite and PostgreSQL,
against a real uvicorn server (REST over httpx, MCP through the ``mcp`` package's own client): a quorum of two
reviews signed with one key, a publication signed by a key row inserted into the database, an event row inserted
(un-retraction), deleted or reordered, drafts read by a reader without rights, and oversized requests over REST and
over the MCP tool."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
from sqlalchemy import text
from testutil import uvicorn_thread

from assay.knowledge import keys
from assay.knowledge.models import drop_append_only_ddl
from assay.knowledge.patch import Patch, Review, new_patch, sign_patch, sign_review, utcnow, verify
from assay.knowledge.store import KnowledgeStore
from assay.platform import auth
from assay.platform.models import User
from assay.platform.users import create_user

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PW = "password-123"
BASALT = dict(title="Basalt", content="Basalt is an extrusive igneous rock formed by the rapid cooling of lava.",
              domains=["geology"], sources=[{"url": "https://en.wikipedia.org/wiki/Basalt"}])
DRAFT = dict(title="Granite draft", content="Granite is an intrusive igneous rock, rich in quartz and feldspar.",
             domains=["geology"])


@pytest.fixture
def world(db, tmp_path):
    """alice writes; rita, sam, zed review geology; paul publishes; reader is logged in with no role. A root key
    certifies the registered keys; the server pins only that root. One accepted patch, one draft under review."""
    from assay.knowledge.server import build_app, open_service

    with db.write() as s:
        for u in ("alice", "rita", "sam", "zed", "paul", "reader"):
            create_user(s, u, PW)
        tokens = {u: auth.create_session(s, s.query(User).filter_by(username=u).one())[0] for u in ("reader", "rita")}
    store = KnowledgeStore(db)
    k = {u: keys.generate() for u in ("rita", "sam", "zed", "paul")}
    for u in ("rita", "sam", "zed"):
        store.register_key(u, keys.raw_public(k[u]), "reviewer")
        store.grant(u, "geology", "reviewer")
    store.register_key("paul", keys.raw_public(k["paul"]), "publisher")
    store.grant("paul", "geology", "publisher")
    root = keys.generate()
    store.certify(root)
    basalt = store.propose("alice", **BASALT)
    store.review(basalt.patch_id, 1, "rita", "accept", k["rita"])
    store.review(basalt.patch_id, 1, "sam", "accept", k["sam"])
    basalt = store.publish(basalt.patch_id, 1, "paul", k["paul"])
    draft = store.propose("alice", **DRAFT)
    store.review(draft.patch_id, 1, "rita", "accept", k["rita"], "looks right")
    service = open_service(db, index_path=tmp_path / "index", embedder="hashed",
                           roots={keys.key_id(root): keys.raw_public(root)}, migrate=False)
    with uvicorn_thread(build_app(service, rate=1000, burst=1000)) as url:
        yield {"db": db, "store": store, "k": k, "root": root, "basalt": basalt, "draft": draft, "url": url,
               "tokens": tokens, "service": service}
    service.close()


def _h(world, user="reader"):  # noqa: ANN001, ANN202
    return {"Authorization": f"Bearer {world['tokens'][user]}"}


def _rest_verify(world, body, user="reader"):  # noqa: ANN001, ANN202
    r = httpx.post(f"{world['url']}/v1/verify", json=body, headers=_h(world, user), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _mcp(world, calls, user="reader"):  # noqa: ANN001, ANN202
    """Run ``calls(client)`` (an async function) with the mcp package's client over streamable HTTP."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main():  # noqa: ANN202
        async with httpx2.AsyncClient(headers=_h(world, user), timeout=30) as http:
            async with Client(streamable_http_client(f"{world['url']}/mcp", http_client=http)) as client:
                return await calls(client)

    return asyncio.run(main())


def _sql(world, *statements, params=None):  # noqa: ANN001, ANN202
    """Direct database access, as the issue's attacker had."""
    with world["db"].write_engine.begin() as c:
        for stmt in statements:
            c.execute(text(stmt), params or {})


def _drop_triggers(world, table):  # noqa: ANN001, ANN202
    dialect = "sqlite" if world["db"].is_sqlite else "postgresql"
    _sql(world, *drop_append_only_ddl(table, dialect))


def _user_id(world, name):  # noqa: ANN001, ANN202
    with world["db"].read() as s:
        return s.query(User).filter_by(username=name).one().id


# -- quorum: keys, not names ---------------------------------------------------------------------------------------
def test_two_reviews_signed_with_one_key_do_not_make_a_quorum(world):
    k = world["k"]
    p = new_patch(title="Obsidian", content="Obsidian is volcanic glass.", domains=["geology"], authors=["alice"])
    reviews = [sign_review(Review(patch_id=p.patch_id, version=1, content_hash=p.content_hash, reviewer=name,
                                  key_id="", verdict="accept", at=utcnow()), k["rita"]) for name in ("rita", "zed")]
    forged = sign_patch(p.model_copy(update={"reviews": reviews}), k["paul"], publisher="paul", quorum=2)
    # offline, with pinned keys (the CLI's --key / --publisher-key)
    pinned = {keys.key_id(k[u]): keys.raw_public(k[u]) for u in ("rita", "zed")}
    res = verify(forged, pinned, publisher_keys={keys.key_id(k["paul"]): keys.raw_public(k["paul"])})
    assert not res.valid and not res.checks["reviews"]
    assert any("one key counts once" in e for e in res.errors), res.errors
    # over REST: the certificate binds rita's key to rita, so the review "by zed" fails too
    out = _rest_verify(world, {"patch": forged.model_dump(mode="json")})
    assert out["valid"] is False and out["checks"]["reviews"] is False
    assert any(f"belongs to rita, not zed" in e for e in out["errors"]), out["errors"]


# -- keys: only what a pinned root certified -----------------------------------------------------------------------
def test_a_key_row_inserted_into_the_database_is_not_trusted(world):
    evil = keys.generate()
    _sql(world, "INSERT INTO knowledge_keys (key_id, user_id, purpose, public_key, created_at) "
                "VALUES (:k, :u, 'publisher', :p, 0)",
         params={"k": keys.key_id(evil), "u": _user_id(world, "paul"), "p": keys.raw_public(evil).hex()})
    stored = Patch.model_validate(world["store"].get(world["basalt"].patch_id).model_dump(mode="json"))
    forged = sign_patch(stored, evil, publisher="paul", quorum=1).model_dump(mode="json")
    out = _rest_verify(world, {"patch": forged})
    assert out["valid"] is False and out["checks"]["signature"] is False
    assert any("unknown key" in e for e in out["errors"]), out["errors"]

    async def calls(client):  # noqa: ANN001, ANN202
        return (await client.call_tool("verify_patch", {"patch": forged})).structured_content

    via_mcp = _mcp(world, calls)
    assert via_mcp["valid"] is False and via_mcp["checks"]["signature"] is False
    # the genuine publication still verifies, over both faces
    genuine = world["store"].get(world["basalt"].patch_id).model_dump(mode="json")
    assert _rest_verify(world, {"patch": genuine})["valid"] is True


def test_a_revoked_key_stops_verifying_and_a_rotated_one_keeps_its_past(world):
    store, k, root = world["store"], world["k"], world["root"]
    pid = world["basalt"].patch_id
    store.revoke_key(root, keys.key_id(k["sam"]), "rotated")
    assert _rest_verify(world, {"patch_id": pid})["valid"] is True  # signed before the rotation
    with pytest.raises(PermissionError, match="revoked"):
        store.review(world["draft"].patch_id, 1, "sam", "accept", k["sam"])
    new_sam = keys.generate()
    store.register_key("sam", keys.raw_public(new_sam), "reviewer")
    store.certify(root, keys.key_id(new_sam))
    assert store.review(world["draft"].patch_id, 1, "sam", "accept", new_sam).status == "approved"
    store.revoke_key(root, keys.key_id(k["rita"]), "compromised")
    out = _rest_verify(world, {"patch_id": pid}, "rita")  # every signature of rita's key is void, in the log too
    assert out["valid"] is False and out["checks"]["log"] is False and out["checks"]["reviews"] is False
    assert any("revoked (compromised)" in e for e in out["errors"]), out["errors"]
    store.checkpoint(root)  # the administrators checked the log and vouch for it: it verifies again
    out = _rest_verify(world, {"patch_id": pid}, "rita")
    assert out["checks"]["log"] is True and out["checks"]["reviews"] is False and out["valid"] is False


# -- the event log: insertion, deletion, reordering ----------------------------------------------------------------
def _retract(world):  # noqa: ANN001, ANN202
    return world["store"].retract(world["basalt"].patch_id, 1, "paul", "the source was misquoted", world["k"]["paul"])


def _search_statuses(world, query="basalt igneous lava"):  # noqa: ANN001, ANN202
    r = httpx.get(f"{world['url']}/v1/search", params={"q": query, "status": "any"}, headers=_h(world), timeout=30)
    return {x["patch_id"]: x["status"] for x in r.json()["results"]}


def test_an_inserted_event_does_not_unretract(world):
    pid = world["basalt"].patch_id
    assert _rest_verify(world, {"patch_id": pid})["valid"] is True
    _retract(world)
    out = _rest_verify(world, {"patch_id": pid})
    assert out["valid"] is False and out["status"] == "retracted"
    assert any("misquoted" in e for e in out["errors"])
    # the attacker appends an 'accepted' event, signed with a key whose row they inserted, chained correctly
    evil = keys.generate()
    _sql(world, "INSERT INTO knowledge_keys (key_id, user_id, purpose, public_key, created_at) "
                "VALUES (:k, :u, 'publisher', :p, 0)",
         params={"k": keys.key_id(evil), "u": _user_id(world, "paul"), "p": keys.raw_public(evil).hex()})
    from assay.knowledge import eventlog

    entries = world["store"].log_entries()
    head = eventlog.GENESIS
    for e in entries:
        head = eventlog.entry_hash(e.payload(head))
    forged = eventlog.Entry(seq=entries[-1].seq + 1, patch_id=pid, version=1, event="accepted", status="accepted",
                            user="paul", detail={}, at=entries[-1].at + 1)
    eventlog.seal(forged, head, evil)
    _sql(world, "INSERT INTO knowledge_events (seq, patch_id, version, event, status, user_id, detail, at, key_id, "
                "signature) VALUES (:seq, :p, 1, 'accepted', 'accepted', :u, '{}', :at, :kid, :sig)",
         params={"seq": forged.seq, "p": pid, "u": _user_id(world, "paul"), "at": forged.at,
                 "kid": forged.key_id, "sig": forged.signature})
    out = _rest_verify(world, {"patch_id": pid})
    assert out["valid"] is False and out["checks"]["log"] is False and out["status"] == "retracted"
    assert any(f"broken at seq {forged.seq}" in e for e in out["errors"]), out["errors"]
    assert _search_statuses(world).get(pid) in (None, "retracted")  # never served as accepted

    async def calls(client):  # noqa: ANN001, ANN202
        return (await client.call_tool("verify_patch", {"patch_id": pid})).structured_content

    assert _mcp(world, calls)["valid"] is False


def test_a_deleted_event_is_detected(world):
    pid = world["basalt"].patch_id
    _retract(world)
    world["store"].checkpoint(world["root"])  # the root seals the log's head
    _drop_triggers(world, "knowledge_events")
    # delete an event in the middle (the draft's review) ...
    draft_review = [e.seq for e in world["store"].log_entries() if e.patch_id == world["draft"].patch_id][-1]
    _sql(world, "DELETE FROM knowledge_events WHERE seq = :s", params={"s": draft_review})
    out = _rest_verify(world, {"patch_id": pid})
    assert out["valid"] is False and out["checks"]["log"] is False
    assert any("an event is missing" in e or "cut short" in e for e in out["errors"]), out["errors"]


def test_deleting_the_last_event_under_a_checkpoint_is_detected(world):
    pid = world["basalt"].patch_id
    retracted_seq = world["store"].log_entries()[-1].seq + 1
    _retract(world)
    world["store"].checkpoint(world["root"])
    _drop_triggers(world, "knowledge_events")
    _sql(world, "DELETE FROM knowledge_events WHERE seq = :s", params={"s": retracted_seq})  # the retraction
    out = _rest_verify(world, {"patch_id": pid})
    assert out["valid"] is False and any("cut short" in e for e in out["errors"]), out["errors"]


def test_reordered_events_are_detected(world):
    pid = world["basalt"].patch_id
    _retract(world)
    _drop_triggers(world, "knowledge_events")
    seqs = [e.seq for e in world["store"].log_entries()]
    a, b = seqs[-1], seqs[-2]  # the retraction and the draft's review swap places
    _sql(world, "UPDATE knowledge_events SET seq = -1 WHERE seq = :a", "UPDATE knowledge_events SET seq = :a "
                "WHERE seq = :b", "UPDATE knowledge_events SET seq = :b WHERE seq = -1", params={"a": a, "b": b})
    out = _rest_verify(world, {"patch_id": pid})
    assert out["valid"] is False and out["checks"]["log"] is False, out


def test_cli_verify_log_reports_the_break(world, tmp_path):
    from typer.testing import CliRunner

    from assay.cli import app

    root_pub = keys.save(world["root"], tmp_path / "root.key")[1]
    db_url = world["db"].url
    if not world["db"].is_sqlite:  # the fixture's PostgreSQL schema comes from create_all: tell Alembic it is current
        from alembic import command

        from assay.platform.db import alembic_config

        command.stamp(alembic_config(world["db"].write_engine), "head")
    ok = CliRunner().invoke(app, ["knowledge", "verify-log", "--root", str(root_pub), "--db", db_url])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["valid"] is True
    _sql(world, "INSERT INTO knowledge_events (seq, patch_id, version, event, status, user_id, detail, at) "
                "VALUES (:seq, :p, 1, 'accepted', 'accepted', NULL, '{}', 0)",
         params={"seq": world["store"].log_entries()[-1].seq + 1, "p": world["draft"].patch_id})
    bad = CliRunner().invoke(app, ["knowledge", "verify-log", "--root", str(root_pub), "--db", db_url])
    assert bad.exit_code == 1 and "cannot take a version from under_review to accepted" in bad.output


# -- reading rights ------------------------------------------------------------------------------------------------
def test_drafts_are_not_readable_by_a_reader_without_rights(world):
    url, draft, basalt = world["url"], world["draft"].patch_id, world["basalt"].patch_id
    r = httpx.get(f"{url}/v1/patches/{draft}", headers=_h(world), timeout=30)
    assert r.status_code == 404
    assert draft not in _search_statuses(world, "granite quartz feldspar")
    assert basalt in _search_statuses(world)
    feed = httpx.get(f"{url}/v1/changes", headers=_h(world), timeout=30).json()
    assert {c["patch_id"] for c in feed["changes"]} == {basalt}
    # a reviewer of the domain reads it, with its reviews
    r = httpx.get(f"{url}/v1/patches/{draft}", headers=_h(world, "rita"), timeout=30)
    assert r.status_code == 200 and r.json()["reviews"][0]["reviewer"] == "rita"

    async def calls(client):  # noqa: ANN001, ANN202
        got = await client.call_tool("get_patch", {"patch_id": draft})
        hits = await client.call_tool("search_knowledge", {"query": "granite quartz", "status": ["any"]})
        try:
            await client.read_resource(f"patch://{draft}")
            resource = "read"
        except Exception as e:  # noqa: BLE001 (the client raises its own error type for a failed read)
            resource = str(e)
        return got.is_error, [h["patch_id"] for h in hits.structured_content["results"]], resource

    is_error, hits, resource = _mcp(world, calls)
    assert is_error and draft not in hits and "no patch" in resource


def test_public_read_serves_accepted_patches_only(world):
    from assay.knowledge.server import build_app

    _retract(world)
    with uvicorn_thread(build_app(world["service"], public_read=True)) as url:
        r = httpx.get(f"{url}/v1/search", params={"q": "basalt granite igneous", "status": "any", "k": 10})
        assert r.status_code == 200 and r.json()["results"] == []  # the retracted patch and the draft stay hidden
        assert httpx.get(f"{url}/v1/patches/{world['draft'].patch_id}").status_code == 404
        assert httpx.get(f"{url}/v1/patches/{world['basalt'].patch_id}").status_code == 404


# -- sizes and rates -----------------------------------------------------------------------------------------------
def test_oversized_requests_are_refused_over_rest_and_mcp(world):
    url = world["url"]
    big = json.dumps({"patch": {"title": "x" * (3 << 20)}}).encode()
    r = httpx.post(f"{url}/v1/verify", content=big, headers={**_h(world), "content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 413

    def chunks():  # noqa: ANN202  (no Content-Length: the limit counts what arrives)
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = httpx.post(f"{url}/v1/verify", content=chunks(), headers={**_h(world), "content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 413
    mid = {"patch": {"title": "x" * (1500 << 10)}}  # under the body limit, over the document limit
    assert httpx.post(f"{url}/v1/verify", json=mid, headers=_h(world), timeout=30).status_code == 413
    assert httpx.get(f"{url}/v1/search", params={"q": "x" * 10_000}, headers=_h(world), timeout=30
                     ).status_code == 422

    async def calls(client):  # noqa: ANN001, ANN202
        refused = [await client.call_tool("search_knowledge", {"query": q})
                   for q in ("basalt " * 2000, "x" * 1_200_000)]  # 14 kB, and the 1.2 MB
        try:
            await client.call_tool("search_knowledge", {"query": "x" * (3 << 20)})
            huge = "answered"
        except Exception as e:  # noqa: BLE001 (the transport raises its own error on the 413)
            huge = repr(e)
        return refused, huge

    refused, huge = _mcp(world, calls)
    assert all(r.is_error and "at most 2,000" in r.content[0].text for r in refused)
    assert huge != "answered"  # over the body limit: refused before the MCP layer reads it


def test_requests_over_the_rate_are_refused(world):
    from assay.knowledge.server import build_app

    with uvicorn_thread(build_app(world["service"], rate=0.5, burst=3)) as url:
        codes = [httpx.get(f"{url}/v1/changes", headers=_h(world), timeout=30).status_code for _ in range(5)]
        mcp_code = httpx.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                              headers={**_h(world), "Accept": "application/json, text/event-stream"}).status_code
        other = httpx.get(f"{url}/v1/changes", headers=_h(world, "rita"), timeout=30)
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429] and mcp_code == 429
    assert other.status_code == 200  # another client has its own bucket

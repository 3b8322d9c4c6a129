"""Serving the knowledge layer: the REST API (login required unless public), and the MCP server through the ``mcp``
package's own client over streamable HTTP (a real uvicorn on loopback) and over stdio (a spawned process):
list tools, search, get a patch, verify it, verify a tampered copy."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
from pathlib import Path

import pytest
from testutil import uvicorn_thread

from annotate_support import cheap_password_hashing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent

FACTS = [
    ("Python lists", "A Python list is a mutable sequence; append() adds an item at the end in amortised constant "
                     "time.", ["python"]),
    ("Python tuples", "A tuple is an immutable sequence; it can be a dictionary key when all its items are "
                      "hashable.", ["python"]),
    ("Boiling point of water", "At sea level pure water boils at 100 degrees Celsius; at altitude the boiling point "
                               "is lower because the air pressure is lower.", ["physics"]),
    ("Ed25519 signatures", "Ed25519 signatures are 64 bytes long and the public keys 32 bytes.", ["crypto"]),
]


# -- the knowledge base under test --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    """A migrated SQLite database with a logged-in reader, and a knowledge base built through the real store:
    proposed, reviewed by two domain reviewers, published with the publisher's key; one patch then gets a
    second version, so the first is superseded but still retrievable."""
    from assay.platform import auth
    from assay.platform.db import Database
    from assay.platform.models import User
    from assay.knowledge import keys
    from assay.knowledge.server import open_service

    cheap_password_hashing()
    folder = tmp_path_factory.mktemp("kb")
    db_path = folder / "kb.db"
    db = Database(str(db_path))
    db.migrate()
    with db.write() as s:
        for name in ("reader", "alice", "bob", "carol", "paul"):
            s.add(User(username=name, password_hash=auth.hash_password(name + "-password"), role="annotator"))
        s.flush()
        reader = s.query(User).filter_by(username="reader").one()
        token, _csrf = auth.create_session(s, reader)
    root = keys.generate()
    root_pub = keys.save(root, folder / "root.key")[1]
    service = open_service(db, index_path=folder / "index", embedder="hashed", roots=[root_pub])
    store = service.store
    publisher = keys.generate()
    reviewer_keys = {"bob": keys.generate(), "carol": keys.generate()}
    store.register_key("paul", keys.raw_public(publisher), "publisher")
    for name, key in reviewer_keys.items():
        store.register_key(name, keys.raw_public(key), "reviewer")
    store.certify(root)  # the deployment's root key vouches for the three keys
    for domain in {d for _, _, ds in FACTS for d in ds}:
        store.grant("paul", domain, "publisher")
        for name in reviewer_keys:
            store.grant(name, domain, "reviewer")

    def accept(patch):  # noqa: ANN001, ANN202
        for name, key in reviewer_keys.items():
            store.review(patch.patch_id, patch.version, name, "accept", key)
        return store.publish(patch.patch_id, patch.version, "paul", publisher)

    published = []
    for title, content, domains in FACTS:
        p = store.propose("alice", title=title, content=content, domains=domains,
                          sources=[{"url": "https://example.org/" + title.replace(" ", "-")}])
        published.append(accept(p))
    water = published[2]
    v2 = store.propose("alice", title=water.title, content=water.content + " Salt water boils a little higher.",
                       domains=water.domains, supersedes=water.patch_id)
    published[2] = accept(v2)
    service.close()  # the servers under test open their own service on the same database and index folder
    yield {"db": db, "db_path": db_path, "index": folder / "index", "token": token, "patches": published,
           "first_water": water, "root_pub": root_pub, "root": root, "publisher": publisher,
           "reviewer_keys": reviewer_keys}
    db.dispose()


@pytest.fixture(scope="module")
def service(kb):
    from assay.knowledge.server import open_service

    svc = open_service(kb["db"], index_path=kb["index"], embedder="hashed", roots=[kb["root_pub"]])
    yield svc
    svc.close()


def _tampered(patch: dict) -> dict:
    """A copy with one byte of the content changed."""
    bad = copy.deepcopy(patch)
    bad["content"] = bad["content"].replace("100", "900", 1)
    assert bad["content"] != patch["content"]
    return bad


# -- REST -----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rest(service):
    from fastapi.testclient import TestClient

    from assay.knowledge.server import build_app

    with TestClient(build_app(service, mcp=False)) as client:
        yield client


def test_rest_needs_a_login(kb, rest):
    for url in ("/v1/search?q=water", f"/v1/patches/{kb['patches'][0].patch_id}", "/v1/changes"):
        r = rest.get(url)
        assert r.status_code == 401, url
    assert rest.get("/v1/search?q=water", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert rest.post("/v1/verify", json={"patch_id": kb["patches"][0].patch_id}).status_code == 401


def test_rest_search_get_verify_changes(kb, rest):
    h = {"Authorization": f"Bearer {kb['token']}"}
    water = kb["patches"][2]
    r = rest.get("/v1/search", params={"q": "at what temperature does water boil", "k": 2}, headers=h)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["patch_id"] == water.patch_id and results[0]["status"] == "accepted"
    assert results[0]["version"] == 2 and all(x["patch_id"] != water.patch_id for x in results[1:])
    old_hits = rest.get("/v1/search", params={"q": "water boils", "status": "superseded"}, headers=h).json()
    assert [(x["patch_id"], x["version"]) for x in old_hits["results"]] == [(water.patch_id, 1)]
    every = rest.get("/v1/search", params={"q": "water boils", "status": "any", "k": 10}, headers=h).json()
    assert [x["version"] for x in every["results"] if x["patch_id"] == water.patch_id] == [2]  # latest only
    r = rest.get("/v1/search", params={"q": "sequence", "domain": "physics"}, headers=h)
    assert all(x["domains"] == ["physics"] for x in r.json()["results"])
    assert rest.get("/v1/search", params={"q": "x", "k": 0}, headers=h).status_code == 422
    assert rest.get("/v1/search", params={"q": "x", "mode": "magic"}, headers=h).status_code == 422

    got = rest.get(f"/v1/patches/{water.patch_id}", headers=h).json()
    assert got["content"] == water.content and got["signature"] == water.signature and got["version"] == 2
    assert [r["verdict"] for r in got["reviews"]] == ["accept", "accept"]
    # the superseded first version is still there, by version, and still verifies
    old = rest.get(f"/v1/patches/{water.patch_id}", params={"version": 1}, headers=h).json()
    assert old["version"] == 1 and old["status"] == "superseded" and old["content"] == kb["first_water"].content
    assert rest.post("/v1/verify", json={"patch": old}, headers=h).json()["valid"] is True
    assert rest.get(f"/v1/patches/{water.patch_id}", params={"version": 9}, headers=h).status_code == 404
    assert rest.get("/v1/patches/" + "0" * 32, headers=h).status_code == 404

    ok = rest.post("/v1/verify", json={"patch": got}, headers=h).json()
    assert ok["valid"] is True and all(ok["checks"].values())
    bad = rest.post("/v1/verify", json={"patch": _tampered(got)}, headers=h).json()
    assert bad["valid"] is False and bad["checks"]["content_hash"] is False and bad["errors"]
    stored = rest.post("/v1/verify", json={"patch_id": water.patch_id}, headers=h).json()
    assert stored["valid"] is True and stored["patch_id"] == water.patch_id
    assert rest.post("/v1/verify", json={}, headers=h).status_code == 422
    junk = rest.post("/v1/verify", json={"patch": {"title": "not a patch"}}, headers=h).json()
    assert junk["valid"] is False and "malformed" in junk["errors"][0]
    assert rest.post("/v1/verify", json={"patch_id": "f" * 32}, headers=h).status_code == 404

    # the change feed, paged 7 at a time: every publication is there once, in order, and so is the supersession
    events, cursor, pages = [], 0, 0
    while True:
        page = rest.get("/v1/changes", params={"since": cursor, "limit": 7}, headers=h).json()
        events += page["changes"]
        cursor, pages = page["cursor"], pages + 1
        if not page["more"]:
            break
    assert pages > 1 and [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    accepted = [(e["patch_id"], e["version"]) for e in events if e["event"] == "accepted"]
    assert sorted(accepted) == sorted([(p.patch_id, 1) for p in kb["patches"]] + [(water.patch_id, 2)])
    assert [(e["patch_id"], e["version"]) for e in events if e["event"] == "superseded"] == [(water.patch_id, 1)]
    assert rest.get("/v1/changes", params={"since": cursor}, headers=h).json()["changes"] == []
    assert rest.get("/v1/changes", params={"limit": 0}, headers=h).status_code == 422


def test_rest_public_read(kb, service):
    from fastapi.testclient import TestClient

    from assay.knowledge.server import build_app

    with TestClient(build_app(service, mcp=False, public_read=True)) as client:
        r = client.get("/v1/search", params={"q": "tuple dictionary key"})
        assert r.status_code == 200 and r.json()["results"][0]["patch_id"] == kb["patches"][1].patch_id


# -- MCP ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def http_server(service):
    """REST + MCP on a real uvicorn server on loopback, in a thread."""
    from assay.knowledge.server import build_app

    with uvicorn_thread(build_app(service)) as url:
        yield url


async def _exercise(client, patches) -> None:  # noqa: ANN001
    """What a model does: list tools, search, get a patch, verify it and a tampered copy, read the resource."""
    tools = {t.name for t in (await client.list_tools()).tools}
    assert tools == {"search_knowledge", "get_patch", "verify_patch", "changes_since"}
    templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
    assert templates == ["patch://{id}"]

    water = patches[2]
    found = await client.call_tool("search_knowledge", {"query": "boiling temperature of water", "k": 3})
    assert not found.is_error
    assert found.structured_content["results"][0]["patch_id"] == water.patch_id

    got = await client.call_tool("get_patch", {"patch_id": water.patch_id})
    patch = got.structured_content
    assert patch["signature"] == water.signature and patch["content"] == water.content

    ok = await client.call_tool("verify_patch", {"patch": patch})
    assert ok.structured_content["valid"] is True, ok.structured_content
    bad = await client.call_tool("verify_patch", {"patch": _tampered(patch)})
    assert bad.structured_content["valid"] is False and bad.structured_content["checks"]["content_hash"] is False
    stored = await client.call_tool("verify_patch", {"patch_id": water.patch_id})
    assert stored.structured_content["valid"] is True

    missing = await client.call_tool("get_patch", {"patch_id": "0" * 32})
    assert missing.is_error

    feed = (await client.call_tool("changes_since", {"cursor": 0, "limit": 1000})).structured_content
    assert feed["more"] is False
    assert {c["patch_id"] for c in feed["changes"] if c["event"] == "accepted"} == {p.patch_id for p in patches}

    text = (await client.read_resource(f"patch://{water.patch_id}")).contents[0].text
    assert json.loads(text)["signature"] == water.signature
    versioned = json.loads((await client.read_resource(f"patch://{water.patch_id}@1")).contents[0].text)
    assert versioned["version"] == 1 and versioned["status"] == "superseded"


def test_mcp_over_streamable_http(kb, http_server):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> None:
        headers = {"Authorization": f"Bearer {kb['token']}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(f"{http_server}/mcp", http_client=http)) as client:
                await _exercise(client, kb["patches"])

    asyncio.run(main())


def test_mcp_over_http_needs_a_login(kb, http_server):
    import httpx

    r = httpx.post(f"{http_server}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    r = httpx.post(f"{http_server}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream", "Authorization": "Bearer wrong"})
    assert r.status_code == 401
    # the REST face of the same server answers too
    r = httpx.get(f"{http_server}/v1/search", params={"q": "tuple"},
                  headers={"Authorization": f"Bearer {kb['token']}"})
    assert r.status_code == 200 and r.json()["results"]


def test_mcp_over_stdio(kb, tmp_path):
    """A model host starts `assay knowledge serve --transport mcp-stdio` and talks to it over stdin/stdout (the
    spawned server indexes the database from scratch into its own index folder)."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    assay = str(Path(sys.executable).parent / "assay")
    params = StdioServerParameters(
        command=assay, args=["knowledge", "serve", "--db", str(kb["db_path"]), "--transport", "mcp-stdio",
                             "--index", str(tmp_path / "stdio-index"), "--embedder", "hashed",
                             "--root", str(kb["root_pub"])],
        env={"HF_HUB_OFFLINE": "1"}, cwd=str(tmp_path))

    async def main() -> None:
        async with Client(params, read_timeout_seconds=120) as client:
            await _exercise(client, kb["patches"])

    asyncio.run(main())
    assert (tmp_path / "stdio-index" / "index.sqlite").is_file()

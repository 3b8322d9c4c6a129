"""The annotation API and workflow, run on SQLite and on PostgreSQL: authorisation (including trying to read and write
another project's data as the wrong user), CSRF, overlap, leases, gold, review, import with lineage, export."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

import pytest
from annotate_support import (BACKENDS, api_login, make_database, preference_records,
                              sft_records, web_login)
from sqlalchemy import func, select, update

from assay.annotate import workflow
from assay.annotate.models import Annotation, Assignment, Item, Project
from assay.platform.users import create_user

PW = "password-123"


@pytest.fixture
def world(db):
    """Two projects; alice annotates prefs, bob annotates sft, rita reviews prefs, admin sees all."""
    with db.write() as s:
        create_user(s, "admin", PW, "admin")
        for u in ("alice", "bob", "carol", "rita"):
            create_user(s, u, PW, "reviewer" if u == "rita" else "annotator")
        prefs = workflow.create_project(s, "prefs", "preference", guidelines="Pick the more helpful answer.",
                                        overlap=2)
        sft = workflow.create_project(s, "sft", "sft", guidelines="Write a good answer.")
        workflow.add_member(s, prefs, "alice")
        workflow.add_member(s, prefs, "carol")
        workflow.add_member(s, prefs, "rita", "reviewer")
        workflow.add_member(s, sft, "bob")
        workflow.add_items(s, prefs, preference_records(6))
        workflow.add_items(s, sft, sft_records(3))
        ids = {"prefs": prefs.id, "sft": sft.id}
    return ids


@pytest.fixture
def client(db):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app

    with TestClient(create_app(database=db), follow_redirects=False) as c:
        yield c


def fresh_client(db):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app

    return TestClient(create_app(database=db), follow_redirects=False)


# -- authentication ------------------------------------------------------------------------------------------------
def test_login_logout_and_tokens(client, world):
    assert client.post("/api/login", json={"username": "alice", "password": "wrong-pass"}).status_code == 401
    assert client.post("/api/login", json={"username": "nobody", "password": PW}).status_code == 401
    assert client.get("/api/me").status_code == 401
    alice = api_login(client, "alice", PW)
    assert alice.get("/api/me").json()["username"] == "alice"
    assert client.get("/api/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert alice.post("/api/logout").status_code == 200
    assert alice.get("/api/me").status_code == 401  # the token is revoked server-side


def test_passwords_are_hashed_with_argon2(db, world):
    from assay.platform.models import User

    with db.read() as s:
        h = s.scalar(select(User.password_hash).where(User.username == "alice"))
    assert h.startswith("$argon2id$") and PW not in h


# -- authorisation: the wrong user on another project's data ----------------------------------------------------
def test_annotator_sees_only_assigned_projects(client, world):
    alice = api_login(client, "alice", PW)
    assert [p["name"] for p in alice.get("/api/projects").json()] == ["prefs"]
    admin = api_login(client, "admin", PW)
    assert {p["name"] for p in admin.get("/api/projects").json()} == {"prefs", "sft"}
    assert alice.get(f"/api/projects/{world['sft']}").status_code == 404
    assert alice.get("/api/projects/999").status_code == 404  # same answer as for a project that exists


def test_wrong_user_cannot_read_or_write_another_projects_data(client, world, db):
    alice, bob = api_login(client, "alice", PW), api_login(client, "bob", PW)
    sft = world["sft"]
    # bob holds an SFT item
    held = bob.post(f"/api/projects/{sft}/next").json()
    aid, item_id = held["assignment"]["id"], held["item"]["id"]
    # alice (prefs only) tries every door of the sft project
    assert alice.post(f"/api/projects/{sft}/next").status_code == 404
    assert alice.get(f"/api/projects/{sft}/items/{item_id}").status_code == 404
    assert alice.get(f"/api/projects/{sft}/annotations").status_code == 404
    assert alice.get(f"/api/projects/{sft}/quality").status_code == 404
    assert alice.get(f"/api/projects/{sft}/export?format=sft").status_code == 404
    r = alice.post(f"/api/projects/{sft}/assignments/{aid}/submit", json={"value": {"response": "stolen"}})
    assert r.status_code == 404
    assert alice.post(f"/api/projects/{sft}/assignments/{aid}/release").status_code == 404
    # through her own project's URL with the other project's assignment id
    r = alice.post(f"/api/projects/{world['prefs']}/assignments/{aid}/submit", json={"value": {"choice": "a"}})
    assert r.status_code == 404
    # and nothing was written
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Annotation)) == 0
        a = s.get(Assignment, aid)
        assert a.status == "leased" and a.user_id is not None
    assert bob.post(f"/api/projects/{sft}/assignments/{aid}/submit",
                    json={"value": {"response": "mine"}}).status_code == 201


def test_annotator_cannot_act_as_reviewer_or_admin(client, world):
    alice = api_login(client, "alice", PW)
    p = world["prefs"]
    assert alice.get(f"/api/projects/{p}/quality").status_code == 403
    assert alice.get(f"/api/projects/{p}/export?format=dpo").status_code == 403
    assert alice.post(f"/api/projects/{p}/annotations/1/review", json={"decision": "accepted"}).status_code == 403
    assert alice.post(f"/api/projects/{p}/members", json={"username": "alice", "role": "reviewer"}).status_code == 403
    assert alice.post(f"/api/projects/{p}/items", json={"records": [{"text": "x"}]}).status_code == 403
    assert alice.post("/api/users", json={"username": "eve", "password": PW, "role": "admin"}).status_code == 403
    assert alice.post("/api/projects", json={"name": "x", "task_type": "sft"}).status_code == 403
    assert alice.get("/api/users").status_code == 403


def test_annotators_see_only_their_own_annotations_and_items(client, world):
    alice, carol, rita = (api_login(client, u, PW) for u in ("alice", "carol", "rita"))
    p = world["prefs"]
    a1 = alice.post(f"/api/projects/{p}/next").json()
    alice.post(f"/api/projects/{p}/assignments/{a1['assignment']['id']}/submit", json={"value": {"choice": "a"}})
    c1 = carol.post(f"/api/projects/{p}/next").json()
    carol.post(f"/api/projects/{p}/assignments/{c1['assignment']['id']}/submit", json={"value": {"choice": "b"}})
    assert {a["user_id"] for a in alice.get(f"/api/projects/{p}/annotations").json()} == {
        alice.get("/api/me").json()["id"]}
    assert len(rita.get(f"/api/projects/{p}/annotations").json()) == 2
    # carol may not open an item she never held
    alice_next = alice.post(f"/api/projects/{p}/next").json()
    other = alice_next["item"]["id"]
    if other != c1["item"]["id"]:
        assert carol.get(f"/api/projects/{p}/items/{other}").status_code == 404
    # reviewers get provenance, annotators do not
    full = rita.get(f"/api/projects/{p}/items/{a1['item']['id']}").json()
    assert full["record_id"].startswith("r") and "lineage" in full
    assert "record_id" not in alice.get(f"/api/projects/{p}/items/{a1['item']['id']}").json()


def test_csrf_required_for_cookie_sessions(client, world, db):
    csrf = web_login(client, "alice", PW)
    p = world["prefs"]
    assert client.post(f"/api/projects/{p}/next").status_code == 403  # cookie, no token
    assert client.post(f"/api/projects/{p}/next", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post(f"/api/projects/{p}/next", headers={"X-CSRF-Token": csrf}).status_code == 200
    # forms too
    assert client.post(f"/projects/{p}/start", data={"csrf_token": "forged"}).status_code == 403
    assert client.post(f"/projects/{p}/start", data={"csrf_token": csrf}).status_code == 303
    # the login form itself needs the double-submit token
    other = fresh_client(db)
    r = other.post("/login", data={"username": "alice", "password": PW, "csrf_token": "x"})
    assert r.status_code == 303 and "error=expired" in r.headers["location"]
    assert "assay_session" not in other.cookies


def test_open_redirect_refused(client, world):
    page = client.get("/login?next=//evil.example/x")
    assert 'value="/"' in page.text and "evil" not in page.text


# -- the queue -----------------------------------------------------------------------------------------------------
def test_overlap_gives_each_item_k_distinct_annotators(client, world, db):
    p = world["prefs"]
    users = [api_login(client, u, PW) for u in ("alice", "carol")]
    with db.write() as s:
        dave = create_user(s, "dave", PW)
        workflow.add_member(s, s.get(Project, p), "dave")
    users.append(api_login(client, "dave", PW))
    done = Counter()
    for _round in range(10):
        for u in users:
            n = u.post(f"/api/projects/{p}/next").json()
            if n["assignment"] is None:
                continue
            r = u.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit",
                       json={"value": {"choice": "tie"}})
            assert r.status_code == 201
            done[u.username] += 1
    assert sum(done.values()) == 6 * 2  # every slot filled, none twice
    with db.read() as s:
        per_item = s.execute(select(Annotation.item_id, func.count(), func.count(func.distinct(Annotation.user_id)))
                             .group_by(Annotation.item_id)).all()
    assert len(per_item) == 6 and all(n == 2 and d == 2 for _, n, d in per_item)
    assert all(u.post(f"/api/projects/{p}/next").json()["assignment"] is None for u in users)


def test_asking_again_returns_the_held_item(client, world):
    alice = api_login(client, "alice", PW)
    p = world["prefs"]
    first = alice.post(f"/api/projects/{p}/next").json()
    again = alice.post(f"/api/projects/{p}/next").json()
    assert first["assignment"]["id"] == again["assignment"]["id"]
    assert again["assignment"]["lease_expires"] >= first["assignment"]["lease_expires"]


def test_abandoned_lease_returns_to_the_queue(client, world, db):
    with db.write() as s:
        proj = s.get(Project, world["prefs"])
        proj.overlap = 1
        s.execute(update(Assignment).where(Assignment.project_id == proj.id, Assignment.slot == 1)
                  .values(status="submitted"))  # pretend the second slots are done: one free slot per item
    p = world["prefs"]
    alice, carol = api_login(client, "alice", PW), api_login(client, "carol", PW)
    held = alice.post(f"/api/projects/{p}/next").json()["assignment"]
    # carol cannot get alice's slot while the lease runs
    got = carol.post(f"/api/projects/{p}/next").json()["assignment"]
    assert got["item_id"] != held["item_id"]
    carol.post(f"/api/projects/{p}/assignments/{got['id']}/release")
    # alice walks away; her lease runs out
    with db.write() as s:
        s.execute(update(Assignment).where(Assignment.id == held["id"]).values(lease_expires=0.0))
    # the expired lease comes back first (issue 15 §4: abandoned items used to wait until every open slot was
    # gone), then carol works through the open items
    seen = []
    for _ in range(10):
        n = carol.post(f"/api/projects/{p}/next").json()["assignment"]
        if n is None:
            break
        seen.append(n["item_id"])
        assert carol.post(f"/api/projects/{p}/assignments/{n['id']}/submit",
                          json={"value": {"choice": "a"}}).status_code == 201
    assert seen[0] == held["item_id"] and len(seen) == 6
    # alice's late submission is refused: the slot is carol's now, and the answer is the one for an id that does not
    # exist (issue 14 §3: another annotator's slot answered 409, a missing one 404)
    r = alice.post(f"/api/projects/{p}/assignments/{held['id']}/submit", json={"value": {"choice": "b"}})
    missing = alice.post(f"/api/projects/{p}/assignments/999999/submit", json={"value": {"choice": "b"}})
    assert r.status_code == missing.status_code == 404 and r.json() == missing.json()
    with db.read() as s:
        assert s.scalar(select(func.count()).where(Annotation.item_id == held["item_id"])) == 1


def test_expired_lease_can_still_be_submitted_if_nobody_took_it(client, world, db):
    alice = api_login(client, "alice", PW)
    p = world["prefs"]
    held = alice.post(f"/api/projects/{p}/next").json()["assignment"]
    with db.write() as s:
        s.execute(update(Assignment).where(Assignment.id == held["id"]).values(lease_expires=0.0))
    r = alice.post(f"/api/projects/{p}/assignments/{held['id']}/submit", json={"value": {"choice": "a"}})
    assert r.status_code == 201
    assert alice.post(f"/api/projects/{p}/assignments/{held['id']}/submit",
                      json={"value": {"choice": "a"}}).status_code == 409  # no double submission


def test_concurrent_annotators_never_exceed_overlap(db, world):
    """Many threads claim and submit at once (PostgreSQL: SKIP LOCKED path; SQLite: BEGIN IMMEDIATE)."""
    with db.write() as s:
        proj = workflow.create_project(s, "race", "preference", overlap=3)
        workflow.add_items(s, proj, preference_records(20, "race"))
        users = [create_user(s, f"w{i}", PW).id for i in range(8)]
        pid = proj.id
    errors: list[Exception] = []
    submitted = Counter()

    def worker(uid: int) -> None:
        try:
            while True:
                with db.write() as s:
                    a = workflow.next_assignment(s, s.get(Project, pid), uid)
                    if a is None:
                        return
                    aid = a.id
                with db.write() as s:
                    workflow.submit(s, s.get(Project, pid), uid, aid, {"choice": "a"})
                submitted[uid] += 1
        except Exception as e:  # noqa: BLE001  (collected and asserted below)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert sum(submitted.values()) == 60
    with db.read() as s:
        rows = s.execute(select(Annotation.item_id, func.count(), func.count(func.distinct(Annotation.user_id)))
                         .where(Annotation.project_id == pid).group_by(Annotation.item_id)).all()
    assert len(rows) == 20 and all(n == 3 and d == 3 for _, n, d in rows)


def test_gold_items_are_mixed_in_at_the_set_rate_and_scored(db, client):
    from assay.core.record import Record

    with db.write() as s:
        create_user(s, "admin", PW, "admin")
        create_user(s, "gwen", PW)
        proj = workflow.create_project(s, "gold", "preference", overlap=1, gold_rate=0.25)
        workflow.add_member(s, proj, "gwen")
        workflow.add_items(s, proj, preference_records(30, "g"))
        golds = [Record(f"gold{i}", {"prompt": f"gold q{i}", "chosen": "right", "rejected": "wrong"}, "preference",
                        meta={"gold": "chosen"}) for i in range(10)]
        rep = workflow.add_items(s, proj, golds, gold=True)
        assert rep.imported == 10
        bad = workflow.add_items(s, proj, [Record("nogold", {"prompt": "p", "a": "x", "b": "y"}, "preference")],
                                 gold=True)
        assert bad.skipped == {"no_gold_answer": 1}
        pid = proj.id
    gwen = api_login(client, "gwen", PW)
    gold_seen = 0
    for k in range(20):
        n = gwen.post(f"/api/projects/{pid}/next").json()
        content = n["item"]["content"]
        assert "gold" not in json.dumps(n).lower().replace("gold q", "")  # nothing reveals a honeypot
        if content["prompt"].startswith("gold"):
            gold_seen += 1
            # answer right on screen: find the side showing "right"
            side = "a" if content["a"] == "right" else "b"
            choice = side if gold_seen % 2 else ("b" if side == "a" else "a")  # half right, half wrong
        else:
            choice = "a"
        assert gwen.post(f"/api/projects/{pid}/assignments/{n['assignment']['id']}/submit",
                         json={"value": {"choice": choice}}).status_code == 201
    assert gold_seen == 5  # 25 % of 20, exactly: gold share tracks the rate
    admin = api_login(client, "admin", PW)
    q = admin.get(f"/api/projects/{pid}/quality").json()
    row = next(a for a in q["annotators"] if a["annotator"] == "gwen")
    assert row["gold_n"] == 5 and abs(row["gold_accuracy"] - 3 / 5) < 1e-9


def test_review_rejection_reopens_the_slot_for_someone_else(client, world, db):
    p = world["prefs"]
    with db.write() as s:
        s.get(Project, p).review = True
    alice, carol, rita = (api_login(client, u, PW) for u in ("alice", "carol", "rita"))
    n = alice.post(f"/api/projects/{p}/next").json()
    ann = alice.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit",
                     json={"value": {"choice": "a", "rationale": "clearer"}}).json()
    r = rita.post(f"/api/projects/{p}/annotations/{ann['annotation_id']}/review",
                  json={"decision": "rejected", "note": "did not read B"})
    assert r.json()["review_status"] == "rejected"
    # alice is never offered that item again; the reopened slot goes to somebody else
    alice_items = set()
    for _ in range(12):
        m = alice.post(f"/api/projects/{p}/next").json()["assignment"]
        if m is None:
            break
        alice_items.add(m["item_id"])
        alice.post(f"/api/projects/{p}/assignments/{m['id']}/submit", json={"value": {"choice": "a"}})
    assert n["item"]["id"] not in alice_items
    carol_items = set()
    for _ in range(12):
        m = carol.post(f"/api/projects/{p}/next").json()["assignment"]
        if m is None:
            break
        carol_items.add(m["item_id"])
        carol.post(f"/api/projects/{p}/assignments/{m['id']}/submit", json={"value": {"choice": "b"}})
    assert n["item"]["id"] in carol_items
    # accepted-only export sees nothing yet; the live export has no rejected annotation
    admin = api_login(client, "admin", PW)
    rows = [json.loads(x) for x in admin.get(f"/api/projects/{p}/export?format=annotations").text.splitlines()]
    assert ann["annotation_id"] not in {r["annotation_id"] for r in rows}
    assert admin.get(f"/api/projects/{p}/export?format=annotations&accepted_only=true").text == ""


@pytest.mark.parametrize("value,fragment", [
    ({"choice": "c"}, "choice"), ({"choice": None}, "choice"), ({"choice": "a", "rationale": 5}, "rationale"),
    ({"choice": "a", "rationale": "x" * 200_001}, "longer"), ({"choice": "a", "rationale": "nul\x00"}, "NUL"),
])
def test_invalid_answers_are_refused(client, world, value, fragment):
    alice = api_login(client, "alice", PW)
    p = world["prefs"]
    n = alice.post(f"/api/projects/{p}/next").json()
    r = alice.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit", json={"value": value})
    assert r.status_code == 400 and fragment in r.json()["detail"]
    # the slot is still held: a valid answer goes through
    assert alice.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit",
                      json={"value": {"choice": "a"}}).status_code == 201


def test_rating_and_critique_tasks(db, client):
    from assay.core.record import Record

    with db.write() as s:
        create_user(s, "admin", PW, "admin")
        create_user(s, "rae", PW)
        rating = workflow.create_project(s, "rate", "rating", config={"dimensions": ["helpfulness", "honesty"],
                                                                      "scale": [1, 7]}, overlap=1)
        crit = workflow.create_project(s, "crit", "critique")
        for pr in (rating, crit):
            workflow.add_member(s, pr, "rae")
            workflow.add_items(s, pr, [Record("x1", {"prompt": "2+2?", "response": "5"}, "conversation")])
        ids = rating.id, crit.id
    rae = api_login(client, "rae", PW)
    n = rae.post(f"/api/projects/{ids[0]}/next").json()
    url = f"/api/projects/{ids[0]}/assignments/{n['assignment']['id']}/submit"
    assert rae.post(url, json={"value": {"scores": {"helpfulness": 8, "honesty": 1}}}).status_code == 400
    assert rae.post(url, json={"value": {"scores": {"helpfulness": 2}}}).status_code == 400
    assert rae.post(url, json={"value": {"scores": {"helpfulness": 2, "honesty": 1, "x": 3}}}).status_code == 400
    assert rae.post(url, json={"value": {"scores": {"helpfulness": 2, "honesty": 1}, "comment": "wrong"}}
                    ).status_code == 201
    n = rae.post(f"/api/projects/{ids[1]}/next").json()
    assert n["item"]["content"] == {"prompt": "2+2?", "response": "5"}
    url = f"/api/projects/{ids[1]}/assignments/{n['assignment']['id']}/submit"
    assert rae.post(url, json={"value": {"critique": "  "}}).status_code == 400
    assert rae.post(url, json={"value": {"critique": "2+2 is 4."}}).status_code == 201
    admin = api_login(client, "admin", PW)
    ratings = [json.loads(x) for x in admin.get(f"/api/projects/{ids[0]}/export?format=ratings").text.splitlines()]
    assert ratings[0]["score_helpfulness"] == 2 and ratings[0]["score_honesty"] == 1
    crits = [json.loads(x) for x in admin.get(f"/api/projects/{ids[1]}/export?format=critiques").text.splitlines()]
    assert crits[0]["critique"] == "2+2 is 4." and crits[0]["record_id"] == "x1"
    assert admin.get(f"/api/projects/{ids[1]}/export?format=dpo").status_code == 400


# -- pairwise orientation and images -------------------------------------------------------------------------------
def test_swapped_items_store_answers_in_record_orientation(client, world, db):
    p = world["prefs"]
    with db.read() as s:
        swapped = {i.id: i.swapped for i in s.scalars(select(Item).where(Item.project_id == p))}
    assert 0 < sum(swapped.values()) < len(swapped)  # a fixed coin flip per item
    alice = api_login(client, "alice", PW)
    for _ in range(6):
        n = alice.post(f"/api/projects/{p}/next").json()
        c = n["item"]["content"]
        good_side = "a" if c["a"].startswith("good") else "b"
        assert (good_side == "b") == swapped[n["item"]["id"]]
        alice.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit",
                   json={"value": {"choice": good_side}})
    with db.read() as s:
        assert {a.value["choice"] for a in s.scalars(select(Annotation))} == {"a"}  # "chosen" every time
    admin = api_login(client, "admin", PW)
    dpo = [json.loads(x) for x in admin.get(f"/api/projects/{p}/export?format=dpo&aggregate=none&min_votes=1")
           .text.splitlines()]  # overlap 2, one annotator: min_votes=1 lets the half-done items out
    assert len(dpo) == 6 and all(r["chosen"].startswith("good") and r["rejected"].startswith("bad") for r in dpo)


def test_image_pairs_are_shown_as_images(db, client):
    """Image pairs are served by the app's own authenticated media endpoint (never data URIs or foreign URLs); bytes
    that are not an image and remote URLs are counted skips at import."""
    import io

    from PIL import Image

    from assay.core.record import Record

    def png(colour: str) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (8, 6), colour).save(out, format="PNG")
        return out.getvalue()

    with db.write() as s:
        create_user(s, "ivy", PW)
        proj = workflow.create_project(s, "pics", "preference", config={"randomize_sides": False})
        workflow.add_member(s, proj, "ivy")
        rep = workflow.add_items(s, proj, [
            Record("img1", {"caption": "a red cube", "jpg_0": png("red"), "jpg_1": png("blue")}, "image_text"),
            Record("img2", {"caption": "x", "jpg_0": b"not an image", "jpg_1": png("blue")}, "image_text"),
            Record("img3", {"caption": "y", "jpg_0": png("red"), "jpg_1": "https://example.org/b.png"}, "image_text")])
        assert rep.imported == 1 and rep.skipped == {"bad_image": 1, "remote_image": 1}
        pid = proj.id
    csrf = web_login(client, "ivy", PW)
    client.post(f"/projects/{pid}/start", data={"csrf_token": csrf})
    page = client.get(f"/projects/{pid}/annotate").text
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert "a red cube" in page and len(srcs) == 2 and all(s.startswith(f"/api/projects/{pid}/items/") for s in srcs)
    assert "data:" not in page and "example.org" not in page
    assert client.get(srcs[0]).content == png("red") and client.get(srcs[1]).headers["content-type"] == "image/png"


def test_hostile_content_is_escaped(db, client):
    from assay.core.record import Record

    with db.write() as s:
        create_user(s, "ola", PW)
        proj = workflow.create_project(s, "xss", "sft", guidelines="<script>alert('g')</script>")
        workflow.add_member(s, proj, "ola")
        workflow.add_items(s, proj, [Record("x", {"prompt": "<img src=x onerror=alert(1)>\u202e\x01"}, "text")])
        pid = proj.id
    csrf = web_login(client, "ola", PW)
    client.post(f"/projects/{pid}/start", data={"csrf_token": csrf})
    r = client.get(f"/projects/{pid}/annotate")
    assert "<img src=x" not in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert "<script>alert" not in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]


# -- web flow ------------------------------------------------------------------------------------------------------
def test_web_flow_redirects_and_form_errors_keep_input(client, world):
    assert client.get("/").headers.get("location", "").startswith("/login") or client.get("/").url.path == "/login"
    csrf = web_login(client, "bob", PW)
    sft = world["sft"]
    assert "sft" in client.get("/").text and "prefs" not in client.get("/").text
    assert client.get(f"/projects/{world['prefs']}", headers={"accept": "text/html"}).status_code == 404
    client.post(f"/projects/{sft}/start", data={"csrf_token": csrf})
    page = client.get(f"/projects/{sft}/annotate").text
    aid = re.search(r'name="assignment_id" value="(\d+)"', page).group(1)
    r = client.post(f"/projects/{sft}/submit", data={"csrf_token": csrf, "assignment_id": aid, "response": "   "})
    assert r.status_code == 400 and "response is empty" in r.text
    r = client.post(f"/projects/{sft}/submit", data={"csrf_token": csrf, "assignment_id": aid,
                                                     "response": "Autumn moonlight", "seconds": "12.5"})
    assert r.status_code == 303 and "done=" in r.headers["location"]
    # skip gives the next item and the skipped one goes back to the queue
    page = client.get(f"/projects/{sft}/annotate").text
    aid2 = re.search(r'name="assignment_id" value="(\d+)"', page).group(1)
    assert client.post(f"/projects/{sft}/skip", data={"csrf_token": csrf, "assignment_id": aid2}).status_code == 303
    page = client.get(f"/projects/{sft}/annotate").text
    assert re.search(r'name="assignment_id" value="(\d+)"', page).group(1) != aid2


def test_reviewer_pages_and_dashboard(client, world, db):
    p = world["prefs"]
    alice, carol = api_login(client, "alice", PW), api_login(client, "carol", PW)
    for u, choice in ((alice, "a"), (carol, "a"), (alice, "b"), (carol, "tie")):
        n = u.post(f"/api/projects/{p}/next").json()
        u.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit", json={"value": {"choice": choice}})
    csrf = web_login(client, "rita", PW)
    page = client.get(f"/projects/{p}/review").text
    ids = re.findall(r'id="ann-(\d+)"', page)
    assert len(ids) == 4
    r = client.post(f"/projects/{p}/review/{ids[0]}", data={"csrf_token": csrf, "decision": "accepted"})
    assert r.status_code == 303
    assert len(re.findall(r'id="ann-(\d+)"', client.get(f"/projects/{p}/review").text)) == 3
    dash = client.get(f"/projects/{p}/dashboard")
    assert dash.status_code == 200 and "Krippendorff" in dash.text and "alice" in dash.text
    assert "built-in method" not in dash.text and "built-in method" not in client.get(f"/projects/{p}").text
    q = api_login(client, "rita", PW).get(f"/api/projects/{p}/quality").json()
    assert q["measures"]["choice"]["items"] == 2 and q["measures"]["choice"]["labels"] == 4


# -- import and export with lineage --------------------------------------------------------------------------------
def test_import_pipeline_output_keeps_lineage_and_counts_bad_input(db, world, tmp_path):
    from assay.core.record import LineageEntry, Record
    from assay.io.writers import ShardWriter

    lin = [LineageEntry("extract", "1", "abc"), LineageEntry("gopher_quality", "2", "def")]
    recs = [Record(f"pipe{i}", {"prompt": f"p{i}", "chosen": "c", "rejected": "r"}, "preference",
                   meta={"source": "crawl.warc.gz", "url": f"https://x/{i}"}, lineage=list(lin)) for i in range(7)]
    for fmt in ("jsonl.gz", "parquet"):
        w = ShardWriter(str(tmp_path / fmt), "part", fmt)
        w.write_many(recs)
        w.close()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "ok", "chosen": "c", "rejected": "r"}\nnot json\n\xff\xfe\n{"text": "no pair"}\n')
    rep = workflow.import_records(db, "prefs", [str(tmp_path / "jsonl.gz")])
    assert rep.imported == 7 and rep.duplicates == 0
    rep = workflow.import_records(db, world["prefs"], [str(tmp_path / "parquet")])
    assert rep.imported == 0 and rep.duplicates == 7  # same record ids: not imported twice
    rep = workflow.import_records(db, "prefs", [str(bad)])
    assert rep.imported == 1 and rep.skipped == {"no_pair": 1} and sum(rep.input_errors.values()) == 2
    with db.read() as s:
        item = s.scalar(select(Item).where(Item.record_id == "pipe3"))
        assert item.lineage == [e.as_dict() for e in lin] and item.meta["url"] == "https://x/3"
        assert s.scalar(select(func.count()).where(Assignment.item_id == item.id)) == 2  # overlap 2 slots


def test_export_formats_with_lineage_load_in_datasets(db, world, tmp_path):
    from assay.annotate.export import export

    with db.write() as s:
        create_user(s, "dan", PW)
        workflow.add_member(s, s.get(Project, world["prefs"]), "dan")
        users = {u: s.scalar(select(workflow.User.id).where(workflow.User.username == u))
                 for u in ("alice", "carol", "dan", "bob")}
    prefs, sft = world["prefs"], world["sft"]
    votes = {"alice": "a", "carol": "a", "dan": "b"}
    for _round in range(4):
        for name, choice in votes.items():
            with db.write() as s:
                pr = s.get(Project, prefs)
                a = workflow.next_assignment(s, pr, users[name])
            with db.write() as s:  # workflow values are in record orientation ("a" = chosen)
                workflow.submit(s, s.get(Project, prefs), users[name], a.id, {"choice": choice})
    for _ in range(3):
        with db.write() as s:
            a = workflow.next_assignment(s, s.get(Project, sft), users["bob"])
        with db.write() as s:
            workflow.submit(s, s.get(Project, sft), users["bob"], a.id, {"response": "An answer."})
    out = export(db, "sft", "sft", tmp_path / "sft.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert out["rows"] == 3 == len(rows)
    assert rows[0]["messages"] == [{"role": "user", "content": rows[0]["prompt"]},
                                   {"role": "assistant", "content": "An answer."}]
    assert rows[0]["annotator"] == "bob" and rows[0]["project"] == "sft" and rows[0]["record_id"].startswith("s")
    assert rows[0]["lineage"][-1]["step"] == "annotate.sft"
    # DPO by strict majority: items with a/a/b votes -> chosen is the record's first response; split items left out
    res = export(db, "prefs", "dpo", tmp_path / "dpo.jsonl")
    dpo = [json.loads(x) for x in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    with db.read() as s:
        per_item = Counter(s.scalars(select(Annotation.item_id).where(Annotation.project_id == prefs)))
    assert sum(per_item.values()) == 12
    assert len(dpo) == res["rows"] and res["rows"] + sum(res["left_out"].values()) == len(per_item)
    for r in dpo:
        assert sum(r["votes"].values()) == len(r["annotators"]) == len(r["annotation_ids"])
        winner = max(r["votes"], key=r["votes"].get)
        assert r["chosen"].startswith("good" if winner == "a" else "bad")
    # Parquet loads with datasets
    import datasets

    for fmt in ("sft", "dpo"):
        path = tmp_path / f"{fmt}.parquet"
        export(db, "sft" if fmt == "sft" else "prefs", fmt, path)
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        assert len(ds) == (3 if fmt == "sft" else res["rows"])
        assert "lineage" in ds.column_names and "record_id" in ds.column_names
        if fmt == "sft":
            assert ds[0]["messages"][1]["role"] == "assistant"


# -- schema --------------------------------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def migrated_db(request, tmp_path):
    database, cleanup = make_database(request.param, tmp_path, via_alembic=True)
    yield database
    cleanup()


def test_migrations_match_the_models(migrated_db):
    db = migrated_db
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from alembic.script import ScriptDirectory

    import assay.knowledge.models  # noqa: F401  (the knowledge layer's tables share this schema)
    import assay.experts.models  # noqa: F401
    from assay.platform.db import alembic_config, current_revision
    from assay.platform.models import all_tables

    with db.write_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), all_tables())
    assert diff == []
    head = ScriptDirectory.from_config(alembic_config(db.write_engine)).get_current_head()
    assert current_revision(db.write_engine) == head


# -- issue 15 §4: import keeps plain JSON ids and meta; dpo exports complete items; conversational layout --------------
def test_plain_jsonl_import_keeps_ids_and_reads_gold_from_meta(db, world, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"pair-{i}", "prompt": f"q{i}", "chosen": "good", "rejected": "bad",
                                         "meta": {"source": "team-a"}}) + "\n" for i in range(3)))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"gold-{i}", "prompt": f"g{i}", "chosen": "good", "rejected": "bad",
                                        "meta": {"gold": "a"}}) + "\n" for i in range(2)))
    report = workflow.import_records(db, "prefs", [str(pairs)])
    assert report.imported == 3 and not report.skipped
    report = workflow.import_records(db, "prefs", [str(gold)], gold=True)
    assert report.imported == 2 and not report.skipped  # was: skipped {"no_gold_answer": 2}
    with db.read() as s:
        items = {i.record_id: i for i in s.scalars(select(Item).where(Item.project_id == world["prefs"],
                                                                       Item.record_id.like("%-%")))}
    assert sorted(items) == ["gold-0", "gold-1", "pair-0", "pair-1", "pair-2"]
    assert items["pair-1"].meta["source"] == "team-a" and "id" not in items["pair-1"].content
    assert items["gold-0"].is_gold and items["gold-0"].gold_answer == {"choice": "a"}
    assert workflow.import_records(db, "prefs", [str(pairs)]).duplicates == 3  # re-import: same ids, no copies


def test_dpo_export_defaults_to_complete_items_and_offers_the_conversational_layout(client, world, db):
    p = world["prefs"]  # overlap 2
    alice, carol = api_login(client, "alice", PW), api_login(client, "carol", PW)
    for _ in range(3):  # alice: items 1-3
        n = alice.post(f"/api/projects/{p}/next").json()
        choice = "a" if n["item"]["content"]["a"].startswith("good") else "b"
        assert alice.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit",
                          json={"value": {"choice": choice}}).status_code == 201
    n = carol.post(f"/api/projects/{p}/next").json()  # carol: item 1 only
    choice = "a" if n["item"]["content"]["a"].startswith("good") else "b"
    assert carol.post(f"/api/projects/{p}/assignments/{n['assignment']['id']}/submit",
                      json={"value": {"choice": choice}}).status_code == 201
    admin = api_login(client, "admin", PW)

    def rows(query: str) -> list[dict]:
        r = admin.get(f"/api/projects/{p}/export?format=dpo{query}")
        assert r.status_code == 200, r.text
        return [json.loads(x) for x in r.text.splitlines()]

    complete = rows("")
    assert len(complete) == 1 and complete[0]["votes"]["a"] == 2 and complete[0]["record_id"] == "r0"
    assert len(rows("&min_votes=1")) == 3  # the single votes, when asked for
    assert rows("&min_votes=3") == []
    chat = rows("&layout=conversational")
    assert chat[0]["prompt"] == [{"role": "user", "content": "question 0"}]
    assert chat[0]["chosen"] == [{"role": "assistant", "content": "good answer 0"}]
    assert chat[0]["rejected"] == [{"role": "assistant", "content": "bad answer 0"}]
    assert admin.get(f"/api/projects/{p}/export?format=dpo&layout=sideways").status_code == 400


def test_web_form_answers_a_foreign_slot_like_a_missing_one(client, world):
    p = world["prefs"]
    carol = api_login(client, "carol", PW)
    theirs = carol.post(f"/api/projects/{p}/next").json()["assignment"]["id"]
    csrf = web_login(client, "alice", PW)
    pages = [client.post(f"/projects/{p}/submit", data={"csrf_token": csrf, "assignment_id": str(aid), "choice": "a"},
                         headers={"accept": "text/html"}) for aid in (theirs, 999_999)]
    assert [r.status_code for r in pages] == [404, 404]
    assert all(workflow.NOT_YOURS in r.text.replace("&#39;", "'") for r in pages)


def test_review_page_filters_and_pages_on_both_databases(client, world, db, monkeypatch):
    from assay.annotate import web

    monkeypatch.setattr(web, "REVIEW_PAGE_SIZE", 2)
    p = world["prefs"]
    for name, n in (("alice", 3), ("carol", 2)):
        u = api_login(client, name, PW)
        for _ in range(n):
            a = u.post(f"/api/projects/{p}/next").json()["assignment"]
            assert u.post(f"/api/projects/{p}/assignments/{a['id']}/submit",
                          json={"value": {"choice": "a"}}).status_code == 201
    web_login(client, "rita", PW)

    def page(query: str) -> tuple[str, list[str]]:
        r = client.get(f"/projects/{p}/review?{query}")
        assert r.status_code == 200, r.text
        info = re.search(r'class="page-info">([^<]+)<', r.text).group(1)
        return info, re.findall(r'<strong class="annotator">([^<]+)</strong>', r.text)

    assert page("") == ("page 1 of 3 · 5 annotations", ["alice", "alice"])
    assert page("page=3") == ("page 3 of 3 · 5 annotations", ["carol"])
    assert page("annotator=carol") == ("page 1 of 1 · 2 annotations", ["carol", "carol"])
    assert page("status=accepted")[0] == "page 1 of 1 · 0 annotations"
    assert page("status=all&annotator=alice&page=2") == ("page 2 of 2 · 3 annotations", ["alice"])
    assert client.get(f"/projects/{p}/review?status=bogus").status_code == 400

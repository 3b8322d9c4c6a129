"""The classify (single- and multi-label) and spans (NER) annotation tasks over the real app (TestClient; SQLite and
PostgreSQL like test_annotate_api): import with model suggestions, the pre-filled answer and whether annotators kept
it, answer checks, project isolation, Krippendorff's α cross-checked with the ``krippendorff`` package, span-level F1
(exact and token overlap) against hand-counted sets, the labels/spans exports with BIO tags, the web form with its
CSRF check, and zero-shot suggestions from the real packaged MiniLM."""

from __future__ import annotations

import json
import re

import pytest
from annotate_support import BACKENDS, api_login, cheap_password_hashing, make_database, web_login
from sqlalchemy import select

from assay.annotate import label_task, workflow
from assay.annotate.models import Item
from assay.platform.users import create_user

PW = "password-123"
TEXT = "Zoë 🙂 flew from Zürich to 東京 with Ana."  # ë precomposed, an emoji outside the BMP, CJK


def at(word: str, text: str = TEXT) -> tuple[int, int]:
    start = text.index(word)
    return start, start + len(word)


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    cheap_password_hashing()
    database, cleanup = make_database(request.param, tmp_path)
    with database.write() as s:
        create_user(s, "admin", PW, "admin")
        for name in ("alice", "bob", "carol", "mallory"):
            create_user(s, name, PW, "annotator")
    yield database
    cleanup()


def client_of(db):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app

    return TestClient(create_app(database=db), follow_redirects=False)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def work_through(who, pid: int, answer_of) -> int:  # noqa: ANN001
    """Claim and answer items until the queue is empty; returns how many were answered."""
    n = 0
    while (nxt := who.post(f"/api/projects/{pid}/next").json())["item"] is not None:
        r = who.post(f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit",
                     json={"value": answer_of(nxt["item"]["content"])})
        assert r.status_code == 201, r.text
        n += 1
    return n


def test_config_checks():
    with pytest.raises(ValueError, match="list of 1 to"):
        label_task.check_config("classify", label_task.default_config("classify"))
    with pytest.raises(ValueError, match="distinct"):
        label_task.check_config("spans", {"labels": ["PER", "PER"], "suggestion_threshold": 0.5})
    with pytest.raises(ValueError, match="keys must be distinct"):
        label_task.check_config("spans", {"labels": [{"name": "PER", "key": "p"}, {"name": "PRO", "key": "p"}],
                                          "suggestion_threshold": 0.5})
    with pytest.raises(ValueError, match="suggestion_threshold"):
        label_task.check_config("spans", {"labels": ["PER"], "suggestion_threshold": 2})
    cfg = label_task.check_config("classify", {"labels": "a, b", "multi_label": False, "suggestion_threshold": 0})
    assert cfg["labels"] == [{"name": "a", "key": "1", "description": ""}, {"name": "b", "key": "2", "description": ""}]


def test_multi_label_classify_suggestions_agreement_export_and_isolation(db, tmp_path):
    import krippendorff

    labels = ["sports", "politics", "science"]
    with db.write() as s:
        p = workflow.create_project(s, "topics", "classify", overlap=3,
                                    config={"labels": labels, "multi_label": True, "suggestion_threshold": 0.5})
        other = workflow.create_project(s, "other", "classify", config={"labels": ["x", "y"]})
        for u in ("alice", "bob", "carol"):
            workflow.add_member(s, p, u)
        workflow.add_member(s, other, "mallory")
        pid = p.id
    texts = [f"text number {k}" for k in range(5)]
    rows = [{"id": f"t{k}", "text": t, "meta": {"suggestions": {"labels": [
        {"label": "sports", "score": 0.91}, {"label": "politics", "score": 0.62}, {"label": "science", "score": 0.1},
        {"label": "cooking", "score": 0.99}]}}} for k, t in enumerate(texts)]  # cooking: not a project label
    rows.append({"id": "bad-sugg", "text": "no usable suggestion", "meta": {"suggestions": {"labels": [
        {"label": "sports", "score": 7}], "spans": "nonsense"}}})
    rows.append({"id": "empty", "text": "   "})
    report = workflow.import_records(db, "topics", [write_jsonl(tmp_path / "t.jsonl", rows)])
    assert report.imported == 6 and report.skipped == {"no_text": 1}
    with db.read() as s:
        bad = s.scalar(select(Item.content).where(Item.record_id == "bad-sugg"))
    assert bad == {"text": "no usable suggestion", "suggestions": {"labels": []}}

    client = client_of(db)
    alice, bob, carol, mallory = (api_login(client, u, PW) for u in ("alice", "bob", "carol", "mallory"))
    # the answers: per record, per annotator (alice keeps the suggestion, bob drops politics, carol varies)
    plan = {"alice": lambda k: ["sports", "politics"], "bob": lambda k: ["sports"],
            "carol": lambda k: [["sports", "politics"], ["science"], [], ["sports"], ["politics", "science"],
                                ["sports"]][k]}
    index = {t: k for k, t in enumerate(texts + ["no usable suggestion"])}

    nxt = alice.post(f"/api/projects/{pid}/next").json()
    content, aid = nxt["item"]["content"], nxt["assignment"]["id"]
    assert content["prefill"] == ["sports", "politics"] and content["scores"]["sports"] == 0.91
    submit = f"/api/projects/{pid}/assignments/{aid}/submit"
    r = alice.post(submit, json={"value": {"labels": ["sports", "cooking"]}})
    assert r.status_code == 400 and "unknown label 'cooking'" in r.json()["detail"]
    # isolation: a member of another project sees neither the project nor alice's assignment
    assert mallory.get(f"/api/projects/{pid}").status_code == 404
    assert mallory.post(f"/api/projects/{pid}/next").status_code == 404
    assert mallory.post(submit, json={"value": {"labels": ["sports"]}}).status_code == 404
    assert client.post(submit, json={"value": {"labels": ["sports"]}}).status_code == 401
    assert alice.post(submit, json={"value": {"labels": plan["alice"](0)}}).status_code == 201

    for who in (alice, bob, carol):
        work_through(who, pid, lambda c, who=who: {"labels": plan[who.username](index[c["text"]])})

    admin = api_login(client, "admin", PW)
    out = [json.loads(x) for x in admin.get(f"/api/projects/{pid}/export?format=labels").text.splitlines()]
    assert len(out) == 18
    for row in out:
        k = index[row["text"]]
        assert row["labels"] == plan[row["annotator"]](k) and "label" not in row
        if k == 5:  # no usable suggestion: nothing pre-filled, nothing to accept
            assert row["suggested"] == [] and row["suggestion_accepted"] is None
        else:
            assert row["suggested"] == ["sports", "politics"]
            assert row["suggestion_accepted"] == (row["labels"] == ["sports", "politics"])
        assert row["lineage"][-1]["step"] == "annotate.classify" and row["record_id"] == f"t{k}".replace("t5",
                                                                                                        "bad-sugg")
    assert mallory.get(f"/api/projects/{pid}/export?format=labels").status_code == 404

    q = admin.get(f"/api/projects/{pid}/quality").json()
    users = ("alice", "bob", "carol")
    for name in labels:  # each label is a yes/no question; reference: the krippendorff package
        data = [[int(name in plan[u](k)) for k in range(6)] for u in users]
        ref = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
        assert q["measures"][f"label:{name}"]["alpha"] == pytest.approx(ref, abs=1e-4), name
    kept = sum(plan[u](k) == ["sports", "politics"] for u in users for k in range(5))
    assert q["suggestions"] == {"answers_with_suggestion": 15, "accepted_share": round(kept / 15, 4)}
    page = client.get(f"/projects/{pid}/dashboard", headers=admin.headers)
    assert page.status_code == 200 and 'id="suggestion-uptake"' in page.text


def test_single_label_alpha_web_form_and_csrf(db, tmp_path):
    import krippendorff

    labels = ["positive", "negative", "neutral"]
    with db.write() as s:
        p = workflow.create_project(s, "sentiment", "classify", overlap=2, config={"labels": labels})
        for u in ("alice", "bob"):
            workflow.add_member(s, p, u)
        pid = p.id
    rows = [{"id": f"s{k}", "text": f"review {k} <b>&amp;</b>",
             "suggestions": {"labels": {"positive": 0.91, "negative": 0.05, "neutral": 0.04}}} for k in range(4)]
    assert workflow.import_records(db, "sentiment", [write_jsonl(tmp_path / "s.jsonl", rows)]).imported == 4
    answers = {"alice": ["positive", "negative", "neutral", "positive"],
               "bob": ["positive", "neutral", "neutral", "negative"]}

    # alice through the web form: the page shows the suggestion pre-checked, the text escaped
    client = client_of(db)
    csrf = web_login(client, "alice", PW)
    assert client.post(f"/projects/{pid}/start", data={"csrf_token": csrf}).status_code == 303
    page = client.get(f"/projects/{pid}/annotate").text
    assert "suggested (0.91)" in page and "model 0.05" in page and "&lt;b&gt;&amp;amp;&lt;/b&gt;" in page
    assert re.search(r'name="label" value="positive" data-key="1"\s+checked', page)
    assert not re.search(r'value="negative" data-key="2"\s+checked', page)
    for _ in range(4):
        page = client.get(f"/projects/{pid}/annotate").text
        aid = re.search(r'name="assignment_id" value="(\d+)"', page).group(1)
        k = int(re.search(r"review (\d)", page).group(1))
        form = {"assignment_id": aid, "label": answers["alice"][k]}
        assert client.post(f"/projects/{pid}/submit", data=form).status_code == 403  # no CSRF token
        r = client.post(f"/projects/{pid}/submit", data={**form, "csrf_token": csrf, "seconds": "3"})
        assert r.status_code == 303, r.text
    bob = api_login(client_of(db), "bob", PW)
    nxt = bob.post(f"/api/projects/{pid}/next").json()
    r = bob.post(f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit",
                 json={"value": {"labels": ["positive", "negative"]}})
    assert r.status_code == 400 and "exactly one label" in r.json()["detail"]
    bob.post(f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/release")
    work_through(bob, pid, lambda c: {"label": answers["bob"][int(c["text"].split()[1])]})

    admin = api_login(client_of(db), "admin", PW)
    q = admin.get(f"/api/projects/{pid}/quality").json()
    data = [[labels.index(v) for v in answers[u]] for u in ("alice", "bob")]
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert q["measures"]["label"]["alpha"] == pytest.approx(ref, abs=1e-4)
    out = [json.loads(x) for x in admin.get(f"/api/projects/{pid}/export?format=labels").text.splitlines()]
    assert sorted((r["annotator"], r["label"], r["suggestion_accepted"]) for r in out) == sorted(
        (u, v, v == "positive") for u in answers for v in answers[u])


def test_spans_offsets_agreement_and_bio_export(db, tmp_path):
    with db.write() as s:
        p = workflow.create_project(s, "ner", "spans", overlap=2, config={"labels": ["PER", "LOC"]})
        for u in ("alice", "bob"):
            workflow.add_member(s, p, u)
        pid = p.id
    zoe, zurich, tokyo, ana = at("Zoë"), at("Zürich"), at("東京"), at("Ana")
    sugg = {"spans": [{"start": zoe[0], "end": zoe[1], "label": "PER", "score": 0.88},
                      {"start": zurich[0], "end": zurich[1], "label": "LOC", "score": 0.8},
                      {"start": ana[0], "end": ana[1], "label": "PER", "score": 0.3},   # below the threshold
                      {"start": 3, "end": 999, "label": "LOC", "score": 0.9}]}            # outside the text: dropped
    rows = [{"id": "n0", "text": TEXT, "meta": {"suggestions": sugg}}]
    assert workflow.import_records(db, "ner", [write_jsonl(tmp_path / "n.jsonl", rows)]).imported == 1
    client = client_of(db)
    alice, bob = api_login(client, "alice", PW), api_login(client, "bob", PW)
    nxt = alice.post(f"/api/projects/{pid}/next").json()
    c = nxt["item"]["content"]
    assert c["text"] == TEXT
    assert [(s["start"], s["end"], s["label"], s["score"]) for s in c["prefill"]] == [
        (*zoe, "PER", 0.88), (*zurich, "LOC", 0.8)]
    submit = f"/api/projects/{pid}/assignments/{nxt['assignment']['id']}/submit"
    for bad, message in (([{"start": 0, "end": 3, "label": "ORG"}], "not one of"),
                         ([{"start": 0, "end": len(TEXT) + 1, "label": "PER"}], "within characters"),
                         ([{"start": 0, "end": 3, "label": "PER"}, {"start": 2, "end": 5, "label": "LOC"}], "overlap"),
                         ("0 3", "START END LABEL")):
        r = alice.post(submit, json={"value": {"spans": bad}})
        assert r.status_code == 400 and message in r.json()["detail"], (bad, r.text)
    # alice keeps both suggestions and adds 東京 and Ana (as lines, the no-JavaScript form)
    lines = f"{zoe[0]} {zoe[1]} PER\n{zurich[0]} {zurich[1]} LOC\n{tokyo[0]} {tokyo[1]} LOC\n{ana[0]} {ana[1]} PER\n"
    assert alice.post(submit, json={"value": {"spans": lines}}).status_code == 201
    # bob keeps Zoë, relabels Zürich as PER and marks "東京 with" as LOC
    tokyo_with = at("東京 with")
    bob_spans = [{"start": zoe[0], "end": zoe[1], "label": "PER"},
                 {"start": zurich[0], "end": zurich[1], "label": "PER"},
                 {"start": tokyo_with[0], "end": tokyo_with[1], "label": "LOC"}]
    assert work_through(bob, pid, lambda c: {"spans": bob_spans}) == 1

    admin = api_login(client, "admin", PW)
    out = {r["annotator"]: r for r in map(json.loads, admin.get(f"/api/projects/{pid}/export?format=spans")
                                          .text.splitlines())}
    a, b = out["alice"], out["bob"]
    assert [TEXT[s["start"]:s["end"]] for s in a["spans"]] == ["Zoë", "Zürich", "東京", "Ana"]
    assert [s["suggested"] for s in a["spans"]] == [True, True, False, False]
    assert (a["accepted_suggestions"], a["rejected_suggestions"], a["added"]) == (2, 0, 2)
    assert (b["accepted_suggestions"], b["rejected_suggestions"], b["added"]) == (1, 1, 2)
    assert a["tokens"] == ["Zoë", "🙂", "flew", "from", "Zürich", "to", "東京", "with", "Ana", "."]
    assert a["ner_tags"] == ["B-PER", "O", "O", "O", "B-LOC", "O", "B-LOC", "O", "B-PER", "O"]
    assert b["ner_tags"] == ["B-PER", "O", "O", "O", "B-PER", "O", "B-LOC", "I-LOC", "O", "O"]

    q = admin.get(f"/api/projects/{pid}/quality").json()
    exact_a = {(*zoe, "PER"), (*zurich, "LOC"), (*tokyo, "LOC"), (*ana, "PER")}
    exact_b = {(*zoe, "PER"), (*zurich, "PER"), (*tokyo_with, "LOC")}
    tok_a = {(0, "PER"), (4, "LOC"), (6, "LOC"), (8, "PER")}  # token indices of the list above
    tok_b = {(0, "PER"), (4, "PER"), (6, "LOC"), (7, "LOC")}
    assert q["spans"]["pairs"] == 1
    assert q["spans"]["exact_f1"] == pytest.approx(2 * len(exact_a & exact_b) / (len(exact_a) + len(exact_b)), abs=1e-4)
    assert q["spans"]["token_f1"] == pytest.approx(2 * len(tok_a & tok_b) / (len(tok_a) + len(tok_b)), abs=1e-4)
    assert q["suggestions"]["suggested_spans"] == 4 and q["suggestions"]["kept_share"] == 0.75
    r = admin.get(f"/api/projects/{pid}/export?format=labels")
    assert r.status_code == 400 and "classify" in r.json()["detail"]
    page = client.get(f"/projects/{pid}/dashboard", headers=admin.headers)
    assert page.status_code == 200 and 'id="span-agreement"' in page.text
    page = client.get(f"/projects/{pid}/review", headers=admin.headers)
    assert page.status_code == 200 and "1 suggested span(s) kept, 1 removed, 2 added." in page.text
    assert "<td>東京 with</td>" in page.text


def test_zero_shot_suggestions_from_minilm(db, tmp_path):
    """`assay annotate suggest` with the packaged all-MiniLM-L6-v2 (offline): each text's top label is the topic it
    is about, scores are a distribution, and items that already have suggestions keep them."""
    from assay.annotate.suggest import suggest

    labels = [{"name": "sports", "description": "sports: football, tennis, a match, athletes, a team winning"},
              {"name": "cooking", "description": "cooking: a recipe, baking, ingredients, an oven, a kitchen"},
              {"name": "astronomy", "description": "astronomy: stars, planets, telescopes, galaxies, space"}]
    with db.write() as s:
        workflow.create_project(s, "topics", "classify", config={"labels": labels})
        workflow.create_project(s, "ner", "spans", config={"labels": ["PER"]})
    texts = {"a": ("The striker scored twice and the home team won the cup final.", "sports"),
             "b": ("Knead the dough, let it rise, then bake the bread for forty minutes.", "cooking"),
             "c": ("The telescope photographed a spiral galaxy far beyond the Milky Way.", "astronomy"),
             "d": ("She served an ace to win the tennis match in straight sets.", "sports")}
    rows = [{"id": k, "text": t} for k, (t, _) in texts.items()]
    rows.append({"id": "given", "text": "already scored", "suggestions": {"labels": {"cooking": 0.7}}})
    assert workflow.import_records(db, "topics", [write_jsonl(tmp_path / "z.jsonl", rows)]).imported == 5
    assert suggest(db, "topics") == {"suggested": 4, "kept": 1}
    with db.read() as s:
        items = {i.record_id: i.content for i in s.scalars(select(Item).where(Item.record_id.in_(list(texts) +
                                                                                                   ["given"])))}
    for k, (_, topic) in texts.items():
        sugg = items[k]["suggestions"]
        assert sugg["model"] == "zero-shot minilm" and sugg["labels"][0]["label"] == topic, sugg
        assert sum(x["score"] for x in sugg["labels"]) == pytest.approx(1, abs=1e-3)
    assert items["given"]["suggestions"]["labels"] == [{"label": "cooking", "score": 0.7}]
    with pytest.raises(workflow.WorkflowError, match="classify projects"):
        suggest(db, "ner")

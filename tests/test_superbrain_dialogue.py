"""The expert dialogue task (SuperBrain) over the API with the real local model (SmolLM2-135M, short turns): the
server generates every model turn, records which turns the expert corrected from what the model really said (a
forged "original" from the client is ignored), keeps projects and slots apart, and exports transcripts as rows with
lineage."""

from __future__ import annotations

import json
import re

import pytest
from annotate_support import api_login, cheap_password_hashing, make_database, web_login
from sqlalchemy import select

from assay.annotate import workflow
from assay.annotate.models import Annotation
from assay.core.record import Record
from assay.platform.users import create_user

PW = "dialogue-password"
CONFIG = {"max_tokens": 24, "max_turns": 6, "domain": "medicine"}


@pytest.fixture()
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_DIALOGUE_CACHE", str(tmp_path / "dialogue-cache.sqlite"))
    cheap_password_hashing()
    database, cleanup = make_database("sqlite", tmp_path)
    with database.write() as s:
        create_user(s, "admin", PW, "admin")
        create_user(s, "alice", PW, "annotator")
        create_user(s, "bob", PW, "annotator")
        p = workflow.create_project(s, "med-dialogue", "dialogue", config=CONFIG, overlap=2)
        other = workflow.create_project(s, "other", "dialogue", config=CONFIG)
        for name in ("alice", "bob"):
            workflow.add_member(s, p, name)
        workflow.add_member(s, other, "bob")
        workflow.add_items(s, p, [Record("q-fever", {"question": "What is a normal body temperature?"}, "text",
                                         meta={"source": "test"})])
        workflow.add_items(s, other, [Record("q-other", {"question": "What is 2 + 2?"}, "text")])
    yield database
    cleanup()


def test_config_and_items_are_checked(db):
    with db.write() as s:
        with pytest.raises(workflow.WorkflowError, match="max_tokens"):
            workflow.create_project(s, "bad", "dialogue", config={"max_tokens": 0})
        with pytest.raises(workflow.WorkflowError, match="backend"):
            workflow.create_project(s, "bad2", "dialogue", config={"backend": {"kind": "nope"}})
        p = workflow.create_project(s, "ok", "dialogue")
        report = workflow.add_items(s, p, [Record("empty", {"question": "  "}, "text"),
                                           Record("fine", {"prompt": "Why is the sky blue?", "domain": "Physics"},
                                                  "text")])
    assert report.imported == 1 and report.skipped == {"no_question": 1}


def test_dialogue_turns_corrections_and_export(db):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app
    from assay.annotate.export import export_rows

    client = TestClient(create_app(database=db), follow_redirects=False)
    alice, bob = api_login(client, "alice", PW), api_login(client, "bob", PW)
    with db.read() as s:
        pid = workflow.find_project(s, "med-dialogue").id
        other = workflow.find_project(s, "other").id
    claim = alice.post(f"/api/projects/{pid}/next").json()
    aid = claim["assignment"]["id"]
    assert claim["item"]["content"]["question"] == "What is a normal body temperature?"
    url = f"/api/projects/{pid}/assignments/{aid}/dialogue/turn"

    first = alice.post(url, json={"turns": []})
    assert first.status_code == 200, first.text
    said = first.json()["text"]
    assert said and first.json()["model"].startswith("local:")
    # somebody else's slot, another project's URL, no login: refused without a model call
    assert bob.post(url, json={"turns": []}).status_code == 404
    assert bob.post(f"/api/projects/{other}/assignments/{aid}/dialogue/turn", json={"turns": []}).status_code == 404
    assert client.post(url, json={"turns": []}).status_code == 401
    # the transcript must alternate model / expert and end with the expert before the model speaks again
    assert alice.post(url, json={"turns": [{"role": "model", "text": said}]}).status_code == 400

    corrected = "A normal body temperature is about 37 °C (98.6 °F)."
    turns = [{"role": "model", "text": corrected}, {"role": "expert", "text": "And in children?"}]
    second = alice.post(url, json={"turns": turns})
    assert second.status_code == 200, second.text
    reply = second.json()["text"]
    # submitted with a forged original for the first turn: the server asks the model again and ignores it
    value = {"turns": [{"role": "model", "text": corrected, "original": corrected},
                       {"role": "expert", "text": "And in children?"},
                       {"role": "model", "text": reply}],
             "final_answer": corrected, "final_turn": None}
    done = alice.post(f"/api/projects/{pid}/assignments/{aid}/submit", json={"value": value})
    assert done.status_code == 201, done.text
    with db.read() as s:
        stored = s.scalar(select(Annotation.value).where(Annotation.id == done.json()["annotation_id"]))
    t0, t2 = stored["turns"][0], stored["turns"][2]
    assert t0["original"] == said and t0["corrected"] is True and t0["verified"] is True
    assert t2["original"] == reply and t2["corrected"] is False
    assert stored["model"].startswith("local:") and stored["domain"] == "medicine"

    # a transcript in which the model never spoke, or a bad final turn, is refused
    claim_b = bob.post(f"/api/projects/{pid}/next").json()
    bad = bob.post(f"/api/projects/{pid}/assignments/{claim_b['assignment']['id']}/submit",
                   json={"value": {"turns": [], "final_answer": "x"}})
    assert bad.status_code == 400 and "ask the model" in bad.json()["detail"]
    # through the web form: the refused transcript comes back in the page, so nothing the expert typed is lost
    web = TestClient(create_app(database=db), follow_redirects=False)
    csrf = web_login(web, "bob", PW)
    sent = json.dumps([{"role": "expert", "text": "My own notes </script> on fever"}])
    page = web.post(f"/projects/{pid}/submit", data={"csrf_token": csrf, "assignment_id": claim_b["assignment"]["id"],
                                                     "transcript": sent, "final_answer": "37 C"},
                    headers={"accept": "text/html"})
    assert page.status_code == 400 and "must be a model turn" in page.text
    data = json.loads(re.search(r'id="dialogue-data">(.*?)</script>', page.text, re.S).group(1))
    assert json.loads(data["saved"]) == json.loads(sent) and "</script> on" not in page.text

    with db.read() as s:
        rows = list(export_rows(s, workflow.find_project(s, "med-dialogue"), "dialogue"))
    assert len(rows) == 1
    row = rows[0]
    assert row["annotator"] == "alice" and row["record_id"] == "q-fever" and row["corrected_turns"] == [0]
    assert row["final_answer"] == corrected and row["messages"][1] == {"role": "assistant", "content": corrected}
    assert row["lineage"][-1]["step"] == "annotate.dialogue"

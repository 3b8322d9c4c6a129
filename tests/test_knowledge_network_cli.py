"""``assay knowledge`` expert-network commands from the shell, on a real SQLite database made by ``assay annotate
migrate``: expert profiles, reputation (cross-checked against the library), routing of work and of a real patch,
open tasks, and peer-prediction pay of a real annotation project filled through the annotation queue — paying a
batch twice pays nothing more, paying it with other parameters is refused, and user mistakes exit with code 2."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from annotate_support import cheap_password_hashing
from test_knowledge_experts import KINDS, _annotate
from typer.testing import CliRunner

from assay.annotate import workflow
from assay.cli import app
from assay.experts.reputation import compute_reputation
from assay.experts.routing import route
from assay.knowledge.store import KnowledgeStore
from assay.platform.db import Database


def _ok(result) -> str:  # noqa: ANN001
    assert result.exit_code == 0, result.output
    return result.output


def _json(result):  # noqa: ANN001, ANN202
    return json.loads(_ok(result))


def _refused(result, words: str) -> None:  # noqa: ANN001
    """A user mistake: exit code 2 with a one-line reason, never a traceback."""
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output
    assert "Traceback" not in result.output


@pytest.fixture
def project_db(tmp_path, monkeypatch):
    """A migrated SQLite file holding a preference project in domain 'medicine', annotated through the real queue
    by five annotators of known kinds (careful, sloppy, random, constant)."""
    cheap_password_hashing()
    path = str(tmp_path / "team.db")
    monkeypatch.setenv("ASSAY_ANNOTATE_DB", path)
    _ok(CliRunner().invoke(app, ["annotate", "migrate"]))
    db = Database(path)
    _annotate(db)
    yield db
    db.dispose()


def kn(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, ["knowledge", *args])


def test_profiles_reputation_routing_and_tasks(project_db):
    db = project_db
    for name in KINDS:
        e = _json(kn("expert", "set", name, "--domain", "medicine=3", "--capacity", "10", "--json"))
        assert e["domains"] == {"medicine": 3} and e["capacity"] == 10 and e["available"] is True
    e = _json(kn("expert", "set", "careful2", "-d", "Law=4", "--json"))  # merged, lower-cased
    assert e["domains"] == {"law": 4, "medicine": 3} and e["capacity"] == 10
    assert "unavailable" in _ok(kn("expert", "set", "sloppy", "--unavailable"))
    listed = _json(kn("expert", "list", "--domain", "law", "--json"))
    assert [x["username"] for x in listed] == ["careful2"] and listed[0]["open_tasks"] == 0
    table = _ok(kn("expert", "list"))
    assert all(name in table for name in KINDS) and "law=4" in table

    # reputation: what the library computes, stored for routing; careful annotators above random and constant ones
    rows = _json(kn("reputation", "medicine", "--json"))
    expected = compute_reputation(db, "medicine", store=False)
    assert [(r["username"], r["score"], r["confidence"]) for r in rows] == [
        (r["username"], r["score"], r["confidence"]) for r in expected]
    by = {r["username"]: r for r in rows}
    assert min(by["careful1"]["score"], by["careful2"]["score"]) > max(by["random"]["score"], by["constant"]["score"])
    assert by["careful1"]["gold_n"] > 0 and by["careful1"]["peer_n"] > 0
    explicit = _json(kn("reputation", "medicine", "--project", "med-pairs", "--no-store", "--json"))
    assert [r["score"] for r in explicit] == [r["score"] for r in rows]
    stored = _json(kn("expert", "list", "--domain", "medicine", "--json"))
    assert {x["username"]: x["reputation"]["medicine"] for x in stored} == {u: r["score"] for u, r in by.items()}
    assert "careful1" in _ok(kn("reputation", "medicine"))

    # routing: the same decision as the library; authors and unavailable experts are left out, with the reason
    work = {"task": "item:new", "domains": ["medicine"], "authors": []}
    d = _json(kn("route", "--task", "item:new", "--domain", "medicine", "-k", "2", "--json"))
    lib = route(db, work, k=2)
    assert d["chosen"] == lib["chosen"] == ["careful1", "careful2"]
    assert d["candidates"] == lib["candidates"] and d["recorded"] is False
    assert {x["username"]: x["reason"] for x in d["excluded"]} == {"sloppy": "unavailable"}
    d = _json(kn("route", "--task", "item:new", "-d", "medicine", "--author", "careful1", "--json"))
    assert d["chosen"][0] == "careful2" and "careful1" not in d["chosen"] and len(d["chosen"]) == 2
    assert {"username": "careful1", "reason": "author"} in [{k: x[k] for k in ("username", "reason")}
                                                            for x in d["excluded"]]
    out = _ok(kn("route", "--task", "item:new", "-d", "medicine", "-k", "1", "--record"))
    assert "chosen: careful1 (recorded as open tasks)" in out
    assert [t["task"] for t in _json(kn("task", "list", "careful1", "--json"))] == ["item:new"]
    assert "1 / 10" in _ok(kn("expert", "list"))  # the open task is careful1's load
    again = _json(kn("route", "--task", "item:new", "-d", "medicine", "-k", "1", "--json"))
    assert again["chosen"] == ["careful2"]
    assert {"username": "careful1", "reason": "already_routed"} in [{k: x[k] for k in ("username", "reason")}
                                                                    for x in again["excluded"]]
    assert "item:new (careful1): done" in _ok(kn("task", "done", "item:new", "careful1"))
    assert _json(kn("task", "list", "careful1", "--json")) == []
    assert "careful1 has no open tasks" in _ok(kn("task", "list", "careful1"))
    _refused(kn("task", "done", "item:new", "careful1"), "no open task")

    # a real patch: its domains and authors come from the store; the author is never chosen
    store = KnowledgeStore(db)
    patch = store.propose("careful1", title="Aspirin", content="Aspirin inhibits COX-1 and COX-2.",
                          domains=["medicine"])
    d = _json(kn("route-patch", patch.patch_id, "--record", "--json"))
    assert d["task"] == f"patch:{patch.patch_id}@1" and d["domains"] == ["medicine"]
    assert "careful1" not in d["chosen"] and d["chosen"][0] == "careful2" and len(d["chosen"]) == 2
    assert f"patch:{patch.patch_id}@1" in [t["task"] for t in _json(kn("task", "list", "careful2", "--json"))]
    assert _json(kn("route-patch", patch.patch_id, "1", "--json"))["chosen"] != d["chosen"]  # already routed

    assert _json(kn("expert", "set", "sloppy", "--available", "--json"))["available"] is True
    assert "sloppy" in [c["username"] for c in _json(kn("route", "--task", "t9", "-d", "medicine", "--json"))
                        ["candidates"]]

    # user mistakes: one line, exit code 2
    _refused(kn("expert", "set", "ghost", "-d", "medicine=3"), "no active user 'ghost'")
    _refused(kn("expert", "set", "careful1", "-d", "medicine=9"), "level of 'medicine' must be an integer 1..5")
    _refused(kn("expert", "set", "careful1", "-d", "medicine"), "expected DOMAIN=LEVEL")
    _refused(kn("expert", "set", "careful1", "--capacity", "-1"), "capacity must be between")
    _refused(kn("expert", "list", "--domain", "medecine"), "unknown domain 'medecine'")
    _refused(kn("reputation", "medecine"), "unknown domain 'medecine'")
    _refused(kn("reputation", "bad domain"), "bad domain")
    _refused(kn("reputation", "medicine", "--project", "nope"), "no project 'nope'")
    _refused(kn("route", "--task", "t", "-d", "medecine"), "unknown domain 'medecine'")
    _refused(kn("route", "--task", "t", "-d", "medicine", "--author", "ghost"), "no user 'ghost'")
    _refused(kn("route", "--task", "t", "-d", "medicine", "-k", "0"), "k must be between 1 and 100")
    _refused(kn("route", "--task", "", "-d", "medicine"), "task name")
    _refused(kn("route-patch", "0" * 32), "no patch")
    _refused(kn("route-patch", patch.patch_id, "7"), "no patch")
    _refused(kn("task", "list", "ghost"), "no user 'ghost'")
    _refused(kn("task", "done", "item:new", "ghost"), "no user 'ghost'")


def test_rewards_pay_once_balance_and_ledger(project_db):
    db = project_db
    until = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    pay = ["rewards", "pay", "med-w47", "--project", "med-pairs", "--since", "0", "--until", until,
           "--scale", "0.5", "--base", "0.1", "--json"]
    first = _json(kn(*pay))
    assert first["already_paid"] is False and first["rule"] == "ca" and first["n_entries"] > 100
    assert set(first["per_username"]) == set(KINDS)
    balance = _json(kn("rewards", "balance", "--json"))
    assert balance == pytest.approx(first["per_username"])
    # informed annotators earn more than uninformed ones under correlated agreement
    assert balance["careful1"] + balance["careful2"] > balance["random"] + balance["constant"]

    # every ledger entry is base + scale · score, scores are CA's −1, 0 or +1, and the entries sum to the balance
    entries = _json(kn("rewards", "ledger", "--batch", "med-w47", "--json"))
    assert len(entries) == first["n_entries"]
    for e in entries:
        assert e["details"]["score"] in (-1.0, 0.0, 1.0)
        assert e["amount"] == pytest.approx(0.1 + 0.5 * e["details"]["score"])
    mine = _json(kn("rewards", "ledger", "--user", "careful1", "--json"))
    assert {e["username"] for e in mine} == {"careful1"}
    assert sum(e["amount"] for e in mine) == pytest.approx(balance["careful1"])

    # the same batch again: nothing written, balances unchanged
    again = _json(kn(*pay))
    assert again["already_paid"] is True and again["n_entries"] == first["n_entries"]
    assert _json(kn("rewards", "balance", "--json")) == balance
    again = _ok(kn(*pay[:-1]))
    assert "already paid: nothing written" in again
    # five annotators with a few dozen answers each: far below the 100 scored reports the rule needs, and it says so
    assert "warning:" in again and "below_guarantee" in again
    assert first["small_batch"]["agents_below"] == len(KINDS)
    assert all(e["details"]["below_guarantee"] for e in entries)
    assert len(_json(kn("rewards", "ledger", "--json"))) == len(entries)
    # the same batch id with other parameters is refused, still without paying anything
    _refused(kn(*[("1.0" if a == "0.5" else a) for a in pay]), "already paid with other reports or parameters")
    assert _json(kn("rewards", "balance", "--json")) == balance

    # a second batch by the peer truth serum adds its own total
    second = _json(kn("rewards", "pay", "med-w47-pts", "--project", "med-pairs", "--until", until, "--rule", "pts",
                      "--json"))
    assert second["already_paid"] is False and second["rule"] == "pts"
    after = _json(kn("rewards", "balance", "--json"))
    for user in KINDS:
        assert after[user] == pytest.approx(balance[user] + second["per_username"][user], abs=1e-5)
    assert _json(kn("rewards", "balance", "careful1", "--json")) == {"careful1": after["careful1"]}
    table = _ok(kn("rewards", "balance"))
    assert all(name in table for name in KINDS)
    assert "med-w47" in _ok(kn("rewards", "ledger", "--batch", "med-w47", "--user", "careful1"))

    # user mistakes: one line, exit code 2, nothing paid
    _refused(kn("rewards", "pay", "x", "--project", "nope"), "no project 'nope'")
    _refused(kn("rewards", "pay", "x", "--project", "med-pairs", "--rule", "majority"), "choose from ca, pts")
    _refused(kn("rewards", "pay", "x", "--project", "med-pairs", "--until", "yesterday"), "not an ISO 8601 time")
    # an empty time window pays nothing and does not use up the batch id
    _refused(kn("rewards", "pay", "x", "--project", "med-pairs", "--since", "2999-01-01"), "no answers to pay")
    _refused(kn("rewards", "ledger", "--batch", "x"), "no reward batch 'x'")
    with db.write() as s:
        workflow.create_project(s, "free-text", "sft")
    _refused(kn("rewards", "pay", "x", "--project", "free-text"), "no categorical answers")
    _refused(kn("rewards", "pay", "x" * 65, "--project", "med-pairs"), "batch id must be 1-64 characters")
    _refused(kn("rewards", "balance", "ghost"), "no user 'ghost'")
    _refused(kn("rewards", "ledger", "--user", "ghost"), "no user 'ghost'")
    _refused(kn("rewards", "ledger", "--batch", "no-such-batch"), "no reward batch 'no-such-batch'")
    assert _json(kn("rewards", "balance", "--json")) == after

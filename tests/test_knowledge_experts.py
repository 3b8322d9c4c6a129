"""Expert profiles, reputation and routing on SQLite and PostgreSQL (a fresh schema per test).

Reputation is measured from real annotation work (a preference project tagged with the domain, filled through the
annotation server's own queue: overlap 3, gold items) and from real signed knowledge reviews (KnowledgeStore), so
the test checks that careful experts outrank random and constant ones, that few golds never give 100 %, and that
routing respects authorship, availability, capacity and spreads work deterministically."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sqlalchemy import select

from assay.annotate import stats, workflow
from assay.annotate.models import Item, Project
from assay.core.record import Record
from assay.experts.reputation import (compute_reputation, get_expert, list_experts, peer_skill, set_expert,
                                     stored_reputation)
from assay.experts.routing import annotation_work, close_task, open_tasks, patch_work, route
from assay.knowledge import keys
from assay.knowledge.review import KnowledgeError
from assay.knowledge.store import KnowledgeStore
from assay.platform.models import User
from assay.platform.users import create_user

PW = "password-123"


def _users(db, names):
    with db.write() as s:
        for n in names:
            create_user(s, n, PW)


# -- profiles ------------------------------------------------------------------------------------------------------
def test_profiles_merge_domains_and_reject_bad_levels(db):
    _users(db, ["ana"])
    e = set_expert(db, "ana", domains={"Medicine": 4}, capacity=3)
    assert e["domains"] == {"medicine": 4} and e["capacity"] == 3 and e["available"] is True
    e = set_expert(db, "ana", domains={"law": 2}, available=False)
    assert e["domains"] == {"law": 2, "medicine": 4} and e["available"] is False and e["capacity"] == 3
    assert set_expert(db, "ana", domains={"law": 5}, replace_domains=True)["domains"] == {"law": 5}
    for bad in ({"law": 0}, {"law": 6}, {"law": "5"}, {"no spaces": 3}, {"*": 3}):
        with pytest.raises(KnowledgeError):
            set_expert(db, "ana", domains=bad)
    with pytest.raises(KnowledgeError):
        set_expert(db, "ghost", domains={"law": 3})
    assert get_expert(db, "ana")["domains"] == {"law": 5}
    assert [x["username"] for x in list_experts(db, "law")] == ["ana"] and list_experts(db, "medicine") == []


# -- reputation from annotations -----------------------------------------------------------------------------------
KINDS = {"careful1": 0.95, "careful2": 0.85, "sloppy": 0.6, "random": None, "constant": "const"}


def _annotate(db, n_items=60, n_gold=12, seed=3):
    """A preference project in domain 'medicine' filled through the real queue by five annotators of known kinds."""
    rng = random.Random(seed)
    _users(db, list(KINDS))
    truth = {}
    with db.write() as s:
        proj = workflow.create_project(s, "med-pairs", "preference", overlap=3, gold_rate=0.2,
                                       config={"domains": ["medicine"]})
        recs = []
        for i in range(n_items):
            truth[f"r{i}"] = rng.choice("aab")  # a-priori imbalanced labels, as real preference data is
            recs.append(Record(f"r{i}", {"prompt": f"q{i}", "a": f"x{i}", "b": f"y{i}"}, "preference"))
        workflow.add_items(s, proj, recs)
        golds = [Record(f"g{i}", {"prompt": f"gq{i}", "chosen": "right", "rejected": "wrong"}, "preference",
                        meta={"gold": "chosen"}) for i in range(n_gold)]
        assert workflow.add_items(s, proj, golds, gold=True).imported == n_gold
        pid = proj.id
    ids = {}
    with db.read() as s:
        for it in s.scalars(select(Item).where(Item.project_id == pid)):
            ids[it.id] = (it.record_id, it.gold_answer)
        uid = {u: s.scalar(select(User.id).where(User.username == u)) for u in KINDS}
    active = list(KINDS)
    while active:
        for name in list(active):
            with db.write() as s:
                proj = s.get(Project, pid)
                claim = workflow.next_assignment(s, proj, uid[name])
                if claim is None:
                    active.remove(name)
                    continue
                record_id, gold = ids[claim.item_id]
                right = gold["choice"] if gold else truth[record_id]
                kind = KINDS[name]
                if kind == "const":
                    choice = "a"
                elif kind is None:
                    choice = rng.choice(["a", "b", "tie"])
                else:
                    choice = right if rng.random() < kind else rng.choice([c for c in ("a", "b", "tie") if c != right])
                workflow.submit(s, proj, uid[name], claim.id, {"choice": choice})
    return pid, uid


def test_reputation_ranks_careful_above_random_and_constant(db):
    pid, uid = _annotate(db)
    set_expert(db, "careful1", domains={"medicine": 5})
    rows = compute_reputation(db, "medicine")
    by = {r["username"]: r for r in rows}
    assert set(by) == set(KINDS)
    # the formula: evidence-weighted mean of the skills, shrunk by m0 = 10 pseudo-observations
    for r in rows:
        parts = [(4 * r["gold_n"], r["gold_skill"]), (r["peer_n"], r["peer_skill"])]
        ev = sum(w for w, x in parts if x is not None)
        assert r["score"] == pytest.approx(sum(w * x for w, x in parts if x is not None) / (10 + ev), abs=1e-5)
    assert by["careful1"]["score"] > by["sloppy"]["score"] > max(by["random"]["score"], by["constant"]["score"])
    assert by["careful2"]["score"] > by["random"]["score"] + 0.2
    # chance correction: the constant annotator matches the majority often, but its skill is ~0
    assert abs(by["constant"]["peer_skill"]) < 0.1 and abs(by["random"]["peer_skill"]) < 0.25
    assert by["careful1"]["peer_skill"] > 0.6
    # a Beta prior keeps a perfect gold record below 100 %
    assert all(r["gold_skill"] is None or r["gold_skill"] < 1.0 for r in rows)
    assert stored_reputation(db, "medicine") == {r["user_id"]: r["score"] for r in rows}
    assert list_experts(db, "medicine")[0]["reputation"]["medicine"] == by["careful1"]["score"]
    # other domains see none of this evidence
    assert compute_reputation(db, "law") == []


def test_peer_skill_is_dawid_skene_kappa():
    rng = np.random.default_rng(0)
    triples = []
    for item in range(300):
        t = int(rng.choice(3, p=[0.6, 0.3, 0.1]))
        for w, acc in (("good", 0.9), ("ok", 0.7), ("also", 0.8)):
            triples.append((item, w, t if rng.random() < acc else int(rng.choice([k for k in range(3) if k != t]))))
        triples.append((item, "const", 0))
    skills = peer_skill(triples)
    agg = stats.dawid_skene(triples)
    pi = np.array([agg.priors[c] for c in agg.label_order])
    E = agg.errors["good"]
    p_o, p_e = (np.diag(E) * pi).sum(), ((E @ pi) * pi).sum()
    assert skills["good"] == (300, pytest.approx((p_o - p_e) / (1 - p_e)))
    assert skills["good"][1] > skills["also"][1] > skills["ok"][1] > 0.4
    assert skills["const"][1] == pytest.approx(0.0, abs=1e-6)


# -- reputation from knowledge reviews -----------------------------------------------------------------------------
def test_review_verdicts_against_outcomes(db):
    _users(db, ["author", "good", "bad", "judge"])
    store = KnowledgeStore(db)
    key = {}
    for u in ("good", "bad", "judge"):
        key[u] = keys.generate()
        store.register_key(u, keys.public_pem(key[u]), "reviewer")
    store.grant("good", "medicine", "reviewer")
    store.grant("bad", "medicine", "reviewer")
    store.grant("judge", "medicine", "admin")
    truths = [True, False, True, True, False, True]
    for i, true in enumerate(truths):
        p = store.propose("author", title=f"fact {i}", content=f"statement number {i}", domains=["medicine"])
        store.review(p.patch_id, 1, "good", "accept" if true else "reject", key["good"])
        store.review(p.patch_id, 1, "bad", "reject" if true else "accept", key["bad"])
        store.review(p.patch_id, 1, "judge", "accept" if true else "reject", key["judge"], adjudicate=True)
    open_patch = store.propose("author", title="open", content="still under review", domains=["medicine"])
    store.review(open_patch.patch_id, 1, "good", "accept", key["good"])  # no outcome yet: not counted
    by = {r["username"]: r for r in compute_reputation(db, "medicine")}
    assert by["good"]["review_n"] == 6 and by["bad"]["review_n"] == 6
    # by hand: good accepts 4/6 and outcomes are 4/6 accept → chance c = (2/3)² + (1/3)² = 5/9; Beta(s0 = 2) mean
    # Â = (6 + 2c) / 8; skill = (Â − c) / (1 − c) = 0.75. bad: c = 2·(1/3)(2/3) = 4/9, Â = 2c / 8 → −0.6.
    assert by["good"]["review_skill"] == pytest.approx(0.75) and by["bad"]["review_skill"] == pytest.approx(-0.6)
    assert by["good"]["score"] > 0 > by["bad"]["score"]
    assert "judge" not in by  # adjudications are not reviews to be graded

    # routing a patch: its author is never chosen
    set_expert(db, "author", domains={"medicine": 5})
    set_expert(db, "good", domains={"medicine": 3})
    set_expert(db, "bad", domains={"medicine": 3})
    work = patch_work(db, open_patch.patch_id, 1)
    decision = route(db, work, k=2)
    assert decision["chosen"] == ["good", "bad"]
    assert {"username": "author", "reason": "author"} in [{k: e[k] for k in ("username", "reason")}
                                                         for e in decision["excluded"]]


# -- routing -------------------------------------------------------------------------------------------------------
def test_routing_scores_capacity_spread_and_determinism(db):
    names = ["amy", "bob", "cat", "dan", "eve"]
    _users(db, names)
    set_expert(db, "amy", domains={"medicine": 5}, capacity=2)
    set_expert(db, "bob", domains={"medicine": 5}, capacity=2)
    set_expert(db, "cat", domains={"medicine": 2, "law": 5}, capacity=2)
    set_expert(db, "dan", domains={"law": 5}, capacity=2)
    set_expert(db, "eve", domains={"medicine": 5}, capacity=2, available=False)
    item = {"task": "patch:x@1", "domains": ["medicine"], "authors": []}
    d = route(db, item, k=2)
    assert d["chosen"] == ["amy", "bob"]  # equal scores: ties broken by name
    assert [c["username"] for c in d["candidates"]] == ["amy", "bob", "cat"]  # dan lacks the domain
    assert {e["username"]: e["reason"] for e in d["excluded"]} == {"eve": "unavailable"}
    cat = next(c for c in d["candidates"] if c["username"] == "cat")
    assert cat["match"] == pytest.approx(0.4) and cat["score"] == pytest.approx(0.4)
    again = route(db, item, k=2)
    assert {k: v for k, v in again.items() if k != "at"} == {k: v for k, v in d.items() if k != "at"}
    # two domains: the match is the mean over the work's domains
    both = route(db, {"task": "t2", "domains": ["law", "medicine"]}, k=1)
    assert both["chosen"] == ["cat"] and both["candidates"][0]["match"] == pytest.approx(0.7)

    # recorded routing fills capacity and spreads the work
    counts = {n: 0 for n in names}
    for i in range(6):
        dec = route(db, {"task": f"item:{i}", "domains": ["medicine"]}, k=1, record=True)
        for n in dec["chosen"]:
            counts[n] += 1
    assert counts == {"amy": 2, "bob": 2, "cat": 2, "dan": 0, "eve": 0}
    full = route(db, {"task": "item:99", "domains": ["medicine"]}, k=2)
    assert full["chosen"] == [] and {e["reason"] for e in full["excluded"]} == {"at_capacity", "unavailable"}
    assert len(open_tasks(db, "amy")) == 2
    close_task(db, open_tasks(db, "amy")[0]["task"], "amy")
    assert route(db, {"task": "item:99", "domains": ["medicine"]}, k=2)["chosen"] == ["amy"]
    with pytest.raises(KnowledgeError):
        close_task(db, "item:nonexistent", "amy")
    # routing never hands the same task to the same expert twice
    first = open_tasks(db, "bob")[0]["task"]
    assert "bob" not in route(db, {"task": first, "domains": ["medicine"]}, k=3)["chosen"]
    for bad in ({"task": "", "domains": ["medicine"]}, {"task": "x", "domains": []}, {"task": "x", "domains": ["A B"]}):
        with pytest.raises(KnowledgeError):
            route(db, bad)


def test_reputation_moves_routing(db):
    pid, uid = _annotate(db)
    for name in KINDS:
        set_expert(db, name, domains={"medicine": 3}, capacity=10)
    compute_reputation(db, "medicine")
    with db.read() as s:
        item_id = s.scalar(select(Item.id).where(Item.project_id == pid, Item.is_gold.is_(False)))
    work = annotation_work(db, item_id)
    assert work["domains"] == ["medicine"]
    d = route(db, {**work, "task": "item:new"}, k=2)
    assert d["chosen"] == ["careful1", "careful2"]
    assert d["candidates"][-1]["username"] in ("random", "constant")

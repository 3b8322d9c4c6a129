"""Peer-prediction rewards: the correlated-agreement (CA) mechanism against its theory and in a simulated crowd,
the peer truth serum, the naive majority rule colluders game, and the append-only ledger (idempotent batches,
database-enforced immutability) on SQLite and PostgreSQL, fed from a real annotation project."""

from __future__ import annotations

import random

import numpy as np
import pytest
from annotate_support import BACKENDS, make_database
from sqlalchemy import select, text

from assay.annotate import workflow
from assay.annotate.models import Project
from assay.core.record import Record
from assay.experts.rewards import (MIN_REPORTS_PER_AGENT, BatchConflict, SmallBatch, annotation_reports, balances, correlated_agreement,
                                     delta_matrix, ledger_entries, majority_agreement, make_population, pay_batch,
                                     payout_by_kind, peer_truth_serum, simulate_reports)
from assay.platform.models import User
from assay.platform.users import create_user

PRIOR = [0.5, 0.3, 0.2]


# -- the rule ------------------------------------------------------------------------------------------------------
def test_delta_matrix_by_hand():
    reports = [("t1", "A", 0), ("t1", "B", 0), ("t2", "A", 1), ("t2", "B", 1), ("t3", "A", 0), ("t3", "B", 1),
               ("t4", "A", 1)]  # t4 has one report: no pair, ignored
    delta, labels = delta_matrix(reports)
    # joint over 3 tasks: (0,0) 1/3, (1,1) 1/3, (0,1) = (1,0) = 1/6; marginals 1/2 → Δ = ±1/12
    assert labels == [0, 1]
    assert delta == pytest.approx(np.array([[1, -1], [-1, 1]]) / 12)


def _true_delta(accuracy: float, prior: list[float]) -> np.ndarray:
    K = len(prior)
    signal = np.full((K, K), (1 - accuracy) / (K - 1))  # signal[c, k] = P(report k | truth c)
    np.fill_diagonal(signal, accuracy)
    joint = sum(prior[c] * np.outer(signal[c], signal[c]) for c in range(K))
    marginal = joint.sum(axis=1)
    return joint - np.outer(marginal, marginal)


def test_ca_matches_theory_for_an_honest_crowd():
    """With identical honest agents, E[CA score] = Σ Δ⁺ of the true Δ (Shnayder et al. 2016); the batch-estimated Δ
    must give the same S and the mean score must match the theory."""
    agents = make_population(20, {"honest": 1.0}, honest_accuracies=[0.7])
    reports, _ = simulate_reports(agents, n_tasks=3000, per_task=4, prior=PRIOR, seed=11)
    result = correlated_agreement(reports, seed=5)
    true = _true_delta(0.7, PRIOR)
    assert result.delta == pytest.approx(true, abs=0.01)
    assert (result.scoring == (true > 0)).all()
    expected = true[true > 0].sum()
    mean = np.mean([s.score for s in result.scores])
    assert len(result.scores) == 12000 and mean == pytest.approx(expected, abs=0.02)
    assert expected > 0.1


@pytest.mark.parametrize("mix", [{"honest": 0.7, "careless": 0.2, "colluder": 0.1},
                                 {"honest": 0.4, "careless": 0.3, "colluder": 0.3}], ids=["70-20-10", "40-30-30"])
def test_ca_pays_honest_most_and_uninformed_nothing(mix):
    agents = make_population(40, mix)
    means = {}
    for seed in range(3):  # a few crowds: careless and colluding payouts must be ~0 on average, not by luck
        reports, _ = simulate_reports(agents, n_tasks=2000, per_task=5, prior=PRIOR, seed=seed)
        for kind, v in payout_by_kind(correlated_agreement(reports, seed=seed), agents).items():
            means.setdefault(kind, []).append(v["mean"])
        naive = payout_by_kind(majority_agreement(reports), agents, by_accuracy=True)
        # the naive rule pays colluders (who all give the most common label) more than a random annotator, and in
        # the 40/30/30 crowd more than the weaker honest experts: that is what CA fixes
        assert naive["colluder"]["mean"] > naive["careless"]["mean"] + 0.1
        if mix["colluder"] >= 0.3:
            assert naive["colluder"]["mean"] > naive["honest@0.6"]["mean"]
            assert naive["colluder"]["mean"] > naive["honest@0.9"]["mean"]
    m = {k: float(np.mean(v)) for k, v in means.items()}
    assert m["honest"] > m["careless"] + 0.04 and m["honest"] > m["colluder"] + 0.04
    assert abs(m["careless"]) < 0.03 and abs(m["colluder"]) < 0.03


def test_ca_rewards_accuracy_monotonically():
    agents = make_population(30, {"honest": 1.0}, honest_accuracies=[0.9, 0.7, 0.5])
    reports, _ = simulate_reports(agents, n_tasks=2000, per_task=5, prior=PRIOR, seed=2)
    pay = payout_by_kind(correlated_agreement(reports, seed=2), agents, by_accuracy=True)
    assert pay["honest@0.9"]["ci_low"] > pay["honest@0.7"]["ci_high"]
    assert pay["honest@0.7"]["ci_low"] > pay["honest@0.5"]["ci_high"]


def test_peer_truth_serum_pays_informed_agents():
    agents = make_population(40, {"honest": 0.5, "careless": 0.25, "colluder": 0.25})
    reports, _ = simulate_reports(agents, n_tasks=2000, per_task=5, prior=PRIOR, seed=4)
    pay = payout_by_kind(peer_truth_serum(reports, seed=4), agents)
    assert pay["honest"]["ci_low"] > 0.1
    assert abs(pay["careless"]["mean"]) < 0.08 and abs(pay["colluder"]["mean"]) < 0.08


def test_scores_are_deterministic_and_independent_of_input_order():
    agents = make_population(12, {"honest": 0.75, "careless": 0.25})
    reports, _ = simulate_reports(agents, n_tasks=200, per_task=3, prior=PRIOR, seed=9)
    shuffled = list(reports)
    random.Random(1).shuffle(shuffled)

    def key(res):
        return [(s.task, s.agent, s.score, s.details["peer"], s.details["bonus_task"], s.details["penalty_task"])
                for s in res.scores]

    a, b = correlated_agreement(reports, seed=7), correlated_agreement(shuffled, seed=7)
    assert key(a) == key(b)
    assert key(a) != key(correlated_agreement(reports, seed=8))
    for s in a.scores:  # the sampling rules of the mechanism
        assert s.details["peer"] != s.agent and s.details["bonus_task"] != s.task
        assert s.details["penalty_task"] not in (s.task, s.details["bonus_task"])


def test_unscorable_and_bad_reports_are_counted():
    reports = [("t1", "A", "x"), ("t1", "B", "x"), ("t2", "A", "y"), ("t2", "B", "x"), ("t4", "A", "y"),
               ("t4", "B", "y"),
               ("t3", "C", "x"),  # nobody else did t3
               ("t1", "A", "y"),  # a second report of A on t1
               ("t2", "C", None), ("bad",)]
    res = correlated_agreement(reports, seed=0)
    assert res.skipped == {"no_peer": 1, "duplicate_report": 1, "unknown_label": 1, "malformed_report": 1}
    assert len(res.scores) == 6
    # only two tasks each: B's penalty task must avoid t and b, which leaves nothing when the peer did only t, b
    only = correlated_agreement([("t1", "A", 1), ("t1", "B", 1)], seed=0)
    assert only.scores == [] and only.skipped == {"no_bonus_task": 2}


# -- the ledger ----------------------------------------------------------------------------------------------------
def _crowd_users(db, n, prefix="u"):
    with db.write() as s:
        return [create_user(s, f"{prefix}{i}", "password-123").id for i in range(n)]


def test_pay_batch_is_idempotent_and_the_ledger_append_only(db):
    ids = _crowd_users(db, 12)
    agents = make_population(12, {"honest": 0.75, "careless": 0.25})
    sim, _ = simulate_reports(agents, n_tasks=150, per_task=3, prior=PRIOR, seed=1)
    user_of = {a.name: ids[k] for k, a in enumerate(agents)}
    reports = [(f"task:{t}", user_of[a], lab) for t, a, lab in sim] + [("task:0", 999_999, 0)]  # unknown user
    first = pay_batch(db, "2026-11-week47", reports, scale=0.5, base=0.1)
    assert first["already_paid"] is False and first["skipped"] == {"unknown_user": 1}
    rows = ledger_entries(db, batch_id="2026-11-week47")
    assert len(rows) == first["n_entries"] == 450
    for r in rows:
        assert r["rule"] == "ca" and r["amount"] == pytest.approx(0.1 + 0.5 * r["details"]["score"])
    assert sum(r["amount"] for r in rows) == pytest.approx(first["total"])
    assert balances(db) == pytest.approx({int(u): v for u, v in first["per_user"].items()})

    again = pay_batch(db, "2026-11-week47", list(reversed(reports)), scale=0.5, base=0.1)
    assert again["already_paid"] is True and again["total"] == first["total"]
    assert len(ledger_entries(db)) == 450  # nothing paid twice
    with pytest.raises(BatchConflict):
        pay_batch(db, "2026-11-week47", reports[:-5], scale=0.5, base=0.1)
    with pytest.raises(BatchConflict):
        pay_batch(db, "2026-11-week47", reports, scale=1.0, base=0.1)
    second = pay_batch(db, "2026-11-week48", reports, rule="pts")
    assert second["already_paid"] is False and len(ledger_entries(db)) == 450 + second["n_entries"]

    # the database refuses edits and deletions of payments
    for stmt in ("UPDATE reward_ledger SET amount = 1000", "DELETE FROM reward_ledger",
                 "UPDATE reward_batches SET total = 0", "DELETE FROM reward_batches"):
        with pytest.raises(Exception, match="append-only"):
            with db.write() as s:
                s.execute(text(stmt))
    assert len(ledger_entries(db)) == 450 + second["n_entries"]
    with pytest.raises(ValueError):
        pay_batch(db, "x", reports, rule="majority")
    with pytest.raises(ValueError):
        pay_batch(db, "", reports)


def test_small_batches_are_flagged_or_refused(db):
    """Issue 14: a batch of 400 tasks (5 reports each, 100 annotators: 20 reports per annotator) pays random agents
    close to honest ones. Below MIN_REPORTS_PER_AGENT scored reports the entries say so, or the batch is refused."""
    ids = _crowd_users(db, 100)
    agents = make_population(100, {"honest": 0.5, "half_effort": 0.25, "careless": 0.25}, honest_accuracies=[0.75])
    user_of = {a.name: ids[k] for k, a in enumerate(agents)}
    sim, _ = simulate_reports(agents, n_tasks=400, per_task=5, prior=PRIOR, seed=3)
    reports = [(f"task:{t}", user_of[a], lab) for t, a, lab in sim]
    with pytest.raises(SmallBatch, match="fewer than 100 scored reports"):
        pay_batch(db, "small-refused", reports, small_batch="refuse")
    assert ledger_entries(db, batch_id="small-refused") == []  # nothing written, the batch id stays free
    paid = pay_batch(db, "small", reports)
    assert paid["small_batch"]["agents_below"] == paid["small_batch"]["agents"] == 100
    rows = ledger_entries(db, batch_id="small")
    assert rows and all(r["details"]["below_guarantee"] and r["details"]["agent_reports"] < MIN_REPORTS_PER_AGENT
                        for r in rows)
    # a batch with enough reports per annotator (20 annotators x 3 reports on 800 tasks: 120 each) is not flagged
    big = pay_batch(db, "big-enough", _sim_for(db, 20, 800), small_batch="refuse")
    assert "small_batch" not in big
    assert not any("below_guarantee" in r["details"] for r in ledger_entries(db, batch_id="big-enough"))


def _sim_for(db, n_agents, n_tasks):  # noqa: ANN001, ANN202
    ids = _crowd_users(db, n_agents, prefix="big")
    agents = make_population(n_agents, {"honest": 1.0}, honest_accuracies=[0.75])
    sim, _ = simulate_reports(agents, n_tasks=n_tasks, per_task=3, prior=PRIOR, seed=4)
    user_of = {a.name: ids[k] for k, a in enumerate(agents)}
    return [(f"task:{t}", user_of[a], lab) for t, a, lab in sim]


def test_pay_an_annotation_project(db):
    """Reports straight from the annotation server: a preference project filled through its queue."""
    ids = _crowd_users(db, 6)
    rng = random.Random(0)
    with db.write() as s:
        proj = workflow.create_project(s, "pairs", "preference", overlap=3)
        truth = {f"r{i}": rng.choice("aab") for i in range(60)}
        workflow.add_items(s, proj, [Record(r, {"prompt": r, "a": "x", "b": "y"}, "preference") for r in truth])
        pid = proj.id
        record_of = {it_id: rec for it_id, rec in s.execute(text("SELECT id, record_id FROM items")).all()}
    honest = set(ids[:4])
    active = list(ids)
    while active:
        rng.shuffle(active)  # mix who works with whom (a fixed order would pair the same annotators every time)
        for uid in list(active):
            with db.write() as s:
                p = s.get(Project, pid)
                claim = workflow.next_assignment(s, p, uid)
                if claim is None:
                    active.remove(uid)
                    continue
                right = truth[record_of[claim.item_id]]
                choice = (right if rng.random() < 0.9 else "tie") if uid in honest else "a"
                workflow.submit(s, p, uid, claim.id, {"choice": choice})
    groups = annotation_reports(db, "pairs")
    assert list(groups) == ["choice"] and len(groups["choice"]) == 180
    assert all(t.startswith("item:") for t, _, _ in groups["choice"])
    summary = pay_batch(db, f"pairs-{pid}", groups)
    assert summary["n_entries"] == 180 and summary["skipped"] == {}
    per_user = {int(u): v for u, v in summary["per_user"].items()}
    assert min(per_user[u] for u in honest) > max(per_user[u] for u in ids[4:])
    with db.read() as s:
        assert s.scalar(select(User.id).where(User.username == "u0")) == ids[0]
    with db.write() as s:
        workflow.create_project(s, "free-text", "sft")
    with pytest.raises(ValueError, match="no categorical answers"):
        annotation_reports(db, "free-text")


# -- schema --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_0004_matches_the_models_and_downgrades(backend, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import assay.knowledge.models  # noqa: F401  (registers the knowledge tables on Base)
    import assay.experts.models  # noqa: F401
    from assay.platform.db import current_revision
    from assay.platform.models import all_tables

    db, cleanup = make_database(backend, tmp_path, via_alembic=True)
    try:
        assert current_revision(db.write_engine) >= "0004"  # head: later revisions build on 0004
        with db.write_engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), all_tables()) == []
        from alembic import command

        from assay.platform.db import alembic_config

        command.downgrade(alembic_config(db.write_engine), "0003")
        assert current_revision(db.write_engine) == "0003"
        with db.write_engine.connect() as conn:
            names = set(conn.dialect.get_table_names(conn))
        assert not names & {"reward_ledger", "reward_batches", "expert_profiles", "expert_tasks"}
        db.migrate("head")
        _crowd_users(db, 3)
        pay_batch(db, "after-migration", [("t1", 1, 0), ("t1", 2, 0), ("t2", 1, 1), ("t2", 2, 1), ("t3", 2, 0),
                                          ("t3", 1, 1)])
        with pytest.raises(Exception, match="append-only"):
            with db.write() as s:
                s.execute(text("DELETE FROM reward_ledger"))
    finally:
        cleanup()

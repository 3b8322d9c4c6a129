"""SuperBrain aggregation, signatures and distillation: the adjusted Rand index against scikit-learn, the
simulation's properties (Assay's method beats majority vote when reliabilities differ, recovers real schools, invents
none), the hand-checkable aggregate of a tiny panel, claim extraction and equivalence (MiniLM: paraphrases merge,
negations never do), and the whole chain from transcripts to SFT rows, preference pairs and knowledge patches in the
real knowledge store's review workflow."""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest
from annotate_support import cheap_password_hashing, make_database

from assay.evolve.superbrain import distill, pipeline
from assay.evolve.superbrain.aggregate import Vote, aggregate, majority_vote
from assay.evolve.superbrain.signatures import (cluster_answers, normalise, polarity, signature, supported)
from assay.evolve.superbrain.simulate import SimConfig, adjusted_rand_index, run, simulate
from assay.platform.users import create_user


# -- the adjusted Rand index ---------------------------------------------------------------------------------------
def test_adjusted_rand_index_matches_scikit_learn():
    """Values scikit-learn's adjusted_rand_score gives (its documented examples, and one it computed for this test:
    importing scikit-learn here would cost seconds of the suite's budget)."""
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0  # the names of the groups do not matter
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.5714285714285714)
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.5714285714285714)
    assert adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2, 2, 0]) == pytest.approx(1 / 21)
    with pytest.raises(ValueError):
        adjusted_rand_index([0, 1], [0])


# -- the simulation ------------------------------------------------------------------------------------------------
def test_simulation_beats_majority_recovers_schools_and_invents_none():
    for seed in (0, 1):
        scores = {s.method: s for s in run(SimConfig(questions=40, gold=6, seed=seed))["scores"]}
        mv, ours = scores["majority vote"], scores["Assay (reliability + schools)"]
        assert ours.factual_accuracy >= mv.factual_accuracy + 0.05, (seed, ours, mv)
        assert ours.schools_presented >= 0.6 and mv.schools_presented == 0.0  # majority vote collapses schools
        assert ours.school_ari > 0.15 and ours.false_contests <= 0.03
    control = run(SimConfig(questions=40, gold=6, schooled=(), seed=0))
    assert all(not s for s in control["aggregation"].schools.values())
    assert not any(d.status == "contested" for d in control["aggregation"].decisions.values())
    assert control["reliability_corr"] > 0.9  # estimated accuracies track the true ones


def test_a_small_panel_by_hand():
    """Two reliable experts of one school, two of another, and five who always repeat one misconception; the
    schools differ on eight questions of thirty. Majority vote follows the misconception; the aggregate does not, and
    the contested questions come out as two labelled positions, not one."""
    good, school_b, bad = ["g1", "g2"], ["s1", "s2"], ["b1", "b2", "b3", "b4", "b5"]
    votes, gold = [], {}
    for j in range(30):
        q = f"q{j}"
        if j < 6:  # gold items: the truth is "t"
            gold[q] = "t"
        contested = 10 <= j < 18
        for e in good:
            votes.append(Vote(e, q, "med", "t"))
        for e in school_b:
            votes.append(Vote(e, q, "med", "u" if contested else "t"))
        for e in bad:
            votes.append(Vote(e, q, "med", "m"))
    agg = aggregate(votes, gold)
    mv = majority_vote(votes)
    regular = [f"q{j}" for j in range(6, 30) if not 10 <= j < 18]
    assert all(mv[q] == "m" for q in regular)  # 5 wrong voices outnumber 4 right ones
    assert all(agg.decisions[q].status == "consensus" and agg.decisions[q].answer == "t" for q in regular)
    assert all("m" in agg.decisions[q].refuted for q in regular)
    assert min(agg.reliability[(e, "med")] for e in good + school_b) > 0.8
    assert max(agg.reliability[(e, "med")] for e in bad) < 0.3
    for q in [f"q{j}" for j in range(10, 18)]:
        d = agg.decisions[q]
        assert d.status == "contested" and d.answer is None
        positions = {a.answer: a for a in d.alternatives}
        assert set(positions) == {"t", "u"} and positions["u"].experts == school_b
        assert positions["t"].schools != positions["u"].schools and positions["u"].schools
    assert sorted(agg.schools["med"].values()) == [good, school_b]


# -- signatures ----------------------------------------------------------------------------------------------------
def test_normalisation_polarity_and_support():
    syn = {"medicine": {"acetaminophen": "paracetamol"}}
    assert normalise("I think Acetaminophen is SAFE.", "medicine", syn) == "paracetamol is safe"
    assert normalise("Acetaminophen is safe.", "law", syn) == "acetaminophen is safe"  # per domain
    assert normalise("Take 0.5 g.", "medicine") == "take 0.5 g"
    assert polarity("it is not safe") == 1 and polarity("it is safe") == 0 and polarity("it is not unsafe, no") == 0
    assert supported("paracetamol is safe in pregnancy", "in pregnancy paracetamol is considered safe")
    assert not supported("paracetamol causes autism", "in pregnancy paracetamol is considered safe")


def test_signature_from_a_transcript_prefers_the_experts_edits_and_checks_llm_claims():
    row = {"id": "t1", "annotator": "ann", "record_id": "q1", "question": "Dose of paracetamol?",
           "domain": "medicine", "final_answer": "Adults take at most 4 g a day. Children take less.",
           "turns": [{"role": "model", "text": "Take at most 4 g a day.", "original": "Take 8 g a day.",
                      "corrected": True},
                     {"role": "expert", "text": "What about children? They need a weight-based dose."}]}
    # an extractor that returns one supported claim and one the answer never made (as the 135M model does)
    sig = signature(row, extractor=lambda answer, domain: ["Adults take at most 4 g a day.",
                                                           "Paracetamol cures cancer."])
    sources = [(c.source, c.norm) for c in sig.claims]
    assert sources[0] == ("correction", "take at most 4 g a day")
    assert ("llm", "adults take at most 4 g a day") in sources
    assert not any("cancer" in n for _, n in sources) and sig.counts["unsupported"] == 1
    assert ("expert_turn", "they need a weight-based dose") in sources
    assert all("children?" not in n for _, n in sources)  # questions are not claims
    assert [c.norm for c in sig.refuted] == ["take 8 g a day"]
    assert sig.corrections == {0: ("Take at most 4 g a day.", "Take 8 g a day.")}
    # with no valid LLM claim the sentences are the claims
    fallback = signature(row, extractor=lambda answer, domain: None)
    assert fallback.counts["sentence_fallback"] == 1
    assert [c.norm for c in fallback.claims if c.source == "sentence"] == ["adults take at most 4 g a day",
                                                                             "children take less"]


def test_minilm_merges_paraphrases_but_never_a_negation():
    from assay.models.embeddings import get_backend

    answers = {"a": "Paracetamol is safe to use during pregnancy.",
               "b": "During pregnancy, paracetamol is safe to use.",
               "c": "Paracetamol is not safe to use during pregnancy.",
               "d": "Ibuprofen should be avoided in the third trimester."}
    rows = [{"id": e, "annotator": e, "record_id": "q", "domain": "medicine", "final_answer": a}
            for e, a in answers.items()]
    sigs = [signature(r) for r in rows]
    clustering = cluster_answers(sigs, get_backend("minilm").encode, same=0.8)
    label = {v.expert: v.answer for v in clustering.votes}
    assert label["a"] == label["b"]
    assert len({label["a"], label["c"], label["d"]}) == 3


# -- from transcripts to SFT, pairs and patches --------------------------------------------------------------------
WORDS = ("aspirin ibuprofen rest fluids surgery antibiotics insulin statins yoga diet steroids fasting vaccine "
         "placebo iron zinc splint cast heat ice sleep exercise massage water").split()


def _answer(q: str, option: int, variant: int) -> str:
    # a stable seed: Python's hash() of a str differs between processes (PYTHONHASHSEED), and with it which two
    # options happened to draw words too alike to tell apart (the test failed under one seed in three)
    rng = np.random.default_rng(zlib.crc32(f"{q}/{option}".encode()))
    w = rng.choice(WORDS, size=4, replace=False)
    first = "acetaminophen" if variant else "paracetamol"  # a synonym the domain table maps
    return f"Use {first} with {w[0]} and {w[1]}, then {w[2]} or {w[3]}."


def transcripts(world) -> tuple[list[dict], dict[str, str]]:
    rows = []
    for i, v in enumerate(world.votes):
        text = _answer(v.question, v.answer, i % 2)
        turns = [{"role": "model", "text": text, "original": "Take 8 g a day.", "corrected": True},
                 {"role": "expert", "text": "Is that right?"}] if i % 5 == 0 else \
                [{"role": "model", "text": text, "original": text, "corrected": False}]
        rows.append({"id": f"t{i}", "annotator": v.expert, "record_id": v.question, "domain": v.domain,
                     "question": f"What do you advise for case {v.question}?", "final_answer": text,
                     "turns": turns, "corrected_turns": [0] if i % 5 == 0 else [], "model": "local:test",
                     "lineage": [{"step": "annotate.dialogue", "version": "1", "params": "x"}]})
    gold = {q: _answer(q, a, 0) for q, a in world.gold.items()}
    return rows, gold


def test_transcripts_to_sft_pairs_and_patches_in_the_review_workflow(tmp_path):
    from assay.knowledge import keys
    from assay.knowledge.review import NotAllowed
    from assay.knowledge.store import KnowledgeStore

    world = simulate(SimConfig(domains=("medicine",), questions=40, gold=6, seed=1))
    rows, gold = transcripts(world)
    syn = {"medicine": {"acetaminophen": "paracetamol"}}
    result = pipeline.run(rows, embed=pipeline.embedder_for("hashed"), gold=gold, synonyms=syn)
    # equivalent answers (two phrasings through the synonym table) share a label, different answers do not
    truth_of = {}
    for v, r in zip(world.votes, rows):
        truth_of.setdefault(next(x.answer for x in result.clustering.votes if x.expert == v.expert
                                 and x.question == v.question), set()).add(v.answer)
    assert all(len(options) == 1 for options in truth_of.values())
    agg = result.aggregation
    contested = [q for q in world.contested if agg.decisions[q].status == "contested"]
    assert len(contested) >= 0.6 * len(world.contested)

    sft = {r["meta"]["question_id"]: r for r in distill.sft_rows(agg, result.clustering, result.signatures)}
    for q in contested:  # the schools' answers are presented, each with its school and support
        text = sft[q]["response"]
        assert text.startswith("Experts disagree") and "Position 1" in text and "Position 2" in text
        for held in world.contested[q]:
            assert _answer(q, held, 0).split(" with ")[1] in text
    right = [q for q, t in world.truth.items() if q not in world.gold and q in sft and sft[q]["status"] == "consensus"]
    assert right and np.mean([_answer(q, world.truth[q], 0).split(" with ")[1] in sft[q]["response"]
                              for q in right]) > 0.9
    assert all(r["lineage"][0]["step"] == "superbrain.distill" and r["meta"]["transcripts"] for r in sft.values())

    pairs = list(distill.preference_rows(agg, result.clustering, result.signatures))
    refuted = [p for p in pairs if p["source"] == "aggregate"]
    assert refuted and all(p["chosen"] != p["rejected"] for p in refuted)
    assert not any(p["meta"]["question_id"] in contested for p in refuted)  # schools are not refuted
    corrections = [p for p in pairs if p["source"] == "correction"]
    assert corrections and all(p["rejected"] == "Take 8 g a day." for p in corrections)
    assert all(agg.reliability[(p["expert"], p["domain"])] >= agg.options.reliable for p in corrections)

    cheap_password_hashing()
    db, cleanup = make_database("sqlite", tmp_path)
    try:
        with db.write() as s:
            for name in sorted({v.expert for v in world.votes}) + ["superbrain", "outsider"]:
                create_user(s, name, "password-123")
        store = KnowledgeStore(db)
        patches = distill.propose_patches(store, agg, result.clustering, result.signatures, "superbrain")
        n_expected = sum(d.status in ("consensus", "contested") for d in agg.decisions.values())
        assert len(patches) == n_expected
        p = next(p for p in patches if p.title.startswith("Contested: "))
        assert p.status == "proposed" and p.authors[0] == "superbrain" and len(p.authors) > 3
        assert all(src.record_id for src in p.sources)
        key = {u: keys.generate() for u in (p.authors[1], "outsider")}
        for u in key:
            store.grant(u, p.domains[0], "reviewer")
            store.register_key(u, keys.raw_public(key[u]), "reviewer")
        with pytest.raises(NotAllowed):  # an expert behind the patch may not review it
            store.review(p.patch_id, 1, p.authors[1], "accept", key[p.authors[1]])
        assert store.review(p.patch_id, 1, "outsider", "accept", key["outsider"]).status == "under_review"
    finally:
        cleanup()


def test_cli_aggregate_writes_the_files_and_fails_clearly(tmp_path):
    from typer.testing import CliRunner

    from assay.cli import app

    world = simulate(SimConfig(domains=("medicine",), questions=24, gold=6, seed=2))
    rows, gold = transcripts(world)
    src = tmp_path / "transcripts.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "gold.json").write_text(json.dumps(gold))
    res = CliRunner().invoke(app, ["superbrain", "aggregate", str(src), "-o", str(tmp_path / "out"),
                                   "--embedder", "hashed", "--gold", str(tmp_path / "gold.json")])
    assert res.exit_code == 0, res.output
    for name in ("decisions.jsonl", "reliability.jsonl", "signatures.jsonl", "sft.jsonl", "preferences.jsonl",
                 "schools.json", "stats.json"):
        assert (tmp_path / "out" / name).is_file(), name
    decisions = [json.loads(line) for line in (tmp_path / "out" / "decisions.jsonl").read_text().splitlines()]
    assert len(decisions) == 24 and sum(d["status"] == "gold" for d in decisions) == 6
    assert "questions consensus" in res.output
    # with the annotation database: reputation priors (none stored yet) and patches proposed into the review workflow
    from assay.knowledge.store import KnowledgeStore

    cheap_password_hashing()
    db, cleanup = make_database("sqlite", tmp_path)
    try:
        with db.write() as s:
            for name in sorted({v.expert for v in world.votes}) + ["superbrain"]:
                create_user(s, name, "password-123")
        res = CliRunner().invoke(app, ["superbrain", "aggregate", str(src), "-o", str(tmp_path / "out2"),
                                       "--embedder", "hashed", "--gold", str(tmp_path / "gold.json"), "--db",
                                       db.url, "--propose-as", "superbrain"])
        assert res.exit_code == 0, res.output
        proposed = int(re.search(r"patches proposed\D+(\d+)", res.output).group(1))
        assert proposed == sum(d["status"] in ("consensus", "contested") for d in decisions) > 0
        assert len(KnowledgeStore(db).changes(0, 1000)["changes"]) == proposed
    finally:
        cleanup()
    bad = CliRunner().invoke(app, ["superbrain", "aggregate", str(tmp_path / "missing.jsonl"), "-o",
                                   str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "no such file" in bad.output and "Traceback" not in bad.output


def test_the_expert_networks_reputation_is_the_prior(tmp_path):
    """Reputation computed by the expert network from a real annotation queue (gold items of a medicine project)
    becomes each expert's prior accuracy, and decides a question nothing else can: two experts, one answer each."""
    from test_knowledge_experts import _annotate

    from assay.evolve.superbrain.aggregate import reputation_prior
    from assay.experts.reputation import compute_reputation

    cheap_password_hashing()
    db, cleanup = make_database("sqlite", tmp_path)
    try:
        _annotate(db, n_items=20, n_gold=8)
        compute_reputation(db, "medicine")
        prior = reputation_prior(db, ["medicine", "law"], ["careful1", "random", "constant", "nobody"])
    finally:
        cleanup()
    assert set(prior) == {("careful1", "medicine"), ("random", "medicine"), ("constant", "medicine")}
    assert prior[("careful1", "medicine")] > prior[("random", "medicine")] + 0.1
    votes = [Vote("careful1", "q", "medicine", "x"), Vote("random", "q", "medicine", "y")]
    assert aggregate(votes, prior=prior).decisions["q"].answer == "x"
    flipped = {("careful1", "medicine"): prior[("random", "medicine")],
               ("random", "medicine"): prior[("careful1", "medicine")]}
    assert aggregate(votes, prior=flipped).decisions["q"].answer == "y"


def test_claims_from_the_local_model_are_checked_against_the_answer(tmp_path):
    """The real path with the bundled SmolLM2-135M: its JSON claims (schema-checked) are kept only where
    the answer supports them; whatever it returns, every kept claim is supported and the signature is never empty."""
    from assay.evolve.superbrain.signatures import extract_with_llm
    from assay.models.llm import BackendConfig, cached, shared_backend

    llm = cached(shared_backend(BackendConfig()), tmp_path / "cache.sqlite")
    answer = "Adults have a fever from 38 degrees Celsius. Children under three months need a doctor at once."
    calls = []

    def extractor(text, domain):
        calls.append(extract_with_llm(llm, text, domain, max_tokens=64, max_repairs=0))
        return calls[-1]

    sig = signature({"id": "t", "annotator": "a", "record_id": "q", "domain": "medicine", "final_answer": answer},
                    extractor=extractor)
    assert len(calls) == 1 and (calls[0] is None or all(isinstance(c, str) for c in calls[0]))
    assert sig.claims and all(supported(c.norm, sig.answer_norm) for c in sig.claims)
    kept = sum(c.source == "llm" for c in sig.claims)
    assert kept == sig.counts["llm_claims"] and kept + sig.counts["unsupported"] == len(calls[0] or [])
    assert (kept == 0) == (sig.counts["sentence_fallback"] == 1)


def test_the_judge_decides_only_the_grey_band():
    """Pairs in [judge_low, same) go to the judge: "same" merges them, "different" keeps them apart for good; pairs
    outside the band never reach it; without a judge the grey band stays apart."""
    vecs = {"a": [1.0, 0.0], "b": [0.7, 0.714], "c": [0.0, 1.0]}  # cos(a,b) = 0.70, cos(b,c) = 0.71, cos(a,c) = 0
    rows = [{"id": k, "annotator": k, "record_id": "q", "domain": "d", "final_answer": f"answer {k} here"} for k in vecs]
    sigs = [signature(r) for r in rows]

    def embed(texts):
        return np.array([vecs[t.split()[1]] for t in texts])

    asked = []

    def judge(x, y):
        asked.append((x.split()[1], y.split()[1]))
        return (x.split()[1], y.split()[1]) == ("a", "b")

    clustering = cluster_answers(sigs, embed, same=0.8, judge_low=0.6, judge=judge)
    label = {v.expert: v.answer for v in clustering.votes}
    assert sorted(asked) == [("a", "b"), ("b", "c")] and clustering.judged == 2
    assert label["a"] == label["b"] != label["c"]
    no_judge = cluster_answers(sigs, embed, same=0.8)
    assert len({v.answer for v in no_judge.votes}) == 3

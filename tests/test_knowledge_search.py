"""HybridIndex: BM25 checked against SQLite FTS5's bm25(), filters, fusion, persistence, bad input, and retrieval
quality on a small version of the labelled Python-docs query set (benchmarks/knowledge.py)."""

from __future__ import annotations

import importlib.util
import math
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from assay.knowledge.search import RRF_K, HybridIndex, tokenize

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("knowledge_bench", ROOT / "benchmarks" / "knowledge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def passages(bench):
    return bench.load_passages(max_pages=30)


def _docs(passages, **extra):
    return [{"doc_id": p["id"], "patch_id": p["id"], "version": 1, "text": p["text"], **extra} for p in passages]


def test_bm25_matches_sqlite_fts5(passages):
    """Same corpus, same tokens: our BM25 equals FTS5's bm25() (k1=1.2, b=0.75) for every matching document."""
    corpus = passages[:300]
    index = HybridIndex(embedder="none")
    index.upsert(_docs(corpus))
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5(body, tokenize=\"unicode61 remove_diacritics 0 tokenchars '_'\")")
    db.executemany("INSERT INTO f(rowid, body) VALUES (?, ?)",
                   [(i, " ".join(tokenize(p["text"]))) for i, p in enumerate(corpus)])
    queries = ["default argument values", "exception raised when", "sorting lists with key functions",
               "unicode strings encoding", "the"]
    compared = 0
    for q in queries:
        words = list(dict.fromkeys(tokenize(q)))
        ours = index.bm25_scores(q)
        rows = db.execute("SELECT rowid, -bm25(f) FROM f WHERE f MATCH ?",
                          (" OR ".join(f'"{w}"' for w in words),)).fetchall()
        assert rows, q
        for rowid, theirs in rows:
            assert ours[rowid] == pytest.approx(theirs, rel=1e-9, abs=1e-9), (q, rowid)
            compared += 1
        matched = {rowid for rowid, _ in rows}
        assert all(ours[i] == 0 for i in range(len(corpus)) if i not in matched)
    assert compared > 100


def _patch(pid, version, text, status="accepted", domains=("python",), valid_from=None, valid_to=None):
    return {"doc_id": f"{pid}@{version}", "patch_id": pid, "version": version, "text": text, "status": status,
            "domains": list(domains), "valid_from": valid_from, "valid_to": valid_to}


def test_filters_and_latest_version():
    index = HybridIndex(embedder="hashed")
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    index.upsert([
        _patch("a", 1, "lists are mutable sequences in python", valid_from=t0.isoformat(),
               valid_to=(t0 + timedelta(days=30)).isoformat()),
        _patch("a", 2, "lists are mutable sequences in python and support slicing", status="proposed",
               valid_from=(t0 + timedelta(days=30)).isoformat()),
        _patch("b", 1, "tuples are immutable sequences", domains=("python", "types")),
        _patch("c", 1, "rust vectors are growable sequences", domains=("rust",)),
        _patch("d", 1, "retracted claim about mutable sequences", status="retracted"),
    ])
    q = "mutable sequences"
    ids = lambda **kw: [d for d, _ in index.search(q, 10, mode="bm25", **kw)]  # noqa: E731
    # latest version among those passing the filters
    assert "a@1" in ids(status=["accepted"]) and "a@2" not in ids(status=["accepted"])
    assert "a@2" in ids() and "a@1" not in ids()
    assert {"a@1", "a@2"} <= set(ids(latest_only=False))
    assert ids(status=["retracted"]) == ["d@1"]
    assert set(ids(domains=["rust"])) == {"c@1"}
    assert set(ids(domains=["types", "rust"])) == {"b@1", "c@1"}
    assert ids(domains=["nope"]) == []
    # validity at a time: a@1 was valid in January only, a@2 from February on
    assert "a@1" in ids(at=t0 + timedelta(days=1), latest_only=False)
    assert "a@2" not in ids(at=t0 + timedelta(days=1), latest_only=False)
    assert "a@1" not in ids(at=t0 + timedelta(days=40), latest_only=False)
    assert "a@2" in ids(at=(t0 + timedelta(days=40)).isoformat())
    # when version 2 is accepted, version 1 superseded: the accepted search shows version 2
    index.upsert([_patch("a", 2, "lists are mutable sequences in python and support slicing"),
                  _patch("a", 1, "lists are mutable sequences in python", status="superseded")])
    assert "a@2" in ids(status=["accepted"]) and "a@1" not in ids(status=["accepted"], latest_only=False)
    # a selective filter still fills k: the only rust doc is found even when it ranks last overall
    assert [d for d, _ in index.search("sequences", 1, mode="bm25", domains=["rust"])] == ["c@1"]


def test_hybrid_is_reciprocal_rank_fusion_of_both_lists(passages):
    index = HybridIndex(embedder="hashed")
    index.upsert(_docs(passages[:200], status="accepted"))
    q = "how to define a function with keyword arguments"
    bm25 = [d for d, _ in index.search(q, 100, mode="bm25")]
    dense = [d for d, _ in index.search(q, 100, mode="dense")]
    expected: dict[str, float] = {}
    for ranking in (bm25, dense):
        for rank, d in enumerate(ranking, start=1):
            expected[d] = expected.get(d, 0.0) + 1.0 / (RRF_K + rank)
    hybrid = index.search(q, 10, mode="hybrid")
    assert len(hybrid) == 10
    best = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [s for _, s in hybrid] == pytest.approx([s for _, s in best])
    assert {d for d, _ in hybrid} == {d for d, _ in best}


def test_persistence_incremental_and_compaction(tmp_path, passages):
    path = tmp_path / "ix"
    docs = _docs(passages[:120], status="accepted", domains=["python"])
    with HybridIndex(path, embedder="hashed") as index:
        index.upsert(docs[:100])
        before = index.search("string formatting", 5)
        index.save()
        index.upsert(docs[100:])  # after the snapshot: must be re-embedded on open
        index.remove([docs[0]["doc_id"]])
        expected = index.search("string formatting", 5)
        expected_dense = index.search("string formatting", 5, mode="dense")
        assert len(index) == 119
    assert before  # something matched
    reopened = HybridIndex(path, embedder="hashed")
    assert len(reopened) == 119 and docs[0]["doc_id"] not in reopened
    assert [d for d, _ in reopened.search("string formatting", 5)] == [d for d, _ in expected]
    got_dense = reopened.search("string formatting", 5, mode="dense")
    assert [d for d, _ in got_dense] == [d for d, _ in expected_dense]
    assert [s for _, s in got_dense] == pytest.approx([s for _, s in expected_dense], abs=1e-6)
    # remove most docs: save compacts, and everything still answers the same after reopening
    reopened.remove([d["doc_id"] for d in docs[1:80]])
    keep_hits = reopened.search("string formatting", 5, mode="dense")
    reopened.close()
    again = HybridIndex(path, embedder="hashed")
    assert again.slots == len(again) == 40
    assert [d for d, _ in again.search("string formatting", 5, mode="dense")] == [d for d, _ in keep_hits]
    # a snapshot from another embedder is not reused: vectors are recomputed with the right one
    other = HybridIndex(path, embedder="none")
    assert [d for d, _ in other.search("string formatting", 5, mode="bm25")] == \
        [d for d, _ in again.search("string formatting", 5, mode="bm25")]


def test_bad_input_is_rejected_cleanly():
    index = HybridIndex(embedder="none")
    index.upsert([_patch("a", 1, "valid doc about lists")])
    with pytest.raises(ValueError, match="patch_id"):
        index.upsert([_patch("b", 1, "fine"), {"version": 1, "text": "no patch id"}])
    with pytest.raises(ValueError, match="text"):
        index.upsert([{"patch_id": "c", "version": 1, "text": None}])
    with pytest.raises(ValueError, match="ISO"):
        index.upsert([_patch("d", 1, "x", valid_from="yesterday")])
    assert len(index) == 1 and "b@1" not in index  # nothing of a failed batch went in
    with pytest.raises(ValueError, match="mode"):
        index.search("lists", mode="fuzzy")
    assert index.search("", 5) == [] and index.search("zzz unknown", 5) == []
    assert index.search("lists", 0) == []
    # hostile but valid text: lone surrogates, control characters, huge words
    index.upsert([_patch("e", 1, "broken \ud800 text \x00 with " + "x" * 100_000 + " lists")])
    assert "e@1" in [d for d, _ in index.search("lists", 5)]


def test_dense_finds_a_paraphrase_bm25_misses():
    """MiniLM: a query sharing no word with its answer is found by dense and hybrid retrieval, not by BM25."""
    index = HybridIndex(embedder="minilm")
    index.upsert([
        _patch("cat", 1, "Felines sleep for most of the day and hunt at dusk."),
        _patch("car", 1, "An automobile engine converts fuel into motion."),
        _patch("tax", 1, "Income levies are collected by the revenue agency every spring."),
    ])
    q = "when do cats rest"
    assert index.search(q, 1, mode="bm25") == []
    assert index.search(q, 1, mode="dense")[0][0] == "cat@1"
    assert index.search(q, 1, mode="hybrid")[0][0] == "cat@1"


def test_hybrid_recall_on_small_labelled_set(bench):
    """On a small version of the labelled set, fusion keeps up with the better of the two retrievers."""
    passages = bench.load_passages(max_pages=10)
    queries = bench.build_queries(passages, seed=0)
    queries = ([q for q in queries if q["kind"] == "title"][:40]
               + [q for q in queries if q["kind"] == "paraphrase"][:40])
    index = bench.build_quality_index(passages, "minilm")
    results = bench.evaluate(index, queries)
    r = {mode: row["recall@5"] for mode, row in results.items()}
    print(len(passages), "passages", len(queries), "queries", r)
    assert min(r.values()) > 0.3  # every retriever does real work on this set
    assert r["hybrid"] >= max(r["bm25"], r["dense"]) - 0.05
    assert math.isclose(sum(results["hybrid"][f"recall@5.{k}"] for k in ("title", "paraphrase")) / 2, r["hybrid"])

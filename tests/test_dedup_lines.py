"""line_dedup: lines repeated across documents are removed (one copy kept), the same whatever the sharding."""

from __future__ import annotations

import random
from pathlib import Path

from assay.core.record import Record, stable_id
from assay.core.step import REGISTRY, StepContext
from assay.harvest.dedup import LineDedup
from assay.harvest.dedup.hashing import record_key
from assay.harvest.dedup.lines import normalise_line

NAV = "Home | News | Sport | Business | Technology | Contact us"
COOKIE = "We use cookies to improve your experience. Accept all cookies"


def run_sharded(step_factory, records, num_shards, run_dir, batch=5):
    shards = [[r.copy() for r in records[i::num_shards]] for i in range(num_shards)]
    for i, recs in enumerate(shards):
        for _ in step_factory().collect([recs[j:j + batch] for j in range(0, len(recs), batch)],
                                        StepContext(run_dir, i, num_shards)):
            pass
    step_factory().reduce(StepContext(run_dir, 0, num_shards))
    out = []
    for i, recs in enumerate(shards):
        ctx = StepContext(run_dir, i, num_shards)
        out.extend(r for b in step_factory().apply([recs[j:j + batch] for j in range(0, len(recs), batch)], ctx)
                   for r in b)
    return out


def docs() -> list[Record]:
    bodies = [
        f"{NAV}\nThe first article talks about rivers and the fish that live in them.\n{COOKIE}",
        f"{NAV}\nA second article about mountains, glaciers and the people who climb them.\n{COOKIE}",
        f"  home | NEWS | sport | business | technology | contact US  \nThird story on deserts in 2024 and 2025.",
        "Only unique content in this one, nothing shared with the others at all.\nshort\nshort",
        f"{COOKIE}",
        {"not": "text"},
    ]
    return [Record(stable_id("d", i), b, "text" if isinstance(b, str) else "conversation")
            for i, b in enumerate(bodies)]


def test_registered() -> None:
    assert REGISTRY.get("line_dedup") is LineDedup


def test_repeated_lines_are_kept_once_in_the_smallest_key_document(tmp_path: Path) -> None:
    recs = docs()
    step = LineDedup(min_line_chars=10)
    out = list(r for b in step.process([[r.copy() for r in recs]], StepContext(tmp_path)) for r in b)
    nav_holders = [r for r in recs[:3]]  # the nav line (normalised) is in documents 0, 1, 2
    keeper = min(nav_holders, key=record_key)
    by_id = {r.id: r for r in out}
    for r in nav_holders:
        has_nav = any(normalise_line(x) == normalise_line(NAV) for x in by_id[r.id].text.split("\n"))
        assert has_nav == (r.id == keeper.id)
    cookie_docs = [by_id[r.id] for r in (recs[0], recs[1], recs[4])]
    assert sum(COOKIE in r.text for r in cookie_docs) == 1
    # a document left empty is dropped; short lines and repeats inside one document stay
    emptied = [r for r in cookie_docs if r.text.strip() == ""]
    assert all(r.drop == ("line_dedup", "empty_after_dedup") for r in emptied)
    assert by_id[recs[3].id].text == recs[3].text and by_id[recs[3].id].drop is None
    assert by_id[recs[5].id].content == {"not": "text"}
    assert step.stats.counters["not_text"] == 1
    assert sum(r.signals.get("line_dedup.removed_lines", 0) for r in out) == step.stats.counters["lines_removed"] == 4


def test_keep_one_false_removes_boilerplate_everywhere(tmp_path: Path) -> None:
    out = list(r for b in LineDedup(min_line_chars=10, keep_one=False).process([docs()], StepContext(tmp_path))
               for r in b)
    texts = [r.text for r in out if isinstance(r.content, str)]
    assert not any(COOKIE in t for t in texts)
    assert not any("technology" in t.lower() for t in texts)
    assert "rivers" in texts[0] and "deserts" in texts[2]


def test_digits_are_folded_when_comparing_lines() -> None:
    assert normalise_line("  Posted on 2024-01-03 by  ADMIN ") == normalise_line("posted on 1999-12-31 by admin")


def test_same_result_for_1_3_7_shards(tmp_path: Path) -> None:
    rng = random.Random(0)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    pool = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(30)]
    uniques = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(150)]
    recs = []
    for i in range(150):
        lines = rng.sample(pool, 3) + [uniques[i]]
        rng.shuffle(lines)
        recs.append(Record(stable_id("s", i), "\n".join(lines)))
    results = []
    for n, extra in [(1, {}), (3, {"part_rows": 11, "sort_rows": 50}), (7, {"part_rows": 4, "sort_rows": 97})]:
        out = run_sharded(lambda: LineDedup(**extra), recs, n, tmp_path / str(n))
        results.append({r.id: (r.text, r.drop) for r in out})
    assert results[0] == results[1] == results[2]
    remaining = [line for text, _ in results[0].values() for line in text.split("\n")]
    used = {line for r in recs for line in r.text.split("\n")} & set(pool)
    for line in used:
        assert remaining.count(line) == 1
    assert all(uniques[i] in results[0][r.id][0] for i, r in enumerate(recs))
    assert sum(d is not None for _, d in results[0].values()) == 0

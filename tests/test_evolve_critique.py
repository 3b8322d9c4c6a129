"""Constitutional critique/revise: constitutions, principle sampling, and a run with the local model."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.core.pipeline import Pipeline
from assay.core.record import LineageEntry, Record
from assay.core.step import StepContext
from assay.evolve.critique import (ConstitutionError, CritiqueRevise, builtin_constitutions, load_constitution)


def test_builtin_constitutions_load() -> None:
    assert {"default", "code"} <= set(builtin_constitutions())
    c = load_constitution("default")
    assert len(c.principles) >= 5 and all(p.critique and p.revision for p in c.principles)
    assert len({p.name for p in c.principles}) == len(c.principles)


def test_custom_and_malformed_constitutions(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("principles:\n  - Be kind.\n  - {name: short, critique: \"Too long?\", revision: Shorten it.}\n")
    c = load_constitution(str(good))
    assert c.name == "mine" and [p.name for p in c.principles] == ["p0", "short"]
    assert c.principles[0].critique == c.principles[0].revision == "Be kind."
    for text in ("principles: []", "- just a list", "principles:\n  - {name: x}", "principles: [: bad"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConstitutionError):
            load_constitution(str(bad))
    with pytest.raises(ConstitutionError):
        load_constitution("no-such-constitution")
    with pytest.raises(ConstitutionError):  # at recipe load, not mid-run
        CritiqueRevise({"constitution": "no-such-constitution"})


def test_principles_are_reproducible_and_distinct_per_round() -> None:
    step = CritiqueRevise({"rounds": 3, "seed": 5})
    a = step.principles_for("rec-1")
    assert a == step.principles_for("rec-1") and len({p.name for p in a}) == 3
    many = {tuple(p.name for p in step.principles_for(f"r{i}")) for i in range(30)}
    assert len(many) > 5  # records get different principles


def test_critique_revise_with_the_local_model(tmp_path: Path) -> None:
    lineage = [LineageEntry("self_instruct", "1", "abc")]
    recs = [Record("q1", {"instruction": "Give one tip for sleeping better.",
                          "output": "Drink three cups of coffee before bed."}, "conversation", lineage=list(lineage)),
            Record("q2", {"messages": [{"role": "user", "content": "Name a prime number."},
                                       {"role": "assistant", "content": "9 is a prime number."}]}, "conversation"),
            Record("q3", "no response in here")]
    step = CritiqueRevise({"cache": str(tmp_path / "c.sqlite"), "seed": 2,
                           "critique_sampling": {"temperature": 0.7, "max_tokens": 48},
                           "revision_sampling": {"temperature": 0.7, "max_tokens": 48}})
    rejected: list[Record] = []
    out = list(Pipeline([step]).run_records(recs, StepContext(run_dir=tmp_path), reject=rejected.extend))
    assert step.stats.counters["skipped:no_response"] == 1
    by_parent: dict[str, list[Record]] = {}
    for r in out + rejected:
        by_parent.setdefault(r.meta["parents"][0], []).append(r)
    assert set(by_parent) == {"q1", "q2"}
    originals = {"q1": "Drink three cups of coffee before bed.", "q2": "9 is a prime number."}
    for parent, made in by_parent.items():
        if any(r.drop for r in made):  # the model produced no usable critique or revision
            assert len(made) == 1 and made[0].drop[1] in ("no_revision", "no_critique")
            continue
        kinds = {r.modality: r for r in made}
        assert set(kinds) == {"conversation", "preference"}
        chain = kinds["preference"].meta["critique"]
        assert chain["original"] == originals[parent] and chain["constitution"] == "default"
        step0 = chain["steps"][0]
        assert step0["critique"] and step0["revision"] and step0["principle"] in \
            {p.name for p in load_constitution("default").principles}
        assert kinds["preference"].content["chosen"] == step0["revision"]
        assert kinds["preference"].content["rejected"] == originals[parent]
        assert kinds["conversation"].content["output"] == step0["revision"]
        assert kinds["conversation"].content["messages"][-1]["content"] == step0["revision"]
        for r in made:
            assert r.lineage[-1].step == "critique_revise"
            if parent == "q1":
                assert r.lineage[0] == lineage[0]  # the parent's history is kept
        assert kinds["conversation"].id != kinds["preference"].id
    assert step.stats.counters["llm.calls"] >= 4

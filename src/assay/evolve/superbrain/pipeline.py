"""Transcripts → signatures → equivalent-answer clusters → aggregate → distilled files (what ``assay superbrain
aggregate`` runs)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from assay.evolve.superbrain import distill
from assay.evolve.superbrain.aggregate import AggregateOptions, Aggregation, aggregate
from assay.evolve.superbrain.signatures import (Clustering, Signature, cluster_answers, extract_with_llm, llm_judge,
                                                match_gold, signature)


@dataclass
class Result:
    signatures: list[Signature]
    clustering: Clustering
    aggregation: Aggregation
    gold: dict[str, Hashable]
    stats: Counter = field(default_factory=Counter)


def embedder_for(name: str) -> Any:
    """``encode`` of the named embedding backend (``minilm``: the bundled all-MiniLM-L6-v2; ``hashed``: no model,
    4096 buckets: answers are short, and the dense default of 2^18 would cost a gigabyte per thousand answers)."""
    from assay.models.embeddings import get_backend

    return get_backend(name, dim=1 << 12).encode if name == "hashed" else get_backend(name).encode


def run(rows: Sequence[Mapping[str, Any]], *, embed: Any, gold: Mapping[str, str] | None = None,
        synonyms: Mapping[str, Mapping[str, str]] | None = None, llm: Any = None, extract: bool = False,
        judge: bool = False, prior: Mapping[tuple[str, str], float] | None = None,
        options: AggregateOptions | None = None, same: float = 0.8) -> Result:
    """The whole chain over transcript rows. ``llm``: a backend for claim extraction (``extract``) and the
    equivalence judge (``judge``); ``prior``: (expert, domain) → prior accuracy. BLAS runs on one thread (many
    small products: several threads are many times slower on a busy machine, see :mod:`assay.core.blas`)."""
    from assay.core.blas import single_threaded_blas

    with single_threaded_blas():
        return _run(rows, embed=embed, gold=gold, synonyms=synonyms, llm=llm, extract=extract, judge=judge,
                    prior=prior, options=options, same=same)


def _run(rows: Sequence[Mapping[str, Any]], *, embed: Any, gold: Mapping[str, str] | None,
         synonyms: Mapping[str, Mapping[str, str]] | None, llm: Any, extract: bool, judge: bool,
         prior: Mapping[tuple[str, str], float] | None, options: AggregateOptions | None, same: float) -> Result:
    stats: Counter = Counter()
    extractor = (lambda answer, domain: extract_with_llm(llm, answer, domain)) if (extract and llm) else None
    sigs = []
    for row in rows:
        try:
            sig = signature(row, synonyms=synonyms, extractor=extractor)
        except (KeyError, TypeError, ValueError, AttributeError):
            stats["transcripts_skipped_bad"] += 1
            continue
        if not sig.expert or not sig.question_id or not sig.answer.strip():
            stats["transcripts_skipped_incomplete"] += 1
            continue
        stats.update({f"claims_{k}": v for k, v in sig.counts.items()})
        sigs.append(sig)
    stats["transcripts"] = len(sigs)
    clustering = cluster_answers(sigs, embed, same=same, judge=llm_judge(llm) if (judge and llm) else None)
    stats["judged_pairs"] = clustering.judged
    domain_of = {s.question_id: s.domain for s in sigs}
    gold_labels = match_gold(gold or {}, clustering, sigs, embed, domain_of, same, synonyms) if gold else {}
    agg = aggregate(clustering.votes, gold_labels, prior=prior, options=options)
    for d in agg.decisions.values():
        stats[f"questions_{d.status}"] += 1
    return Result(sigs, clustering, agg, gold_labels, stats)


def write(result: Result, out: Path) -> dict[str, int]:
    """decisions.jsonl, reliability.jsonl, schools.json, signatures.jsonl, sft.jsonl, preferences.jsonl in ``out``;
    returns the row counts."""
    from assay.core.record import dumps

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    stats = result.stats

    def jsonl(name: str, rows: Any) -> None:
        n = 0
        tmp = out / f".{name}.tmp"
        with open(tmp, "wb") as f:
            for row in rows:
                f.write(dumps(row) + b"\n")
                n += 1
        tmp.replace(out / name)
        counts[name] = n

    agg, cl, sigs = result.aggregation, result.clustering, result.signatures
    jsonl("decisions.jsonl", distill.decisions_rows(agg, cl))
    jsonl("reliability.jsonl", distill.reliability_rows(agg))
    jsonl("signatures.jsonl", (s.as_dict() for s in sigs))
    jsonl("sft.jsonl", distill.sft_rows(agg, cl, sigs, stats))
    jsonl("preferences.jsonl", distill.preference_rows(agg, cl, sigs, stats))
    (out / "schools.json").write_text(json.dumps(agg.schools, indent=1, sort_keys=True) + "\n")
    (out / "stats.json").write_text(json.dumps(dict(sorted(stats.items())), indent=1) + "\n")
    return counts

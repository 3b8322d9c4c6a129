"""Distillation of the aggregate: SFT rows, preference pairs and knowledge patches.

* **SFT** (``sft.jsonl``): a consensus (or gold) question → the cluster's representative answer. A contested
  question → an answer that *presents the schools*: each position with its school, its experts and its share of the
  reliability-weighted support, in order of support; never one of them as "the" answer. Uncertain questions are
  left out (counted).
* **Preference pairs** (``preferences.jsonl``): chosen = the consensus answer, rejected = each answer the aggregate
  refuted (posterior < 5 %); plus, for experts reliable in the domain, their corrections (chosen = the corrected model
  turn, rejected = what the model said, in the conversation's context). A contested question gives no pair between
  its schools: neither position is refuted.
* **Knowledge patches**: one proposed patch per consensus or contested question in the knowledge store, authored by
  a service account with the contributing experts as co-authors (so none of them can review it), the transcripts as
  sources; they then go through the store's ordinary review workflow (``assay knowledge review``, quorum, publish).

Every row carries its lineage: the transcripts (record ids) it was distilled from, the experts, and the
``superbrain.distill`` step with a hash of the aggregation options.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any, Iterator, Sequence

import xxhash

from assay.core.record import derive_id, dumps
from assay.evolve.superbrain.aggregate import Aggregation, Decision
from assay.evolve.superbrain.signatures import Clustering, Signature

STEP, VERSION = "superbrain.distill", "1"


def _lineage(agg: Aggregation) -> dict[str, str]:
    return {"step": STEP, "version": VERSION,
            "params": xxhash.xxh3_64_hexdigest(dumps(asdict(agg.options)))[:12]}


def _question_text(sigs: Sequence[Signature], clustering: Clustering, d: Decision) -> str:
    for label in (a.answer for a in d.alternatives):
        for i in clustering.members.get(label, []):
            if sigs[i].question:
                return sigs[i].question
    return d.question


def _transcripts(sigs: Sequence[Signature], clustering: Clustering, labels: Sequence[Any]) -> list[str]:
    return sorted({sigs[i].transcript_id for lab in labels for i in clustering.members.get(lab, [])})


def schools_answer(d: Decision, clustering: Clustering) -> str:
    """The SFT answer of a contested question: the positions, with their schools and support."""
    lines = [f"Experts disagree on this question; there are {len(d.alternatives)} established positions."]
    for k, alt in enumerate(d.alternatives, 1):
        who = ", ".join(alt.schools) if alt.schools else "no single school"
        lines.append(f"Position {k} ({who}; {len(alt.experts)} experts, {alt.share:.0%} of the weighted support): "
                     f"{clustering.representative.get(alt.answer, str(alt.answer))}")
    return "\n".join(lines)


def sft_rows(agg: Aggregation, clustering: Clustering, sigs: Sequence[Signature],
             stats: Counter | None = None) -> Iterator[dict[str, Any]]:
    stats = stats if stats is not None else Counter()
    lin = _lineage(agg)
    for q, d in sorted(agg.decisions.items()):
        if d.status == "uncertain":
            stats["sft_skipped_uncertain"] += 1
            continue
        question = _question_text(sigs, clustering, d)
        if d.status == "contested":
            answer = schools_answer(d, clustering)
            labels = [a.answer for a in d.alternatives]
        else:
            answer = clustering.representative.get(d.answer)
            if answer is None:  # a gold answer nobody gave: no transcript stands for it
                stats["sft_skipped_no_text"] += 1
                continue
            labels = [d.answer]
        stats[f"sft_{d.status}"] += 1
        yield {"id": derive_id(q, STEP, "sft"), "messages": [{"role": "user", "content": question},
                                                            {"role": "assistant", "content": answer}],
               "prompt": question, "response": answer, "domain": d.domain, "status": d.status,
               "confidence": round(d.confidence, 4),
               "schools": {str(a.answer): a.schools for a in d.alternatives} if d.status == "contested" else {},
               "meta": {"question_id": q, "transcripts": _transcripts(sigs, clustering, labels),
                        "experts": sorted({e for a in d.alternatives if a.answer in labels for e in a.experts})},
               "lineage": [lin]}


def preference_rows(agg: Aggregation, clustering: Clustering, sigs: Sequence[Signature],
                    stats: Counter | None = None) -> Iterator[dict[str, Any]]:
    stats = stats if stats is not None else Counter()
    lin = _lineage(agg)
    for q, d in sorted(agg.decisions.items()):
        if d.status not in ("consensus", "gold") or d.answer not in clustering.representative:
            continue
        question = _question_text(sigs, clustering, d)
        chosen = clustering.representative[d.answer]
        for bad in d.refuted:
            if bad not in clustering.representative or bad == d.answer:
                continue
            stats["pairs_refuted"] += 1
            yield {"id": derive_id(q, STEP, "pair", bad), "prompt": question, "chosen": chosen,
                   "rejected": clustering.representative[bad], "domain": d.domain, "source": "aggregate",
                   "meta": {"question_id": q, "transcripts": _transcripts(sigs, clustering, [d.answer, bad])},
                   "lineage": [lin]}
    for s in sigs:
        reliable = agg.reliability.get((s.expert, s.domain), 0.0) >= agg.options.reliable
        for c_idx in sorted(s.corrections):
            if not reliable:
                stats["pairs_skipped_unreliable_expert"] += 1
                continue
            stats["pairs_correction"] += 1
            yield {"id": derive_id(s.transcript_id, STEP, "correction", c_idx), "prompt": s.question,
                   "turn": c_idx, "domain": s.domain, "source": "correction", "expert": s.expert,
                   "meta": {"question_id": s.question_id, "transcripts": [s.transcript_id]}, "lineage": [lin],
                   **_correction_pair(s, c_idx)}


def _correction_pair(s: Signature, index: int) -> dict[str, Any]:
    chosen, rejected = s.corrections[index]
    return {"chosen": chosen, "rejected": rejected}


def propose_patches(store: Any, agg: Aggregation, clustering: Clustering, sigs: Sequence[Signature], author: str,
                    stats: Counter | None = None) -> list[Any]:
    """One proposed knowledge patch per consensus or contested question (module docstring); returns the patches."""
    from assay.knowledge.review import check_domain

    stats = stats if stats is not None else Counter()
    out = []
    for row in sft_rows(agg, clustering, sigs):
        d = agg.decisions[row["meta"]["question_id"]]
        if d.status not in ("consensus", "contested"):
            continue
        title = ("Contested: " if d.status == "contested" else "") + row["prompt"][:180]
        sources = [{"record_id": t, "title": "expert dialogue"} for t in row["meta"]["transcripts"]]
        coauthors = [e for e in row["meta"]["experts"] if e != author]
        patch = store.propose(author, title=title, content=row["response"], domains=[check_domain(d.domain)],
                              sources=sources, coauthors=coauthors)
        stats[f"patches_{d.status}"] += 1
        out.append(patch)
    return out


def decisions_rows(agg: Aggregation, clustering: Clustering) -> Iterator[dict[str, Any]]:
    """The aggregate itself, one row per question (what the CLI writes as ``decisions.jsonl``)."""
    for q, d in sorted(agg.decisions.items()):
        row = d.as_dict()
        row["answer_text"] = clustering.representative.get(d.answer) if d.answer is not None else None
        for alt in row["alternatives"]:
            alt["text"] = clustering.representative.get(alt["answer"])
        yield row


def reliability_rows(agg: Aggregation) -> list[dict[str, Any]]:
    school = {(e, dom): name for dom in agg.schools for e, name in agg.school_of(dom).items()}
    return [{"expert": e, "domain": dom, "accuracy": round(a, 4), "school": school.get((e, dom))}
            for (e, dom), a in sorted(agg.reliability.items())]

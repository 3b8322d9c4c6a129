"""Cognitive signatures: the atomic claims an expert asserted in a dialogue, normalised per domain, and the
clustering of equivalent answers across experts (what :mod:`.aggregate` votes on).

From each transcript (a row of the annotation app's ``dialogue`` export, or an Assay record with that content):

* **corrections** (strongest signal, weight 3): where the expert edited a model turn, the sentences they added or
  changed are claims they assert; the model's sentences they removed are claims they *refuted*.
* **final answer** (weight 2): its atomic claims. With an LLM ``extractor`` the model is asked for the claims as
  JSON (``{"claims": [str]}``, schema-checked and repaired); every extracted claim must be *supported* by the answer
  (≥ 60 % of its content words occur in it) — the bundled 135M model invents claims, and an unsupported claim is
  dropped and counted. If no claim survives, the answer's sentences are the claims (``source: sentence``).
* **expert turns** (weight 1): the statements (not the questions) in the expert's own messages.

**Normalisation** per domain: Unicode NFKC, lower case, the domain's synonym table applied word by word (e.g.
``{"medicine": {"acetaminophen": "paracetamol"}}``), numbers kept, punctuation and repeated spaces removed, opening
hedges ("i think", "in my opinion", "generally") dropped.

**Equivalent answers** (per question): the experts' normalised final answers are embedded (the bundled
all-MiniLM-L6-v2 by default) and merged by average-linkage while the cosine similarity is ≥ ``same``, except that
two answers of opposite *polarity* (an odd versus even number of negations: "is safe" / "is not safe" embed close
together) never merge — the rule judge. A pair in the grey band [``judge_low``, ``same``) is put to the optional
LLM ``judge`` (JSON ``{"same": bool}``), whose "no" keeps them apart.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from assay.evolve.superbrain.aggregate import Vote

WEIGHTS = {"correction": 3.0, "final": 2.0, "llm": 2.0, "sentence": 2.0, "expert_turn": 1.0}
HEDGES = ("i think that ", "i think ", "i believe that ", "i believe ", "in my opinion, ", "in my opinion ",
          "generally, ", "generally ", "in general, ", "in general ", "actually, ", "actually ")
NEGATIONS = {"not", "no", "never", "cannot", "can't", "don't", "doesn't", "isn't", "aren't", "wasn't", "won't",
             "shouldn't", "mustn't", "without", "nor", "neither", "none", "avoid", "contraindicated"}
STOPWORDS = set("a an the of to in on for and or is are was were be been it its this that these those with as by at "
                "from into than then so such can may should must will would do does did has have had".split())
CLAIM_SCHEMA = {"type": "object", "properties": {"claims": {"type": "array", "items": {"type": "string"},
                                                            "minItems": 1, "maxItems": 8}},
                "required": ["claims"]}
EXTRACT_PROMPT = ("List the separate factual claims made in this answer about {domain}, each as one short "
                  "self-contained sentence, as JSON {{\"claims\": [\"...\"]}}.\n\nAnswer: {answer}")


@dataclass
class Claim:
    text: str
    norm: str
    source: str  # correction | final | llm | sentence | expert_turn | refuted
    weight: float


@dataclass
class Signature:
    """One expert's signature for one question."""

    transcript_id: str
    expert: str
    question_id: str
    question: str
    domain: str
    answer: str  # the final answer
    answer_norm: str
    claims: list[Claim] = field(default_factory=list)
    refuted: list[Claim] = field(default_factory=list)  # model claims the expert removed
    model: str = ""
    corrected_turns: list[int] = field(default_factory=list)
    corrections: dict[int, tuple[str, str]] = field(default_factory=dict)  # turn -> (expert's text, model's)
    counts: dict[str, int] = field(default_factory=dict)  # extraction counters (llm_claims, unsupported, ...)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["corrections"] = {str(k): list(v) for k, v in self.corrections.items()}
        return d


# -- text ----------------------------------------------------------------------------------------------------------
def sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ? ; and at line breaks; bullets stripped)."""
    parts = re.split(r"(?<=[.!?;])\s+|\n+", text or "")
    out = []
    for p in parts:
        p = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", p).strip()
        if len(p.split()) >= 2:
            out.append(p)
    return out


def normalise(text: str, domain: str = "", synonyms: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The comparable form of a claim in ``domain`` (module docstring)."""
    t = unicodedata.normalize("NFKC", text or "").lower().strip()
    for h in HEDGES:
        if t.startswith(h):
            t = t[len(h):]
    t = re.sub(r"[^\w\s'.-]", " ", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)
    table = (synonyms or {}).get(domain, {})
    words = [table.get(w, w) for w in t.split()]
    return " ".join(words)


def polarity(norm: str) -> int:
    """0 for an affirmative claim, 1 for a negated one (odd number of negations)."""
    return sum(w in NEGATIONS or w.endswith("n't") for w in norm.split()) % 2


def content_words(norm: str) -> set[str]:
    return {w for w in re.findall(r"[\w'.-]+", norm) if w not in STOPWORDS and len(w) > 1}


def supported(claim_norm: str, source_norm: str, share: float = 0.6) -> bool:
    """Whether ≥ ``share`` of the claim's content words occur in the source (and the polarity agrees)."""
    words = content_words(claim_norm)
    if not words:
        return False
    hit = len(words & content_words(source_norm)) / len(words)
    return hit >= share


# -- claims from a transcript --------------------------------------------------------------------------------------
def _sentence_claims(text: str, source: str, domain: str, synonyms: Any) -> list[Claim]:
    return [Claim(s, normalise(s, domain, synonyms), source, WEIGHTS.get(source, 1.0)) for s in sentences(text)
            if not s.rstrip().endswith("?")]


def extract_with_llm(backend: Any, answer: str, domain: str, max_tokens: int = 160,
                     max_repairs: int = 2) -> list[str] | None:
    """The model's claims for ``answer`` as a list of strings (schema-checked, repaired up to ``max_repairs``
    times), or None."""
    from assay.models.llm import SamplingParams
    from assay.models.llm.structured import chat_json

    value, _ = chat_json(backend, EXTRACT_PROMPT.format(domain=domain or "the topic", answer=answer[:3000]),
                         CLAIM_SCHEMA, SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0), max_repairs)
    if not isinstance(value, dict):
        return None
    return [c for c in value.get("claims", []) if isinstance(c, str) and c.strip()]


def signature(row: Mapping[str, Any], *, synonyms: Mapping[str, Mapping[str, str]] | None = None,
              extractor: Callable[[str, str], list[str] | None] | None = None) -> Signature:
    """The signature of one transcript row (module docstring). ``extractor(answer, domain)``: LLM claim extraction
    (:func:`extract_with_llm` bound to a backend), or None for sentence-level claims."""
    content = row.get("content") if isinstance(row.get("content"), dict) else row
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    domain = str(content.get("domain") or meta.get("domain") or "general").strip().lower()
    answer = str(content.get("final_answer") or "")
    expert = str(row.get("annotator") or meta.get("expert") or "")
    qid = str(row.get("record_id") or meta.get("question_id") or content.get("question") or "")
    sig = Signature(str(row.get("id") or ""), expert, qid, str(content.get("question") or ""), domain, answer,
                    normalise(answer, domain, synonyms), model=str(content.get("model") or ""),
                    corrected_turns=[int(i) for i in content.get("corrected_turns") or []])
    counts = {"llm_claims": 0, "unsupported": 0, "sentence_fallback": 0}
    # 1. corrections: what the expert wrote into a model turn, and what they removed from it
    for i, t in enumerate(content.get("turns") or []):
        if t.get("role") != "model" or not t.get("corrected") or not t.get("original"):
            continue
        sig.corrections[i] = (t["text"], t["original"])
        before = {normalise(s, domain, synonyms): s for s in sentences(t["original"])}
        after = {normalise(s, domain, synonyms): s for s in sentences(t["text"])}
        for norm, s in after.items():
            if norm not in before:
                sig.claims.append(Claim(s, norm, "correction", WEIGHTS["correction"]))
        for norm, s in before.items():
            if norm not in after:
                sig.refuted.append(Claim(s, norm, "refuted", 1.0))
    # 2. the final answer
    final: list[Claim] = []
    if extractor is not None and answer.strip():
        extracted = extractor(answer, domain) or []
        for c in extracted:
            norm = normalise(c, domain, synonyms)
            if supported(norm, sig.answer_norm) and polarity(norm) == polarity_of_source(norm, sig.answer_norm):
                final.append(Claim(c.strip(), norm, "llm", WEIGHTS["llm"]))
                counts["llm_claims"] += 1
            else:
                counts["unsupported"] += 1
    if not final:
        final = _sentence_claims(answer, "sentence", domain, synonyms)
        counts["sentence_fallback"] += 1
    known = {c.norm for c in sig.claims}
    sig.claims.extend(c for c in final if c.norm not in known)
    # 3. the expert's own statements
    known = {c.norm for c in sig.claims}
    for t in content.get("turns") or []:
        if t.get("role") == "expert":
            sig.claims.extend(c for c in _sentence_claims(t.get("text", ""), "expert_turn", domain, synonyms)
                              if c.norm not in known)
    sig.counts = counts
    return sig


def polarity_of_source(claim_norm: str, source_norm: str) -> int:
    """The polarity of the source sentence that shares most content words with the claim."""
    best, pol = -1, 0
    claim_words = content_words(claim_norm)
    for s in re.split(r"(?<=[.!?;])\s+", source_norm) or [source_norm]:
        overlap = len(claim_words & content_words(s))
        if overlap > best:
            best, pol = overlap, polarity(s)
    return pol


# -- equivalent answers across experts -----------------------------------------------------------------------------
@dataclass
class Clustering:
    votes: list[Vote]
    representative: dict[Hashable, str]  # label -> the answer text that stands for the cluster
    members: dict[Hashable, list[int]]  # label -> indices into the signatures
    judged: int = 0  # pairs put to the LLM judge


def cluster_answers(sigs: Sequence[Signature], embed: Callable[[list[str]], np.ndarray], *, same: float = 0.8,
                    judge_low: float = 0.6, judge: Callable[[str, str], bool | None] | None = None) -> Clustering:
    """Votes (expert, question, domain, label) with one label per group of equivalent final answers."""
    by_q: dict[str, list[int]] = {}
    for i, s in enumerate(sigs):
        if s.answer_norm:
            by_q.setdefault(s.question_id, []).append(i)
    votes, rep, members, judged = [], {}, {}, 0
    order = [i for q in sorted(by_q) for i in by_q[q]]
    all_vecs = np.asarray(embed([sigs[i].answer_norm for i in order]), dtype=np.float32) if order else None
    row_of = {i: k for k, i in enumerate(order)}
    for q in sorted(by_q):
        idx = by_q[q]
        vecs = all_vecs[[row_of[i] for i in idx]]
        sim = (vecs @ vecs.T).astype(np.float64)
        n = len(idx)
        allowed = np.ones((n, n), dtype=bool)
        pol = [polarity(sigs[i].answer_norm) for i in idx]
        for a in range(n):
            for b in range(a + 1, n):
                ok = pol[a] == pol[b]
                if ok and judge is not None and judge_low <= sim[a, b] < same:
                    judged += 1
                    verdict = judge(sigs[idx[a]].answer, sigs[idx[b]].answer)
                    if verdict is True:
                        sim[a, b] = sim[b, a] = same
                    elif verdict is False:
                        ok = False
                allowed[a, b] = allowed[b, a] = ok
        groups = _agglomerate(sim, allowed, same)
        for k, g in enumerate(sorted(groups, key=lambda g: min(g))):
            label = f"{q}#{k}"
            members[label] = [idx[j] for j in g]
            # the member most similar to the rest stands for the cluster
            centre = max(g, key=lambda j: (sim[j, g].sum(), -j))
            rep[label] = sigs[idx[centre]].answer
            for j in g:
                s = sigs[idx[j]]
                votes.append(Vote(s.expert, s.question_id, s.domain, label))
    return Clustering(votes, rep, members, judged)


def _agglomerate(sim: np.ndarray, allowed: np.ndarray, threshold: float) -> list[list[int]]:
    """Average-linkage clusters; two clusters merge only if every cross pair is allowed. Keeps the sums of
    similarities between clusters and merges rows (Lance-Williams), so each merge costs one vector operation."""
    n = len(sim)
    total = sim.astype(np.float64).copy()
    ok = allowed.copy()
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    groups = {i: [i] for i in range(n)}
    while alive.sum() > 1:
        avg = total / np.outer(size, size)
        mask = ok & np.outer(alive, alive)
        np.fill_diagonal(mask, False)
        avg = np.where(mask, avg, -np.inf)
        x, y = np.unravel_index(int(np.argmax(avg)), avg.shape)
        if not np.isfinite(avg[x, y]) or avg[x, y] < threshold:
            break
        x, y = min(x, y), max(x, y)
        total[x, :] += total[y, :]
        total[:, x] += total[:, y]
        ok[x, :] &= ok[y, :]
        ok[:, x] &= ok[:, y]
        size[x] += size[y]
        alive[y] = False
        groups[x] += groups.pop(y)
    return [sorted(g) for g in groups.values()]


def match_gold(gold: Mapping[str, str], clustering: Clustering, sigs: Sequence[Signature],
               embed: Callable[[list[str]], np.ndarray], domain_of: Mapping[str, str], same: float = 0.8,
               synonyms: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Hashable]:
    """Gold answers (question id → answer text) as cluster labels: the most similar cluster of the same polarity
    above ``same``, else a label of its own (an answer nobody gave)."""
    out: dict[str, Hashable] = {}
    for q, text in gold.items():
        dom = domain_of.get(q, "general")
        norm = normalise(text, dom, synonyms)
        labels = [lab for lab in clustering.members if str(lab).rsplit("#", 1)[0] == q]
        best, best_sim = None, -1.0
        if labels:
            texts = [norm] + [sigs[i].answer_norm for lab in labels for i in clustering.members[lab]]
            vecs = np.asarray(embed(texts), dtype=np.float32)
            g, k = vecs[0], 1
            for lab in labels:
                mem = clustering.members[lab]
                s = float((vecs[k:k + len(mem)] @ g).mean())
                k += len(mem)
                if s > best_sim and polarity(sigs[mem[0]].answer_norm) == polarity(norm):
                    best, best_sim = lab, s
        out[q] = best if best is not None and best_sim >= same else f"{q}#gold"
    return out


def llm_judge(backend: Any) -> Callable[[str, str], bool | None]:
    """A judge asking ``backend`` whether two answers say the same thing (``{"same": bool}``; None when it gives no
    valid answer)."""
    from assay.models.llm import SamplingParams
    from assay.models.llm.structured import chat_json

    schema = {"type": "object", "properties": {"same": {"type": "boolean"}}, "required": ["same"]}

    def judge(a: str, b: str) -> bool | None:
        prompt = ("Do these two answers make the same claim? Reply as JSON {\"same\": true} or {\"same\": false}.\n\n"
                  f"Answer 1: {a[:1500]}\n\nAnswer 2: {b[:1500]}")
        value, _ = chat_json(backend, prompt, schema, SamplingParams(temperature=0.0, max_tokens=16, seed=0))
        return value.get("same") if isinstance(value, dict) and isinstance(value.get("same"), bool) else None

    return judge


def read_rows(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Transcript rows from JSONL files (the ``dialogue`` export, or Assay records with that content)."""
    import orjson

    from assay.core.record import _restore_bytes

    rows = []
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    rows.append(_restore_bytes(orjson.loads(line)))
    return rows

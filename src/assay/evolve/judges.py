"""LLM-as-judge: single-answer grading on a rubric and pairwise comparison with position swap.

* ``judge_score``: the judge grades an instruction-following record's response from 1 to 10 against
  ``criteria``, ``samples`` times with different seeds. Signals: ``judge.score`` (mean), ``judge.score_std``,
  ``judge.samples`` (answers that could be parsed) and ``judge.disagreement`` = std / 4.5 (4.5 is the largest
  possible std on a 1-10 scale), which the active-learning router reads. ``min_score`` makes it filter too.
* ``judge_pairwise``: for a record holding two responses (``chosen``/``rejected``,
  ``response_a``/``response_b`` or ``responses: [a, b]``) the judge is asked twice, once with each response shown
  first. LLM judges prefer a position (Zheng et al., 2023, "Judging LLM-as-a-judge"); averaging over both orders
  cancels that bias exactly: a judge that always answers "the first one" ends at a tie, never at a winner.
  Signals: ``judge.pairwise.p_a`` (mean over both orders of 1 for a win of the record's first response, 0.5 for a
  tie, 0 for a loss), ``judge.pairwise.winner`` (``a``, ``b`` or ``tie``), ``judge.pairwise.consistent`` (1 when
  both orders name the same winner), ``judge.pairwise.first_position`` (how often the judge picked whatever was
  shown first: its position bias; over a run, counters ``picked_first`` / ``verdicts``), ``judge.disagreement``
  (1 - consistent), and for chosen/rejected records ``judge.pairwise.agrees`` (the judge prefers ``chosen``).

By default (``structured: true``) the judge answers in JSON (``{"reason": ..., "rating": 7}`` or
``{"reason": ..., "verdict": "A"}``) under a JSON schema, which the backends enforce by constrained decoding
(llama.cpp grammars, ``response_format`` on OpenAI-compatible servers): even a 135M-parameter local model then
always gives a usable verdict (without it, SmolLM2-135M answered the request instead of grading it). With
``structured: false`` verdicts are parsed from ``Rating: [[7]]`` / ``[[A]]``-style text, with fallbacks
(``Rating: 7``, ``7/10``, ``Response A is better``). An answer with no verdict is counted (``unparsed``) and left
out.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, StepContext, StepParams
from assay.evolve.common import EvolveLLMStep, EvolveParams, instruction_and_response
from assay.synthesize.backends.base import LLMRequest, SamplingParams
from assay.synthesize.common import clean_text

DEFAULT_CRITERIA = "helpfulness, correctness, relevance and clarity"

RATING_SCHEMA = {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 160},
                                                  "rating": {"type": "integer", "minimum": 1, "maximum": 10}},
                 "required": ["reason", "rating"]}
VERDICT_SCHEMA = {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 160},
                                                   "verdict": {"enum": ["A", "B", "C"]}},
                  "required": ["reason", "verdict"]}
FORMATS = {
    ("single", True): 'Answer in JSON with a short "reason" and the "rating" (an integer from 1 to 10).',
    ("single", False): "Give one or two sentences of reasons, then the grade written exactly like this: Rating: [[5]]",
    ("pair", True): 'Answer in JSON with a short "reason" and your "verdict": "A" if response A is better, "B" if '
                    'response B is better, "C" if they are equally good.',
    ("pair", False): "Give one or two sentences of reasons, then your verdict written exactly like this: [[A]] if "
                     "response A is better, [[B]] if response B is better, [[C]] if they are equally good.",
}

_RATING = [re.compile(r"\[\[\s*(10|[1-9])(?:\.\d+)?\s*\]\]"),
           re.compile(r"rating\s*[:=]?\s*\**\s*(10|[1-9])(?:\.\d+)?\b", re.I),
           re.compile(r"\b(10|[1-9])(?:\.\d+)?\s*(?:/|out of)\s*10\b", re.I)]
_VERDICT = [re.compile(r"\[\[\s*([ABC])\s*\]\]"),
            re.compile(r"\bverdict\s*[:=]?\s*\**\s*\[?([ABC])\]?\b"),
            re.compile(r"\b(?:response|assistant|answer)\s+([AB])\s+is\s+(?:better|superior|preferred)", re.I)]


def _json_field(text: str, key: str) -> Any:
    from assay.synthesize.backends.structured import NoJSON, extract_json

    try:
        value = extract_json(text or "")
    except NoJSON:
        return None
    return value.get(key) if isinstance(value, dict) else None


def parse_rating(text: str) -> int | None:
    """The 1-10 grade in a judge's answer (JSON ``rating`` or text), or ``None``."""
    v = _json_field(text, "rating")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 10:
        return int(v)
    for pattern in _RATING:
        found = pattern.findall(text or "")
        if found:
            return int(found[-1])
    return None


def parse_verdict(text: str) -> Literal["A", "B", "C"] | None:
    """``A``, ``B`` or ``C`` (tie) from a pairwise judge's answer (JSON ``verdict`` or text), or ``None``."""
    v = _json_field(text, "verdict")
    if isinstance(v, str) and v.strip().upper() in ("A", "B", "C"):
        return v.strip().upper()  # type: ignore[return-value]
    for pattern in _VERDICT:
        found = pattern.findall(text or "")
        if found:
            v = found[-1].upper()
            return v if v in ("A", "B", "C") else None  # type: ignore[return-value]
    if re.search(r"\btie\b|equally good", text or "", re.I):
        return "C"
    return None


def pair_of(record: Record) -> tuple[str, str, str, bool] | None:
    """``(instruction, first, second, is_chosen_rejected)`` of a record holding two responses."""
    c = record.content
    if not isinstance(c, dict):
        return None
    prompt = next((c[k] for k in ("prompt", "instruction", "question") if isinstance(c.get(k), str)), "")
    for ka, kb in (("chosen", "rejected"), ("response_a", "response_b"), ("a", "b")):
        a, b = c.get(ka), c.get(kb)
        if isinstance(a, list) and isinstance(b, list):  # chat-format chosen/rejected: the last assistant turn
            a = next((m.get("content") for m in reversed(a) if isinstance(m, dict) and m.get("role") == "assistant"), None)
            b = next((m.get("content") for m in reversed(b) if isinstance(m, dict) and m.get("role") == "assistant"), None)
        if isinstance(a, str) and isinstance(b, str):
            return prompt, a, b, ka == "chosen"
    responses = c.get("responses")
    if isinstance(responses, list) and len(responses) == 2 and all(isinstance(x, str) for x in responses):
        return prompt, responses[0], responses[1], False
    return None


@dataclass(frozen=True)
class PairVerdict:
    """The combined verdict of both presentation orders."""

    first_order: str | None  # verdict with the record's first response shown as A ("A", "B", "C")
    second_order: str | None  # verdict with it shown as B, mapped back to the record's labels
    p_a: float | None
    winner: str | None  # "a", "b", "tie"
    consistent: bool | None
    first_position: float | None  # share of parsed answers that picked whatever was shown first

    @staticmethod
    def combine(ab: str | None, ba_raw: str | None) -> "PairVerdict":
        """Combine the verdict on (a, b) with the raw verdict on (b, a)."""
        ba = {"A": "B", "B": "A", "C": "C"}.get(ba_raw or "", None)
        votes = [v for v in (ab, ba) if v is not None]
        if not votes:
            return PairVerdict(ab, ba, None, None, None, None)
        value = {"A": 1.0, "B": 0.0, "C": 0.5}
        p_a = sum(value[v] for v in votes) / len(votes)
        winner = "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"
        consistent = (ab == ba) if len(votes) == 2 else None
        raw = [v for v in (ab, ba_raw) if v is not None]
        first = sum(v == "A" for v in raw) / len(raw) if raw else None
        return PairVerdict(ab, ba, p_a, winner, consistent, first)


# -- single-answer grading ----------------------------------------------------------------------------------------
class JudgeScoreParams(EvolveParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {"judge_single": {"criteria", "instruction", "response",
                                                                 "answer_format"}}

    criteria: str = DEFAULT_CRITERIA
    #: JSON answers under a schema (constrained decoding); false: free text with "Rating: [[N]]"
    structured: bool = True
    #: judge answers per record (different seeds); their spread is the judge's disagreement
    samples: int = Field(3, ge=1, le=16)
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=128))
    #: drop (or flag) records graded below this; None grades without filtering
    min_score: float | None = Field(None, ge=1, le=10)
    action: Literal["drop", "flag"] = "drop"


class JudgeScore(EvolveLLMStep):
    """Grade each response 1-10 with an LLM judge (several samples: mean, spread); optionally drop low grades."""

    name = "judge_score"
    version = "1"
    Params: ClassVar[type[StepParams]] = JudgeScoreParams

    @property
    def p(self) -> JudgeScoreParams:
        assert isinstance(self.params, JudgeScoreParams)
        return self.params

    def grade(self, items: list[tuple[str, str]], keys: list[str]) -> list[list[int]]:
        """Parsed grades (one list per item, up to ``samples`` long) for (instruction, response) pairs."""
        p = self.p
        reqs = []
        for (instruction, response), key in zip(items, keys):
            prompt = self.templates["judge_single"].render(criteria=p.criteria, instruction=instruction,
                                                           response=response,
                                                           answer_format=FORMATS[("single", p.structured)])
            schema = RATING_SCHEMA if p.structured else None
            for s in range(p.samples):
                reqs.append(LLMRequest.chat(prompt, self.sampled(p.sampling, self.request_seed(key, "score", s)),
                                            json_schema=schema))
        answers = self.generate(reqs)
        out = []
        for i in range(len(items)):
            grades = [parse_rating(a.text) for a in answers[i * p.samples:(i + 1) * p.samples] if a.ok]
            parsed = [g for g in grades if g is not None]
            self.count("unparsed", p.samples - len(parsed))
            out.append(parsed)
        return out

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        self.ensure_backend(ctx)
        p = self.p
        todo, items = [], []
        for r in batch:
            ir = instruction_and_response(r, p.max_seed_chars)
            if ir is None:
                self.count("skipped:no_response")
                continue
            todo.append(r)
            items.append(ir)
        for r, grades in zip(todo, self.grade(items, [r.id for r in todo])):
            r.signals["judge.samples"] = len(grades)
            if not grades:
                continue
            std = statistics.pstdev(grades) if len(grades) > 1 else 0.0
            mean = sum(grades) / len(grades)
            r.signals.update({"judge.score": round(mean, 4), "judge.score_std": round(std, 4),
                              "judge.disagreement": round(min(1.0, std / 4.5), 4)})
            if p.min_score is not None and mean < p.min_score:
                if p.action == "flag":
                    r.signals[f"{self.name}.flag"] = "low_judge_score"
                    self.count("flagged:low_judge_score")
                else:
                    self.reject(r, "low_judge_score")
        self.report_usage()
        return batch


# -- pairwise -----------------------------------------------------------------------------------------------------
class JudgePairwiseParams(EvolveParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {"judge_pairwise": {"criteria", "instruction", "response_a",
                                                                   "response_b", "answer_format"}}

    criteria: str = DEFAULT_CRITERIA
    #: JSON answers under a schema (constrained decoding); false: free text with "[[A]]"
    structured: bool = True
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=128))
    #: which records to keep: all, those with consistent verdicts, or those where the judge prefers `chosen`
    require: Literal["none", "consistent", "agree"] = "none"
    action: Literal["drop", "flag"] = "drop"


class JudgePairwise(EvolveLLMStep):
    """Compare two responses with an LLM judge in both orders (position swap); write the combined verdict."""

    name = "judge_pairwise"
    version = "1"
    Params: ClassVar[type[StepParams]] = JudgePairwiseParams

    @property
    def p(self) -> JudgePairwiseParams:
        assert isinstance(self.params, JudgePairwiseParams)
        return self.params

    def compare(self, pairs: list[tuple[str, str, str]], keys: list[str]) -> list[PairVerdict]:
        """Verdicts for (instruction, a, b) triples, each asked in both orders."""
        p = self.p
        tpl = self.templates["judge_pairwise"]
        reqs = []
        for (instruction, a, b), key in zip(pairs, keys):
            for order, (x, y) in enumerate(((a, b), (b, a))):
                prompt = tpl.render(criteria=p.criteria, instruction=clean_text(instruction, p.max_seed_chars),
                                    response_a=clean_text(x, p.max_seed_chars),
                                    response_b=clean_text(y, p.max_seed_chars),
                                    answer_format=FORMATS[("pair", p.structured)])
                reqs.append(LLMRequest.chat(prompt, self.sampled(p.sampling, self.request_seed(key, "pair", order)),
                                            json_schema=VERDICT_SCHEMA if p.structured else None))
        answers = self.generate(reqs)
        verdicts = []
        for i in range(len(pairs)):
            ab = parse_verdict(answers[2 * i].text) if answers[2 * i].ok else None
            ba = parse_verdict(answers[2 * i + 1].text) if answers[2 * i + 1].ok else None
            self.count("unparsed", (ab is None) + (ba is None))
            raw = [v for v in (ab, ba) if v is not None]
            self.count("verdicts", len(raw))
            self.count("picked_first", sum(v == "A" for v in raw))
            verdicts.append(PairVerdict.combine(ab, ba))
        return verdicts

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        self.ensure_backend(ctx)
        p = self.p
        todo, pairs, chosen_rejected = [], [], []
        for r in batch:
            pair = pair_of(r)
            if pair is None:
                self.count("skipped:no_pair")
                continue
            todo.append(r)
            pairs.append(pair[:3])
            chosen_rejected.append(pair[3])
        for r, v, cr in zip(todo, self.compare(pairs, [r.id for r in todo]), chosen_rejected):
            if v.p_a is None:
                continue
            s = r.signals
            s["judge.pairwise.p_a"] = v.p_a
            s["judge.pairwise.winner"] = v.winner
            if v.consistent is not None:
                s["judge.pairwise.consistent"] = int(v.consistent)
                s["judge.disagreement"] = 0.0 if v.consistent else 1.0
                self.count("consistent" if v.consistent else "inconsistent")
            if v.first_position is not None:
                s["judge.pairwise.first_position"] = v.first_position
            if cr:
                s["judge.pairwise.agrees"] = int(v.winner == "a")
            reason = None
            if p.require == "consistent" and not v.consistent:
                reason = "inconsistent_judgement"
            elif p.require == "agree" and v.winner != "a":
                reason = "judge_disagrees"
            if reason is not None:
                if p.action == "flag":
                    s[f"{self.name}.flag"] = reason
                    self.count(f"flagged:{reason}")
                else:
                    self.reject(r, reason)
        self.report_usage()
        return batch


__all__ = ["JudgePairwise", "JudgeScore", "PairVerdict", "pair_of", "parse_rating", "parse_verdict"]

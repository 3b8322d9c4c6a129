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
always gives a usable verdict (without it, SmolLM2-135M answered the request instead of grading it). The schema is
sized to ``sampling.max_tokens``: the ``reason`` may hold at most ``max_tokens - 32`` characters (160 at most), so
a constrained answer ends before the token limit cuts it off. With ``structured: false`` verdicts are parsed from
``Rating: [[7]]`` / ``[[A]]``-style text, with fallbacks (``Rating: 7``, ``7/10``, ``Response A is better``).

A judge never fails open. An answer without a verdict gets ``repairs`` (default 1) repair turns: the judge sees
its answer and is asked again for the verdict (counters ``repair_prompts``, ``repaired``); what still has none is
counted (``unparsed``: answers; ``no_verdict``: records) and the record gets no score. ``on_unparsed`` says what
happens to such a record: ``drop`` (reason ``unparsed_verdict``), ``flag`` (kept with
``<step>.flag = unparsed_verdict``) or ``keep``. The default is ``flag``, except that a step that filters
(``min_score``, ``require``) applies its ``action`` (``drop`` by default): a record without a verdict never passes
a threshold, and ``on_unparsed: keep`` together with a threshold is a recipe error.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, TypeVar

from pydantic import Field, model_validator

from assay.core.record import Record
from assay.core.step import Batch, StepContext, StepParams
from assay.evolve.common import EvolveLLMStep, EvolveParams, instruction_and_response
from assay.models.llm.base import Completion, LLMRequest, SamplingParams
from assay.synthesize.common import clean_text

DEFAULT_CRITERIA = "helpfulness, correctness, relevance and clarity"

#: longest ``reason`` of a JSON verdict, in characters
REASON_CHARS = 160
#: tokens a JSON verdict needs besides its reason (``{"reason": "", "rating": 10}``, optional spaces, end of
#: text); a reason of n ASCII characters takes at most n tokens
JSON_FRAME_TOKENS = 32
#: the shortest reason worth asking for: below it, ``max_tokens`` is too small for a JSON verdict
MIN_REASON_CHARS = 16


def verdict_schema(kind: Literal["single", "pair"], max_tokens: int) -> dict[str, Any]:
    """The JSON schema of a judge's answer, with a ``reason`` short enough to end within ``max_tokens``.

    The grade is an ``enum`` rather than ``minimum``/``maximum``, which llama.cpp's grammars ignore (they let a
    small model answer ``"rating": 0`` or ``11``).
    """
    reason = {"type": "string", "maxLength": min(REASON_CHARS, max_tokens - JSON_FRAME_TOKENS)}
    if kind == "single":
        return {"type": "object", "properties": {"reason": reason,
                                                 "rating": {"type": "integer", "enum": list(range(1, 11))}},
                "required": ["reason", "rating"]}
    return {"type": "object", "properties": {"reason": reason, "verdict": {"enum": ["A", "B", "C"]}},
            "required": ["reason", "verdict"]}


FORMATS = {
    ("single", True): 'Answer in JSON with a short "reason" and the "rating" (an integer from 1 to 10).',
    ("single", False): "Give one or two sentences of reasons, then the grade written exactly like this: Rating: [[5]]",
    ("pair", True): 'Answer in JSON with a short "reason" and your "verdict": "A" if response A is better, "B" if '
                    'response B is better, "C" if they are equally good.',
    ("pair", False): "Give one or two sentences of reasons, then your verdict written exactly like this: [[A]] if "
                     "response A is better, [[B]] if response B is better, [[C]] if they are equally good.",
}

#: what a repair prompt says is missing
WHAT = {"single": "rating from 1 to 10", "pair": "verdict (A, B or C)"}

_RATING = [re.compile(r"\[\[\s*(10|[1-9])(?:\.\d+)?\s*\]\]"),
           re.compile(r"rating\s*[:=]?\s*\**\s*(10|[1-9])(?:\.\d+)?\b", re.I),
           re.compile(r"\b(10|[1-9])(?:\.\d+)?\s*(?:/|out of)\s*10\b", re.I)]
_VERDICT = [re.compile(r"\[\[\s*([ABC])\s*\]\]"),
            re.compile(r"\bverdict\s*[:=]?\s*\**\s*\[?([ABC])\]?\b"),
            re.compile(r"\b(?:response|assistant|answer)\s+([AB])\s+is\s+(?:better|superior|preferred)", re.I)]


def _json_field(text: str, key: str, whole: bool) -> Any:
    """``key`` of the JSON object that is the whole answer (``whole``: code fences allowed, nothing else) or, in a
    lenient reading, of the first JSON object found in it."""
    from assay.models.llm.structured import NoJSON, extract_json, strip_fences

    try:
        # strict=False: llama.cpp's JSON grammar lets a raw newline into a string, which is still a clear answer
        value = json.loads(strip_fences(text or ""), strict=False) if whole else extract_json(text or "")
    except (NoJSON, ValueError):
        return None
    return value.get(key) if isinstance(value, dict) else None


def parse_rating(text: str, structured: bool = False) -> int | None:
    """The 1-10 grade in a judge's answer, or ``None``.

    ``structured``: the answer must be the JSON object itself (what constrained decoding produces), so that a verdict
    merely quoted from the judged response, which a model repeating its prompt would echo, is never taken for the
    judge's. Otherwise the JSON ``rating`` anywhere in the answer, then text patterns (``Rating: [[7]]``, ``7/10``).
    """
    v = _json_field(text, "rating", whole=structured)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 10:
        return int(v)
    if structured:
        return None
    for pattern in _RATING:
        found = pattern.findall(text or "")
        if found:
            return int(found[-1])
    return None


def parse_verdict(text: str, structured: bool = False) -> Literal["A", "B", "C"] | None:
    """``A``, ``B`` or ``C`` (tie) from a pairwise judge's answer, or ``None`` (``structured``: as in
    :func:`parse_rating`, only the JSON object that is the whole answer)."""
    v = _json_field(text, "verdict", whole=structured)
    if isinstance(v, str) and v.strip().upper() in ("A", "B", "C"):
        return v.strip().upper()  # type: ignore[return-value]
    if structured:
        return None
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


# -- what both judges share ---------------------------------------------------------------------------------------
V = TypeVar("V")


class JudgeParams(EvolveParams):
    """Parameters both judges share."""

    criteria: str = DEFAULT_CRITERIA
    #: JSON answers under a schema (constrained decoding); false: free text with "Rating: [[N]]" / "[[A]]"
    structured: bool = True
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=192))
    #: repair turns for an answer without a verdict (the judge sees its answer and is asked again)
    repairs: int = Field(1, ge=0, le=3)
    #: a record left without a verdict: drop it, flag it (kept, `<step>.flag`), or keep it; default: `action`
    #: when the step filters (a threshold never passes a record without a verdict), else flag
    on_unparsed: Literal["drop", "flag", "keep"] | None = None
    action: Literal["drop", "flag"] = "drop"

    @property
    def filters(self) -> bool:
        """Whether the step keeps or drops records by their verdict (a threshold)."""
        return False

    @property
    def unparsed_policy(self) -> Literal["drop", "flag", "keep"]:
        if self.on_unparsed is not None:
            return self.on_unparsed
        return self.action if self.filters else "flag"

    @model_validator(mode="after")
    def _check_judge(self) -> "JudgeParams":
        if self.on_unparsed == "keep" and self.filters:
            raise ValueError("on_unparsed: keep would let a record without a verdict pass the filter; "
                             "use drop or flag")
        room = self.sampling.max_tokens - JSON_FRAME_TOKENS
        if self.structured and room < MIN_REASON_CHARS:
            raise ValueError(f"sampling.max_tokens: {self.sampling.max_tokens} leaves no room for a JSON verdict; "
                             f"give at least {JSON_FRAME_TOKENS + MIN_REASON_CHARS}")
        return self


class JudgeStep(EvolveLLMStep):
    """An LLM judge: asks, repairs answers without a verdict, and never lets a record without one pass."""

    Params: ClassVar[type[StepParams]] = JudgeParams
    kind: ClassVar[Literal["single", "pair"]] = "single"

    @property
    def jp(self) -> JudgeParams:
        assert isinstance(self.params, JudgeParams)
        return self.params

    def request(self, prompt: str, seed: int) -> LLMRequest:
        p = self.jp
        schema = verdict_schema(self.kind, p.sampling.max_tokens) if p.structured else None
        return LLMRequest.chat(prompt, self.sampled(p.sampling, seed), json_schema=schema)

    def ask(self, requests: list[LLMRequest], parse: Callable[[str], V | None]) -> list[V | None]:
        """The verdict of each request's answer (``None``: none), after up to ``repairs`` repair turns."""
        answers = self.generate(requests)
        verdicts = [parse(a.text) if a.ok else None for a in answers]
        for attempt in range(1, self.jp.repairs + 1):
            todo = [i for i, (a, v) in enumerate(zip(answers, verdicts)) if a.ok and v is None]
            if not todo:
                break
            self.count("repair_prompts", len(todo))
            repaired = self.generate([self.repair_request(requests[i], answers[i], attempt) for i in todo])
            for i, a in zip(todo, repaired):
                answers[i] = a
                verdicts[i] = parse(a.text) if a.ok else None
                self.count("repaired", int(verdicts[i] is not None))
        self.count("unparsed", sum(v is None for v in verdicts))
        return verdicts

    def repair_request(self, request: LLMRequest, answer: Completion, attempt: int) -> LLMRequest:
        """The conversation so far, the judge's answer, and a turn asking again for the verdict."""
        p = self.jp
        turn = self.templates["judge_repair"].render(what=WHAT[self.kind],
                                                      answer_format=FORMATS[(self.kind, p.structured)])
        messages = [*request.message_dicts(), {"role": "assistant", "content": answer.text[:2000]},
                    {"role": "user", "content": turn}]
        seed = request.params.seed
        params = request.params if seed is None else request.params.with_(seed=seed + attempt)
        return LLMRequest.chat(messages, params, json_schema=request.json_schema)

    def no_verdict(self, record: Record) -> None:
        """Apply ``on_unparsed`` to a record the judge gave no verdict for."""
        self.count("no_verdict")
        policy = self.jp.unparsed_policy
        if policy == "drop":
            self.reject(record, "unparsed_verdict")
        elif policy == "flag":
            record.signals[f"{self.name}.flag"] = "unparsed_verdict"
            self.count("flagged:unparsed_verdict")

    def fail(self, record: Record, reason: str) -> None:
        """Drop or flag (``action``) a record whose verdict failed the step's requirement."""
        if self.jp.action == "flag":
            record.signals[f"{self.name}.flag"] = reason
            self.count(f"flagged:{reason}")
        else:
            self.reject(record, reason)


# -- single-answer grading ----------------------------------------------------------------------------------------
class JudgeScoreParams(JudgeParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {
        "judge_single": {"criteria", "instruction", "response", "answer_format"},
        "judge_repair": {"what", "answer_format"}}

    #: judge answers per record (different seeds); their spread is the judge's disagreement
    samples: int = Field(3, ge=1, le=16)
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=192))
    #: drop (or flag) records graded below this; None grades without filtering
    min_score: float | None = Field(None, ge=1, le=10)

    @property
    def filters(self) -> bool:
        return self.min_score is not None


class JudgeScore(JudgeStep):
    """Grade each response 1-10 with an LLM judge (several samples: mean, spread); optionally drop low grades."""

    name = "judge_score"
    version = "2"
    Params: ClassVar[type[StepParams]] = JudgeScoreParams
    kind = "single"

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
            reqs.extend(self.request(prompt, self.request_seed(key, "score", s)) for s in range(p.samples))
        grades = self.ask(reqs, functools.partial(parse_rating, structured=p.structured))
        return [[g for g in grades[i * p.samples:(i + 1) * p.samples] if g is not None] for i in range(len(items))]

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
                self.no_verdict(r)
                continue
            std = statistics.pstdev(grades) if len(grades) > 1 else 0.0
            mean = sum(grades) / len(grades)
            r.signals.update({"judge.score": round(mean, 4), "judge.score_std": round(std, 4),
                              "judge.disagreement": round(min(1.0, std / 4.5), 4)})
            if p.min_score is not None and mean < p.min_score:
                self.fail(r, "low_judge_score")
        self.report_usage()
        return batch


# -- pairwise -----------------------------------------------------------------------------------------------------
class JudgePairwiseParams(JudgeParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {
        "judge_pairwise": {"criteria", "instruction", "response_a", "response_b", "answer_format"},
        "judge_repair": {"what", "answer_format"}}

    #: which records to keep: all, those with consistent verdicts, or those where the judge prefers `chosen`
    require: Literal["none", "consistent", "agree"] = "none"

    @property
    def filters(self) -> bool:
        return self.require != "none"


class JudgePairwise(JudgeStep):
    """Compare two responses with an LLM judge in both orders (position swap); write the combined verdict."""

    name = "judge_pairwise"
    version = "2"
    Params: ClassVar[type[StepParams]] = JudgePairwiseParams
    kind = "pair"

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
                reqs.append(self.request(prompt, self.request_seed(key, "pair", order)))
        answers = self.ask(reqs, functools.partial(parse_verdict, structured=p.structured))
        verdicts = []
        for i in range(len(pairs)):
            ab, ba = answers[2 * i], answers[2 * i + 1]
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
            s = r.signals
            if v.p_a is not None:  # at least one order gave a verdict: what it says is recorded
                s["judge.pairwise.p_a"] = v.p_a
                s["judge.pairwise.winner"] = v.winner
                if v.first_position is not None:
                    s["judge.pairwise.first_position"] = v.first_position
                if cr:
                    s["judge.pairwise.agrees"] = int(v.winner == "a")
            if v.consistent is None:  # a verdict is complete only with both orders (position bias cancelled)
                self.no_verdict(r)
                continue
            s["judge.pairwise.consistent"] = int(v.consistent)
            s["judge.disagreement"] = 0.0 if v.consistent else 1.0
            self.count("consistent" if v.consistent else "inconsistent")
            if p.require == "consistent" and not v.consistent:
                self.fail(r, "inconsistent_judgement")
            elif p.require == "agree" and v.winner != "a":
                self.fail(r, "judge_disagrees")
        self.report_usage()
        return batch


__all__ = ["JudgePairwise", "JudgeScore", "JudgeStep", "PairVerdict", "pair_of", "parse_rating", "parse_verdict",
           "verdict_schema"]

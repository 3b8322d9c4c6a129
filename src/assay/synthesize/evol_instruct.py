"""Evol-Instruct (WizardLM, Xu et al., 2023): make instructions harder (in depth) or more diverse (in breadth).

Each round, every instruction is rewritten by one method picked at random:

* in depth: ``add_constraints``, ``deepen``, ``concretize``, ``reasoning`` (more reasoning steps),
  ``complicate_input``;
* in breadth: ``breadth`` (a new instruction of the same domain, on a rarer topic).

The model then answers the evolved instruction, and an evolution is *eliminated* as in the paper when:

* it brings no information gain over its parent (``no_information_gain``): with ``equality_check: llm`` the model
  is asked whether the two are equal (the paper's check); with ``equality_check: tokens`` (the default, because a
  small local model judges at random) when the evolution adds fewer than ``min_new_words`` new content words;
* it copies words of the rewriting prompt, such as "rewritten instruction" or "given prompt" (``copied_prompt``);
* it is too short (``too_short``) or empty;
* the model finds it hard to answer: the response says "sorry" and is shorter than 80 words (``refusal``), or holds
  only punctuation and stop words (``empty_response``).

A surviving evolution becomes a new record (the instruction and its response) and is what the next round evolves;
after an eliminated one, the next round evolves the parent again (the paper returns failures to the pool).
Eliminated evolutions are emitted as dropped records with their reason.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar, Iterable, Iterator, Literal

from pydantic import Field, field_validator

from assay.core.step import Batch, StepContext, StepParams
from assay.models.llm.base import LLMRequest, SamplingParams
from assay.synthesize.common import SynthesisStep, SynthParams, check_subset, conversation, instruction_of

DEPTH_METHODS = ("add_constraints", "deepen", "concretize", "reasoning", "complicate_input")
METHODS = DEPTH_METHODS + ("breadth",)

#: phrases of the rewriting prompt that must not leak into an evolved instruction
PROMPT_LEAKS = ("given prompt", "rewritten prompt", "#given", "#rewritten", "created prompt", "given instruction",
                "rewritten instruction", "new instruction:", "original instruction", "original prompt", "#the given")
_ANSWER_CUES = re.compile(r"^\s*(?:rewritten instruction|new instruction|instruction)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other
our ours ourselves out over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself yourselves yes ok okay also may might must shall
""".split())


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def clean_evolution(text: str) -> str:
    """The evolved instruction in a rewriting answer: answer cue and wrapping quotes removed."""
    text = _ANSWER_CUES.sub("", text.strip())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1]
    return text.strip()


class EvolInstructParams(SynthParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {**{f"evol_{m}": {"instruction"} for m in METHODS},
                                                 "evol_equal": {"original", "evolved"}}

    #: evolution rounds per input instruction (the paper ran 4)
    rounds: int = Field(3, ge=1, le=16)
    #: methods to draw from, uniformly (any of add_constraints, deepen, concretize, reasoning, complicate_input,
    #: breadth)
    methods: list[str] = Field(default_factory=lambda: list(METHODS))
    #: how "no information gain" is judged: the model ("llm", as in the paper) or new content words ("tokens")
    equality_check: Literal["tokens", "llm"] = "tokens"
    min_new_words: int = Field(2, ge=0)
    #: evolved instructions shorter than this (in words) are eliminated
    min_words: int = Field(4, ge=1)
    #: a response that says "sorry" and is shorter than this (in words) is a refusal
    refusal_max_words: int = Field(80, ge=1)
    evolve_sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=160)
    response_sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=320)
    #: also emit the input records unchanged
    keep_input: bool = False

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        check_subset(methods, METHODS, "methods")
        return methods
    #: emit eliminated evolutions as dropped records (they go to rejected/ with their reason)
    emit_rejected: bool = True


class EvolInstruct(SynthesisStep):
    """Evol-Instruct: evolve instructions in depth and breadth, answer them, eliminate failed evolutions."""

    name = "evol_instruct"
    version = "1"
    Params: ClassVar[type[StepParams]] = EvolInstructParams

    @property
    def p(self) -> EvolInstructParams:
        assert isinstance(self.params, EvolInstructParams)
        return self.params

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        self.ensure_backend(ctx)
        try:
            for batch in batches:
                if self.p.keep_input:
                    yield list(batch)
                items = []
                for record in batch:
                    instruction = instruction_of(record, self.p.max_seed_chars)
                    if not instruction:
                        self.count("skipped:no_instruction")
                        continue
                    items.append((record.id, instruction))
                for round_no in range(self.p.rounds):
                    if not items:
                        break
                    produced, items = self._round(items, round_no)
                    if produced:
                        yield produced
        finally:
            self.report_usage()

    def _round(self, items: list[tuple[str, str]], round_no: int) -> tuple[Batch, list[tuple[str, str]]]:
        """Evolve each ``(parent id, instruction)`` once; returns the records made and what the next round evolves."""
        p = self.p
        methods = []
        requests = []
        for parent_id, instruction in items:
            rng = random.Random(f"{p.seed}:{parent_id}:{round_no}")
            method = rng.choice(p.methods)
            methods.append(method)
            prompt = self.templates[f"evol_{method}"].render(instruction=instruction)
            seed = self.request_seed("evolve", parent_id, round_no)
            requests.append(LLMRequest.chat(prompt, p.evolve_sampling.with_(seed=seed)))
        evolved = [clean_evolution(c.text) if c.ok else None for c in self.generate(requests)]

        reasons: list[str | None] = []
        for (_, original), method, text in zip(items, methods, evolved):
            reasons.append(self._instruction_reason(original, text, method))
        if p.equality_check == "llm":
            self._llm_equality(items, evolved, reasons, round_no)

        alive = [i for i, r in enumerate(reasons) if r is None]
        responses = self.generate([
            LLMRequest.chat(evolved[i] or "", p.response_sampling.with_(seed=self.request_seed("answer", items[i][0],
                                                                                               round_no)))
            for i in alive])
        answer: dict[int, str] = {}
        for i, completion in zip(alive, responses):
            if not completion.ok:
                reasons[i] = "llm_error"
                continue
            reasons[i] = self._response_reason(completion.text)
            answer[i] = completion.text.strip()

        out: Batch = []
        next_items: list[tuple[str, str]] = []
        for i, ((parent_id, original), method, text) in enumerate(zip(items, methods, evolved)):
            reason = reasons[i]
            self.count(f"method:{method}")
            if reason is not None:
                self.count(f"eliminated:{reason}")
                next_items.append((parent_id, original))  # evolve the parent again next round
                if not p.emit_rejected:
                    continue
            used = [f"evol_{method}"] + (["evol_equal"] if p.equality_check == "llm" else [])
            content = conversation(text or "", "", answer.get(i, ""))
            record = self.new_record(content, "conversation", [parent_id], round_no,
                                     self.synth_meta(used, method=method, round=round_no,
                                                     kind="breadth" if method == "breadth" else "depth"))
            if reason is not None:
                self.reject(record, reason)
            else:
                next_items.append((record.id, text or ""))
            out.append(record)
        self.count("evolved", sum(r is None for r in reasons))
        return out, next_items

    def _instruction_reason(self, original: str, evolved: str | None, method: str) -> str | None:
        if evolved is None:
            return "llm_error"
        if not evolved:
            return "empty"
        lowered = evolved.lower()
        if any(leak in lowered for leak in PROMPT_LEAKS):
            return "copied_prompt"
        if len(evolved.split()) < self.p.min_words:
            return "too_short"
        if evolved.strip().lower() == original.strip().lower():
            return "no_information_gain"
        if self.p.equality_check == "tokens" and len(content_words(evolved) - content_words(original)) < \
                self.p.min_new_words:
            return "no_information_gain"
        return None

    def _llm_equality(self, items: list[tuple[str, str]], evolved: list[str | None], reasons: list[str | None],
                      round_no: int) -> None:
        todo = [i for i, r in enumerate(reasons) if r is None]
        template = self.templates["evol_equal"]
        requests = [LLMRequest.chat(template.render(original=items[i][1], evolved=evolved[i] or ""),
                                    SamplingParams(temperature=0.0, max_tokens=4,
                                                   seed=self.request_seed("equal", items[i][0], round_no)))
                    for i in todo]
        for i, completion in zip(todo, self.generate(requests)):
            verdict = completion.text.strip().lower()
            if completion.ok and verdict.startswith("equal"):
                reasons[i] = "no_information_gain"

    def _response_reason(self, response: str) -> str | None:
        words = response.split()
        if "sorry" in response.lower() and len(words) < self.p.refusal_max_words:
            return "refusal"
        if not content_words(response):
            return "empty_response"
        return None

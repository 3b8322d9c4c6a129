"""Magpie (Xu et al., 2024, "Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with Nothing").

An aligned chat model is given only the start of its chat template up to where a user turn begins (the *pre-query
template*; for ChatML models such as SmolLM2: ``<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n``) as a raw
text completion. Having been trained on conversations, it writes a plausible user request and stops at its
end-of-turn token. The same model then answers that request through its chat template. With ``turns`` > 1 the
conversation so far is written back into the raw prompt (``turn_template``) and the model writes the next user turn.

Each input record asks for ``per_record`` conversations and may steer them with a system prompt (a text record, or
a ``system`` / ``system_prompt`` field); other records use ``system_prompt``. Instructions are dropped, counted by
reason, when they are empty, shorter than ``min_words`` words, cut off by ``instruction_sampling.max_tokens``
(``truncated``: the model never ended its turn), looping (more than ``max_repeat_frac`` of their characters in
repeated word 3-grams), an exact duplicate after normalisation (``duplicate``) or at least ``rouge_threshold``
ROUGE-L-similar to an instruction kept before (``similar``; within the shard, as Self-Instruct's filter). A
response that is empty or looping drops its conversation too.
"""

from __future__ import annotations

import re
import string
from typing import Any, ClassVar, Iterable, Iterator, Literal

from pydantic import Field, model_validator

from assay.core.record import Record
from assay.core.step import Batch, StepContext, StepParams
from assay.harvest.filters.gopher import repeated_ngram_chars
from assay.models.llm.base import Completion, LLMRequest, SamplingParams
from assay.synthesize.common import SynthesisStep, SynthParams, clean_text
from assay.synthesize.rouge import RougeLIndex

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

#: chat formats: the pre-query template (``$system``), the template of one finished turn that leads into the next
#: user turn (``$instruction``, ``$response``), and the strings that end a user turn
FORMATS: dict[str, dict[str, Any]] = {
    "chatml": {
        "pre_query_template": "<|im_start|>system\n$system<|im_end|>\n<|im_start|>user\n",
        "turn_template": "$instruction<|im_end|>\n<|im_start|>assistant\n$response<|im_end|>\n<|im_start|>user\n",
        "stop": ("<|im_end|>", "<|im_start|>"),
    },
    "llama3": {
        "pre_query_template": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n$system<|eot_id|>"
                              "<|start_header_id|>user<|end_header_id|>\n\n",
        "turn_template": "$instruction<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n$response<|eot_id|>"
                         "<|start_header_id|>user<|end_header_id|>\n\n",
        "stop": ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
    },
}
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The form two instructions are compared in for exact duplicates: lowercased, whitespace and end punctuation
    collapsed."""
    return _SPACES.sub(" ", text.lower()).strip().rstrip(".?!").strip()


def repeat_fraction(text: str) -> float:
    """Share of a text's word characters that lie in repeated word 3-grams (Gopher's measure): 0 for no loop."""
    words = text.split()
    chars = sum(map(len, words))
    return repeated_ngram_chars(words, 3) / chars if chars else 0.0


class MagpieParams(SynthParams):
    #: chat format of the model: its pre-query template, turn template and end-of-turn stops
    format: Literal["chatml", "llama3"] = "chatml"
    #: your own pre-query template (``$system`` is replaced by the system prompt); default: the format's
    pre_query_template: str | None = None
    #: your own template of a finished turn leading into the next user turn (``$instruction``, ``$response``)
    turn_template: str | None = None
    #: strings that end a user turn; default: the format's
    instruction_stop: tuple[str, ...] | None = None
    #: the system prompt of records that bring none (SmolLM2's own default)
    system_prompt: str = DEFAULT_SYSTEM
    #: conversations per input record
    per_record: int = Field(1, ge=1, le=1000)
    #: user turns per conversation (each answered)
    turns: int = Field(1, ge=1, le=8)
    min_words: int = Field(3, ge=1)
    max_repeat_frac: float = Field(0.3, gt=0.0, le=1.0)
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0)
    instruction_sampling: SamplingParams = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=96)
    response_sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=320)
    #: emit dropped conversations as rejected records (with their reason)
    emit_rejected: bool = True

    @model_validator(mode="after")
    def _check_chat_format(self) -> "MagpieParams":
        for name, needed in (("pre_query_template", {"system"}), ("turn_template", {"instruction", "response"})):
            text = getattr(self, name)
            if text is None:
                continue
            template = string.Template(text)
            if not template.is_valid() or not set(template.get_identifiers()) <= needed:
                raise ValueError(f"{name} may use only {sorted(needed)} as $placeholders (write $$ for a dollar)")
        return self

    @property
    def pre_query(self) -> str:
        return self.pre_query_template or FORMATS[self.format]["pre_query_template"]

    @property
    def turn(self) -> str:
        return self.turn_template or FORMATS[self.format]["turn_template"]

    @property
    def stops(self) -> tuple[str, ...]:
        return self.instruction_stop if self.instruction_stop is not None else FORMATS[self.format]["stop"]


def system_of(record: Record, default: str, max_chars: int) -> str:
    """The system prompt a record brings: its text, or its ``system`` / ``system_prompt`` field; else ``default``."""
    c = record.content
    if isinstance(c, str) and clean_text(c, max_chars):
        return clean_text(c, max_chars)
    if isinstance(c, dict):
        for key in ("system", "system_prompt"):
            text = clean_text(c.get(key), max_chars)
            if text:
                return text
    return default


class Magpie(SynthesisStep):
    """Magpie: a chat model writes user requests from its bare pre-query template, then answers them."""

    name = "magpie"
    version = "1"
    Params: ClassVar[type[StepParams]] = MagpieParams

    @property
    def p(self) -> MagpieParams:
        assert isinstance(self.params, MagpieParams)
        return self.params

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        self.ensure_backend(ctx)
        self._kept = RougeLIndex()
        self._seen: set[str] = set()
        try:
            for batch in batches:
                slots = [(r.id, system_of(r, self.p.system_prompt, self.p.max_seed_chars), k)
                         for r in batch for k in range(self.p.per_record)]
                out = self._conversations(slots)
                if out:
                    yield out
        finally:
            self.report_usage()

    def raw_prompt(self, system: str, history: list[tuple[str, str]]) -> str:
        """The raw completion prompt that makes the model write the next user turn after ``history``."""
        p = self.p
        prompt = string.Template(p.pre_query).substitute(system=system)
        for instruction, response in history:
            prompt += string.Template(p.turn).substitute(instruction=instruction, response=response)
        return prompt

    def _conversations(self, slots: list[tuple[str, str, int]]) -> Batch:
        """Write and answer up to ``turns`` user turns for each slot. A first turn that fails a filter drops the
        conversation (its reason); a later one ends it after the turns already complete (``ended_early:<reason>``)."""
        p = self.p
        histories: list[list[tuple[str, str]]] = [[] for _ in slots]
        reasons: list[str | None] = [None] * len(slots)
        active = set(range(len(slots)))
        for turn in range(p.turns):
            alive = sorted(active)
            if not alive:
                break
            asked = self.generate([
                LLMRequest.completion(self.raw_prompt(slots[i][1], histories[i]),
                                      p.instruction_sampling.with_(
                                          stop=p.stops, seed=self.request_seed("instruction", *slots[i], turn)))
                for i in alive])
            failed: dict[int, tuple[str, str]] = {}  # slot -> (reason, instruction)
            instructions: dict[int, str] = {}
            for i, completion in zip(alive, asked):
                reason, instructions[i] = self._instruction(completion)
                if reason is None and turn == 0:  # dedup of first turns: later turns follow their conversation
                    reason = self._novelty(instructions[i])
                if reason is not None:
                    failed[i] = (reason, instructions[i])
            todo = [i for i in alive if i not in failed]
            answers = self.generate([
                LLMRequest.chat(self._messages(slots[i][1], histories[i], instructions[i]),
                                p.response_sampling.with_(seed=self.request_seed("response", *slots[i], turn)))
                for i in todo])
            for i, completion in zip(todo, answers):
                response = completion.text.strip() if completion.ok else ""
                if not completion.ok:
                    failed[i] = ("llm_error", instructions[i])
                elif not response:
                    failed[i] = ("empty_response", instructions[i])
                elif repeat_fraction(response) > p.max_repeat_frac:
                    failed[i] = ("looping_response", instructions[i])
                else:
                    histories[i].append((instructions[i], response))
            for i, (reason, instruction) in failed.items():
                active.discard(i)
                if turn == 0:
                    reasons[i] = reason
                    histories[i].append((instruction, ""))  # what the rejected record shows
                else:
                    self.count(f"ended_early:{reason}")
        return self._records(slots, histories, reasons)

    def _instruction(self, completion: Completion) -> tuple[str | None, str]:
        """``(reason to drop or None, instruction)`` from the raw completion that wrote a user turn."""
        p = self.p
        if not completion.ok:
            return "llm_error", ""
        text = completion.text
        for stop in p.stops:  # servers that ignore `stop` (or return it) still end the turn here
            text = text.split(stop, 1)[0]
        text = clean_text(text, p.max_seed_chars)
        if not text:
            return "empty", text
        if completion.finish_reason == "length":
            return "truncated", text
        if len(text.split()) < p.min_words:
            return "too_short", text
        if repeat_fraction(text) > p.max_repeat_frac:
            return "looping", text
        return None, text

    def _novelty(self, instruction: str) -> str | None:
        key = normalize(instruction)
        if key in self._seen:
            return "duplicate"
        score, _ = self._kept.most_similar(instruction)
        if score >= self.p.rouge_threshold:
            return "similar"
        self._seen.add(key)
        self._kept.add(instruction)
        return None

    @staticmethod
    def _messages(system: str, history: list[tuple[str, str]], instruction: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": system}]
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return messages + [{"role": "user", "content": instruction}]

    def _records(self, slots: list[tuple[str, str, int]], histories: list[list[tuple[str, str]]],
                 reasons: list[str | None]) -> Batch:
        p = self.p
        out: Batch = []
        sampling = {"instruction": p.instruction_sampling.model_dump(mode="json"),
                    "response": p.response_sampling.model_dump(mode="json")}
        template_hash = self._template_hash()
        for (parent, system, k), history, reason in zip(slots, histories, reasons):
            complete = [(u, a) for u, a in history if u and a]
            messages = self._messages(system, complete, "")[:-1]
            first_user, first_answer = history[0] if history else ("", "")
            content = {"instruction": first_user, "input": "", "output": first_answer, "system": system,
                       "messages": messages}
            synth = self.synth_meta([], format=p.format, pre_query_template=template_hash, turns=len(complete),
                                    sampling=sampling)
            record = self.new_record(content, "conversation", [parent], k, synth,
                                     {"magpie.turns": len(complete)})
            if reason is not None:
                self.count(f"rejected:{reason}")
                if not p.emit_rejected:
                    continue
                self.reject(record, reason)
            else:
                self.count("conversations")
            out.append(record)
        return out

    def _template_hash(self) -> str:
        import xxhash

        p = self.p
        return xxhash.xxh3_64_hexdigest(f"{p.pre_query}\x00{p.turn}\x00{p.stops}".encode())[:12]

"""What the LLM-using evolve steps (critique/revise, execution feedback, judges) share with synthesis steps.

They reuse :class:`assay.synthesize.common.SynthesisStep` (backend from the recipe's ``backend:`` block, the SQLite
response cache, reproducible per-request seeds, ``llm.*`` usage counters); only their prompt templates live here,
in ``assay/evolve/templates/*.txt``, overridable per step with ``templates: {name: path}`` like synthesis prompts
(a step's Params declares its prompts in ``TEMPLATES``, name → placeholders, as synthesis steps do).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from pydantic import model_validator

from assay.core.record import Record
from assay.core.step import StepParams
from assay.models.llm.base import SamplingParams
from assay.synthesize.common import SynthesisStep, SynthParams, clean_text
from assay.synthesize.templates import PromptTemplate, load_template

__all__ = ["EvolveLLMStep", "EvolveParams", "load_prompt", "instruction_and_response"]


def load_prompt(name: str, overrides: Mapping[str, str] | None = None,
                placeholders: set[str] | None = None) -> PromptTemplate:
    """The evolve prompt ``name``: the user's file from ``overrides[name]``, else the built-in one."""
    return load_template(name, overrides, placeholders, package="assay.evolve")


class EvolveParams(SynthParams):
    """:class:`SynthParams` whose ``TEMPLATES`` name prompts of ``assay/evolve/templates`` (checked at load time)."""

    TEMPLATES: ClassVar[dict[str, set[str]]] = {}

    @model_validator(mode="after")
    def _check_templates(self) -> "EvolveParams":  # replaces SynthParams' check (which looks in assay.synthesize)
        unknown = set(self.templates) - set(self.TEMPLATES)
        if unknown:
            raise ValueError(f"unknown template name(s) {sorted(unknown)}; this step uses {sorted(self.TEMPLATES)}")
        self.load_templates()
        return self

    def load_templates(self) -> dict[str, PromptTemplate]:
        return {name: load_prompt(name, self.templates, placeholders)
                for name, placeholders in self.TEMPLATES.items()}


class EvolveLLMStep(SynthesisStep):
    """A :class:`SynthesisStep` whose Params is an :class:`EvolveParams`."""

    Params: ClassVar[type[StepParams]] = EvolveParams

    @staticmethod
    def sampled(params: SamplingParams, seed: int) -> SamplingParams:
        """``params`` with the request's own seed."""
        return params.with_(seed=seed)


def instruction_and_response(record: Record, max_chars: int = 4000) -> tuple[str, str] | None:
    """``(instruction, response)`` of an instruction-following record, or ``None`` if it has no response.

    Understands Alpaca-style fields (``instruction`` + ``input`` / ``output``), ``prompt`` / ``response``,
    ``question`` / ``answer`` and chat ``messages`` (the last user turn and the assistant turn after it).
    """
    c = record.content
    if not isinstance(c, dict):
        return None
    instruction = None
    for key in ("instruction", "prompt", "question", "problem"):
        if isinstance(c.get(key), str) and c[key].strip():
            instruction = c[key]
            if key == "instruction" and isinstance(c.get("input"), str) and c["input"].strip():
                instruction = f"{instruction}\n\n{c['input']}"
            break
    response = None
    for key in ("output", "response", "answer", "completion", "solution"):
        if isinstance(c.get(key), str) and c[key].strip():
            response = c[key]
            break
    messages = c.get("messages")
    if (instruction is None or response is None) and isinstance(messages, list):
        turns = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
        users = [i for i, m in enumerate(turns) if m.get("role") == "user"]
        if users:
            last = users[-1]
            after = [m["content"] for m in turns[last + 1:] if m.get("role") == "assistant"]
            if not after and last > 0:  # a conversation ending on a user turn: use the previous exchange
                prev_users = [i for i in users if i < last]
                if prev_users:
                    last = prev_users[-1]
                    after = [m["content"] for m in turns[last + 1:users[-1]] if m.get("role") == "assistant"]
            instruction = instruction or turns[last]["content"]
            response = response or (after[0] if after else None)
    if not instruction or not response:
        return None
    return clean_text(instruction, max_chars), clean_text(response, max_chars)

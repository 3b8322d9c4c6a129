"""Textbook synthesis (the "Textbooks Are All You Need" / Phi recipe): textbook-style passages and exercises over a
grid of topic × audience × style, so that a few topics give varied, didactic text.

Topics come from the step's ``topics`` parameter and/or from the input records (one topic per record: its text, or
its ``topic`` field). For each cell of the grid (``samples_per_cell`` times) the model writes a passage; a second
request writes ``exercises`` numbered exercises with answers about that passage. The record's content is the passage
followed by an ``## Exercises`` section; ``meta["synth"]`` names the topic, audience and style.

Passages shorter than ``min_passage_words`` are dropped (``too_short``), as are passages for which no exercise
could be parsed (``no_exercises``) when exercises are asked for.
"""

from __future__ import annotations

import itertools
import random
import re
from typing import ClassVar, Iterable, Iterator

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, StepContext, StepParams
from assay.models.llm.base import LLMRequest, SamplingParams
from assay.synthesize.common import SynthesisStep, SynthParams, clean_text

_NUMBERED = re.compile(r"(?:^|\n)[ \t]*(?:\*\*)?(?:exercise[ \t]*)?\d{1,2}[.):](?:\*\*)?[ \t]+", re.IGNORECASE)


def parse_exercises(text: str, limit: int) -> list[str]:
    """Numbered items (``1.``, ``2)``, ``Exercise 3:``) of an answer, at most ``limit``; text before the first
    number is ignored."""
    parts = _NUMBERED.split("\n" + text.strip())
    items = [p.strip() for p in parts[1:] if p.strip()]
    return items[:limit]


class TextbookParams(SynthParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {
        "textbook_passage": {"topic", "audience", "style"},
        "textbook_exercises": {"topic", "audience", "style", "passage", "count"},
    }

    topics: list[str] = Field(default_factory=list)
    audiences: list[str] = Field(default_factory=lambda: ["middle school students", "high school students",
                                                          "university students", "professionals"])
    styles: list[str] = Field(default_factory=lambda: ["textbook", "tutorial", "lecture notes"])
    samples_per_cell: int = Field(1, ge=1, le=64)
    #: at most this many passages (a random subset of the grid); None = the whole grid
    max_passages: int | None = Field(None, ge=1)
    #: exercises per passage (0: passages only)
    exercises: int = Field(3, ge=0, le=20)
    min_passage_words: int = Field(60, ge=1)
    #: grid cells sent to the model together (results are emitted after each group)
    cells_per_batch: int = Field(16, ge=1)
    passage_sampling: SamplingParams = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=512)
    exercise_sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=384)
    emit_rejected: bool = True


class Textbook(SynthesisStep):
    """Textbook-style passages with exercises over a topic × audience × style grid (Phi-style synthetic data)."""

    name = "textbook"
    version = "1"
    Params: ClassVar[type[StepParams]] = TextbookParams

    @property
    def p(self) -> TextbookParams:
        assert isinstance(self.params, TextbookParams)
        return self.params

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        self.ensure_backend(ctx)
        p = self.p
        topics: list[tuple[str, str | None]] = []  # (topic, id of the record it came from)
        if ctx.shard == 0:  # topics given in the recipe are generated once, not once per shard
            topics += [(clean_text(t, 300), None) for t in p.topics if clean_text(t, 300)]
        for batch in batches:
            for record in batch:
                topic = _topic_of(record)
                if topic:
                    topics.append((topic, record.id))
                else:
                    self.count("skipped:no_topic")
        cells = list(itertools.product(topics, p.audiences, p.styles, range(p.samples_per_cell)))
        if p.max_passages is not None and len(cells) > p.max_passages:
            rng = random.Random(f"{p.seed}:{ctx.shard}")
            keep = sorted(rng.sample(range(len(cells)), p.max_passages))
            cells = [cells[i] for i in keep]
        self.count("cells", len(cells))
        try:
            for start in range(0, len(cells), p.cells_per_batch):
                out = self._cells(cells[start:start + p.cells_per_batch])
                if out:
                    yield out
        finally:
            self.report_usage()

    def _cells(self, cells: list[tuple[tuple[str, str | None], str, str, int]]) -> Batch:
        p = self.p
        passage_tpl = self.templates["textbook_passage"]
        keys = [(topic, audience, style, sample) for (topic, _), audience, style, sample in cells]
        completions = self.generate([
            LLMRequest.chat(passage_tpl.render(topic=t, audience=a, style=s),
                            p.passage_sampling.with_(seed=self.request_seed("passage", t, a, s, k)))
            for t, a, s, k in keys])
        passages = [c.text.strip() if c.ok else None for c in completions]
        reasons: list[str | None] = []
        for text in passages:
            if text is None:
                reasons.append("llm_error")
            elif len(text.split()) < p.min_passage_words:
                reasons.append("too_short")
            else:
                reasons.append(None)
        exercises: dict[int, list[str]] = {}
        if p.exercises:
            todo = [i for i, r in enumerate(reasons) if r is None]
            ex_tpl = self.templates["textbook_exercises"]
            answers = self.generate([
                LLMRequest.chat(ex_tpl.render(topic=keys[i][0], audience=keys[i][1], style=keys[i][2],
                                              passage=passages[i] or "", count=p.exercises),
                                p.exercise_sampling.with_(seed=self.request_seed("exercises", *keys[i])))
                for i in todo])
            for i, completion in zip(todo, answers):
                items = parse_exercises(completion.text, p.exercises) if completion.ok else []
                if items:
                    exercises[i] = items
                else:
                    reasons[i] = "no_exercises"
        used = ["textbook_passage"] + (["textbook_exercises"] if p.exercises else [])
        out: Batch = []
        for i, (((topic, source_id), audience, style, sample), passage) in enumerate(zip(cells, passages)):
            text = f"# {topic}\n\n{passage or ''}"
            if i in exercises:
                text += "\n\n## Exercises\n\n" + "\n\n".join(f"{n + 1}. {e}" for n, e in enumerate(exercises[i]))
            parents = [source_id] if source_id else []
            synth = self.synth_meta(used, topic=topic, audience=audience, style=style)
            record = self.new_record(text, "text", parents, f"{topic}\x00{audience}\x00{style}\x00{sample}", synth,
                                     {"textbook.exercises": len(exercises.get(i, ()))})
            if reasons[i] is not None:
                self.count(f"rejected:{reasons[i]}")
                if not p.emit_rejected:
                    continue
                self.reject(record, reasons[i] or "")
            out.append(record)
        return out


def _topic_of(record: Record) -> str:
    c = record.content
    if isinstance(c, dict):
        for key in ("topic", "text", "title"):
            if isinstance(c.get(key), str):
                return clean_text(c[key], 300)
        return ""
    return clean_text(c, 300)

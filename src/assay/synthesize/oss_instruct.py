"""OSS-Instruct (Magicoder, Wei et al., 2024): programming problems and solutions inspired by real code.

For each input code record (e.g. code harvested from open-source repositories), a few random consecutive lines
(1 to 15 by default, as in the paper) are shown to the model as inspiration, and it writes a self-contained problem
and its solution. Three ways to ask (``mode``):

* ``sections`` (the paper's prompt): one answer with ``[Problem Description]`` and ``[Solution]`` sections;
* ``two_step``: one request for the problem, a second for its solution; for small models that cannot keep the
  two-section format (the bundled 135M model rarely does);
* ``json``: one answer as JSON ``{"problem", "solution"}`` (constrained decoding, validation and repair turns).

Input records whose content is not text, is empty, looks binary, or has no non-blank snippet are skipped and
counted (``skipped:*``); answers without both sections are emitted as dropped records (``no_problem``,
``no_solution``).
"""

from __future__ import annotations

import random
import re
from pathlib import PurePosixPath
from typing import ClassVar, Iterable, Iterator, Literal

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, StepContext, StepParams
from assay.models.llm.base import LLMRequest, SamplingParams
from assay.models.llm.structured import generate_json
from assay.synthesize.common import SynthesisStep, SynthParams, clean_text, conversation

EXTENSIONS = {".py": "python", ".js": "javascript", ".ts": "typescript", ".java": "java", ".c": "c", ".h": "c",
              ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".cs": "csharp", ".go": "go", ".rs": "rust", ".rb": "ruby",
              ".php": "php", ".swift": "swift", ".kt": "kotlin", ".scala": "scala", ".sh": "bash", ".sql": "sql",
              ".r": "r", ".jl": "julia", ".lua": "lua", ".hs": "haskell", ".pl": "perl", ".m": "objective-c"}

_PROBLEM = re.compile(r"\[\s*problem(?:\s+description|\s+statement)?\s*\]\s*:?"
                      r"|^[ \t]*(?:#+[ \t]*|\*\*)?problem(?:[ \t]+description|[ \t]+statement)?[ \t]*(?:\*\*)?[ \t]*:?"
                      r"[ \t]*(?:\*\*)?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_SOLUTION = re.compile(r"\[\s*solution\s*\]\s*:?"
                       r"|^[ \t]*(?:#+[ \t]*|\*\*)?solution[ \t]*(?:\*\*)?[ \t]*:?[ \t]*(?:\*\*)?[ \t]*$",
                       re.IGNORECASE | re.MULTILINE)

SCHEMA = {"type": "object", "properties": {"problem": {"type": "string", "minLength": 1},
                                           "solution": {"type": "string", "minLength": 1}},
          "required": ["problem", "solution"]}


def parse_sections(text: str) -> tuple[str, str]:
    """``(problem, solution)`` from an answer with ``[Problem Description]`` and ``[Solution]`` sections.

    A missing problem header is tolerated (the problem is then everything before the solution header); a missing
    solution header gives an empty solution.
    """
    problem_match = _PROBLEM.search(text)
    start = problem_match.end() if problem_match else 0
    solution_match = _SOLUTION.search(text, start)
    if solution_match is None:
        return text[start:].strip(), ""
    return text[start:solution_match.start()].strip(), text[solution_match.end():].strip()


def language_of(record: Record) -> str:
    """The programming language of a code record, from its meta (``language``, or a path's extension)."""
    for key in ("language", "lang"):
        value = record.meta.get(key)
        if isinstance(value, str) and value:
            return value.lower()
    for key in ("path", "file", "filename", "url", "source"):
        value = record.meta.get(key)
        if isinstance(value, str) and "." in value:
            lang = EXTENSIONS.get(PurePosixPath(value.split("?")[0]).suffix.lower())
            if lang:
                return lang
    return ""


class OssInstructParams(SynthParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {"oss_instruct": {"language", "snippet"},
                                                 "oss_instruct_json": {"language", "snippet"},
                                                 "oss_instruct_problem": {"language", "snippet"},
                                                 "oss_instruct_solution": {"language", "problem"}}

    #: problems to make from each code record (each from its own random snippet)
    samples_per_record: int = Field(1, ge=1, le=64)
    min_lines: int = Field(1, ge=1)
    max_lines: int = Field(15, ge=1)
    #: snippets are cut to this many characters
    max_snippet_chars: int = Field(2000, ge=50)
    #: problems shorter than this (in words) are rejected ("no_problem")
    min_problem_words: int = Field(8, ge=1)
    #: how to ask: "sections" (one answer, two sections), "two_step" (problem, then solution), "json"
    mode: Literal["sections", "two_step", "json"] = "sections"
    #: repair turns for invalid JSON in "json" mode
    max_repairs: int = Field(1, ge=0, le=5)
    sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=640)
    emit_rejected: bool = True


class OssInstruct(SynthesisStep):
    """OSS-Instruct: a programming problem and its solution inspired by a random snippet of each code record."""

    name = "oss_instruct"
    version = "1"
    Params: ClassVar[type[StepParams]] = OssInstructParams

    @property
    def p(self) -> OssInstructParams:
        assert isinstance(self.params, OssInstructParams)
        return self.params

    def snippet(self, record: Record, sample: int) -> tuple[str, int, int] | str:
        """``(snippet, first line, last line)`` (1-based, inclusive), or the reason the record cannot give one."""
        code = record.content
        if not isinstance(code, str):
            return "not_text"
        if "\x00" in code[:8192]:
            return "binary"
        lines = code.splitlines()
        if not any(line.strip() for line in lines):
            return "empty"
        rng = random.Random(f"{self.p.seed}:{record.id}:{sample}")
        lo, hi = self.p.min_lines, max(self.p.min_lines, self.p.max_lines)
        for _ in range(8):  # a random window may land on blank lines only; try a few
            size = min(len(lines), rng.randint(lo, hi))
            start = rng.randint(0, len(lines) - size)
            window = lines[start:start + size]
            if any(line.strip() for line in window):
                text = clean_text("\n".join(window), self.p.max_snippet_chars)
                if text:
                    return text, start + 1, start + size
        return "empty"

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        return self.map_batches(batches, ctx, self._batch)

    def _batch(self, batch: Batch) -> Batch:
        p = self.p
        jobs: list[tuple[Record, int, str, str, tuple[int, int]]] = []
        for record in batch:
            for sample in range(p.samples_per_record):
                got = self.snippet(record, sample)
                if isinstance(got, str):
                    self.count(f"skipped:{got}")
                    break
                snippet, first, last = got
                jobs.append((record, sample, snippet, language_of(record), (first, last)))
        if not jobs:
            return []
        template_name = {"sections": "oss_instruct", "json": "oss_instruct_json",
                         "two_step": "oss_instruct_problem"}[p.mode]
        used = [template_name] + (["oss_instruct_solution"] if p.mode == "two_step" else [])
        template = self.templates[template_name]
        prompts = [template.render(language=lang, snippet=snip) for _, _, snip, lang, _ in jobs]
        seeds = [self.request_seed(r.id, sample) for r, sample, _, _, _ in jobs]
        pairs: list[tuple[str, str] | None]
        if p.mode == "json":
            assert self.llm is not None
            answers = generate_json(self.llm, [[{"role": "user", "content": prompt}] for prompt in prompts], SCHEMA,
                                    [p.sampling.with_(seed=seed) for seed in seeds], max_repairs=p.max_repairs,
                                    send=self.generate)
            pairs = [(value["problem"].strip(), value["solution"].strip()) if value is not None else None
                     for value, _ in answers]
            self.count("json_invalid", sum(value is None for value, _ in answers))
        elif p.mode == "two_step":
            pairs = self._two_step(jobs, prompts, seeds)
        else:
            completions = self.generate([LLMRequest.chat(prompt, p.sampling.with_(seed=seed))
                                         for prompt, seed in zip(prompts, seeds)])
            pairs = [parse_sections(c.text) if c.ok else None for c in completions]
        out: Batch = []
        for (record, sample, snippet, lang, lines), pair in zip(jobs, pairs):
            problem, solution = pair if pair is not None else ("", "")
            content = conversation(problem, "", solution)
            content["snippet"] = snippet
            synth = self.synth_meta(used, language=lang, snippet_lines=list(lines))
            new = self.new_record(content, "conversation", [record.id], sample, synth)
            reason = None
            if pair is None:
                reason = "llm_error"
            elif len(problem.split()) < p.min_problem_words:
                reason = "no_problem"
            elif not solution:
                reason = "no_solution"
            if reason is not None:
                self.count(f"rejected:{reason}")
                if not p.emit_rejected:
                    continue
                self.reject(new, reason)
            out.append(new)
        return out

    def _two_step(self, jobs: list[tuple[Record, int, str, str, tuple[int, int]]], prompts: list[str],
                  seeds: list[int]) -> list[tuple[str, str] | None]:
        """Ask for each problem, then for the solutions of the problems that came back long enough."""
        p = self.p
        problems = [c.text.strip() if c.ok else None for c in self.generate(
            [LLMRequest.chat(prompt, p.sampling.with_(seed=seed)) for prompt, seed in zip(prompts, seeds)])]
        todo = [i for i, text in enumerate(problems) if text and len(text.split()) >= p.min_problem_words]
        solver = self.templates["oss_instruct_solution"]
        solutions = self.generate([
            LLMRequest.chat(solver.render(language=jobs[i][3], problem=problems[i] or ""),
                            p.sampling.with_(seed=seeds[i] + 1)) for i in todo])
        pairs: list[tuple[str, str] | None] = [(text, "") if text is not None else None for text in problems]
        for i, completion in zip(todo, solutions):
            pairs[i] = (problems[i] or "", completion.text.strip() if completion.ok else "")
        return pairs

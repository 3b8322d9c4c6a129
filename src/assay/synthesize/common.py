"""What every synthesis step shares: the backend and cache, templates, reproducible request seeds, lineage of the
records it makes, and usage accounting in the run stats.

A synthesis step is a generator (:meth:`Step.process`): seed records in, new records out. Each new record gets
``meta["parents"]`` (ids of the records it came from), an id derived from those parents
(:func:`assay.core.record.derive_id`), and ``meta["synth"]`` (technique, backend, model, hashes of the prompt
templates used); the pipeline appends the step's own lineage entry.

Reproducibility is what makes a crashed run cheap to resume: every random choice comes from a generator seeded by
the step's ``seed``, and every request carries a seed derived from the step's ``seed`` and the request's place in
the run, so a rerun sends the very same requests, which the response cache (``<run_dir>/llm-cache.sqlite`` by
default) answers without calling the model.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import xxhash
from pydantic import Field, field_validator, model_validator

from assay.core.errors import AssayError
from assay.core.record import Record, derive_id
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.models.llm import BackendConfig, BackendError, LLMBackend, LLMRequest, cached, shared_backend
from assay.models.llm.base import Completion
from assay.synthesize.templates import PromptTemplate, load_template

CACHE_FILE = "llm-cache.sqlite"


class SynthesisError(AssayError):
    """A synthesis step made nothing because the model never answered usably (the run stops, non-zero exit)."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_subset(values: list[str], allowed: Any, what: str) -> None:
    """A recipe list that must name some of ``allowed`` and nothing else (a pydantic validator raises this)."""
    unknown = set(values) - set(allowed)
    if unknown or not values:
        raise ValueError(f"{what} must be a non-empty subset of {list(allowed)}; unknown: {sorted(unknown)}")


class SynthParams(StepParams):
    """Parameters shared by every synthesis step."""

    #: which model answers (default: the bundled local SmolLM2 model)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    #: response cache file; default ``<run dir>/llm-cache.sqlite`` (none when used as a library without a run
    #: dir); ``off`` disables caching
    cache: str | None = None
    #: seeds every random choice and every request, so reruns repeat the same requests (and hit the cache)
    seed: int = 0
    #: template name → path of your own version of that prompt (see docs/synthesize.md for the names)
    templates: dict[str, str] = Field(default_factory=dict)
    #: longest seed text put into a prompt, in characters (longer ones are cut)
    max_seed_chars: int = Field(4000, ge=100)

    #: the step's templates: name → the placeholders it may use (set by each step's Params)
    TEMPLATES: ClassVar[dict[str, set[str]]] = {}

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, value: Any) -> Any:
        """YAML reads ``cache: off`` (and ``no``, ``false``) as false, ``on`` as true: accept the switch."""
        if isinstance(value, bool):
            return None if value else "off"
        return value

    @model_validator(mode="after")
    def _check_templates(self) -> "SynthParams":
        """Unknown template names, unreadable files and bad placeholders are recipe errors, found at load time."""
        unknown = set(self.templates) - set(self.TEMPLATES)
        if unknown:
            raise ValueError(f"unknown template name(s) {sorted(unknown)}; "
                             f"this step uses {sorted(self.TEMPLATES)}")
        self.load_templates()
        return self

    def load_templates(self) -> dict[str, PromptTemplate]:
        return {name: load_template(name, self.templates, placeholders)
                for name, placeholders in self.TEMPLATES.items()}


def clean_text(text: Any, max_chars: int) -> str:
    """A prompt-safe version of ``text``: str, valid UTF-8 (lone surrogates replaced), no control characters, cut
    to ``max_chars``."""
    if not isinstance(text, str):
        return ""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL.sub(" ", text)
    return text[:max_chars].strip()


class SynthesisStep(Step):
    """Base class of synthesis steps; their Params (a :class:`SynthParams`) declare the templates they use."""

    Params: ClassVar[type[StepParams]] = SynthParams

    def __init__(self, params: StepParams | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        assert isinstance(p, SynthParams)
        self.templates: dict[str, PromptTemplate] = p.load_templates()
        self.llm: LLMBackend | None = None
        self._usage_reported: dict[str, float] = {}
        self._failed_batches = 0

    # -- set-up ------------------------------------------------------------------------------------------------
    def cache_path(self, ctx: StepContext) -> Path | None:
        p = self.params
        assert isinstance(p, SynthParams)
        if p.cache is not None:
            return None if p.cache.lower() in ("off", "none", "false", "") else Path(p.cache).expanduser()
        return ctx.run_dir / CACHE_FILE if ctx.run_dir is not None else None

    def setup(self, ctx: StepContext) -> None:
        self.ensure_backend(ctx)

    def ensure_backend(self, ctx: StepContext) -> LLMBackend:
        if self.llm is None:
            p = self.params
            assert isinstance(p, SynthParams)
            self.llm = cached(shared_backend(p.backend), self.cache_path(ctx))
        return self.llm

    def use_backend(self, backend: LLMBackend) -> None:
        """Use ``backend`` as is (library use and tests: e.g. an already-built, already-cached backend)."""
        self.llm = backend

    # -- requests ----------------------------------------------------------------------------------------------
    def request_seed(self, *parts: Any) -> int:
        """A reproducible per-request sampling seed from the step's seed and the request's place in the run."""
        p = self.params
        assert isinstance(p, SynthParams)
        return xxhash.xxh3_64_intdigest("\x00".join(str(x) for x in (p.seed, self.name, *parts)).encode()) % (2**31)

    #: this many batches in a row in which every request failed for good (not an outage) means the backend cannot
    #: work (a model that fails every prompt): stop the step
    MAX_FAILED_BATCHES: ClassVar[int] = 3
    #: first and longest pause between the attempts to reach a server that answered nothing, in seconds
    OUTAGE_PAUSE: ClassVar[tuple[float, float]] = (1.0, 15.0)

    def generate(self, requests: list[LLMRequest]) -> list[Completion]:
        """Send ``requests``; failed ones come back with ``error`` set (counted as ``llm.failed_requests``) and the
        step goes on without them.

        A batch of which *no* request got through because the server was unreachable or overloaded (after the
        backend's own retries) is an outage: the batch is sent again after growing pauses (``llm.outage_waits``,
        ``llm.outage_seconds``) for up to ``backend.max_outage`` seconds, then :class:`BackendError` stops the run
        with one line (a rerun resumes from the cache). Several batches in a row that failed entirely for other
        reasons (a model that fails every prompt) raise :class:`BackendError` too, rather than spending the whole
        request budget on a backend that cannot work.
        """
        assert self.llm is not None, "call setup(ctx) or ensure_backend(ctx) first"
        if not requests:
            return []
        out = self._wait_out_outage(requests, self.llm.generate(requests))
        failed = sum(not c.ok for c in out)
        if failed:
            self.count("llm.failed_requests", failed)
        if failed == len(out):
            self._failed_batches += 1
            if self._failed_batches >= self.MAX_FAILED_BATCHES:
                raise BackendError(f"{self.name}: every request of the last {self._failed_batches} batches failed; "
                                   f"last error: {out[-1].error}")
        else:
            self._failed_batches = 0
        return out

    def _wait_out_outage(self, requests: list[LLMRequest], out: list[Completion]) -> list[Completion]:
        """``out``, or the answers to ``requests`` sent again once the server is back (see :meth:`generate`)."""
        if not all(not c.ok and c.retryable for c in out):
            return out
        p = self.params
        assert isinstance(p, SynthParams) and self.llm is not None
        started = time.monotonic()
        pause, longest = self.OUTAGE_PAUSE
        while all(not c.ok and c.retryable for c in out):
            waited = time.monotonic() - started
            if waited >= p.backend.max_outage:
                raise BackendError(f"{self.name}: the model server answered nothing for {waited:.0f} s "
                                   f"(backend.max_outage: {p.backend.max_outage:g}); last error: {out[-1].error}. "
                                   "Run the same command again to resume.")
            pause_now = min(pause, p.backend.max_outage - waited)
            self.count("llm.outage_waits")
            time.sleep(pause_now)
            pause = min(longest, pause * 2)
            out = self.llm.generate(requests)
        self.count("llm.outage_seconds", round(time.monotonic() - started, 1))
        return out

    # -- records -----------------------------------------------------------------------------------------------
    def synth_meta(self, template_names: list[str], **extra: Any) -> dict[str, Any]:
        assert self.llm is not None
        return {"technique": self.name, **self.llm.describe(),
                "templates": {n: self.templates[n].hash for n in template_names}, **extra}

    def new_record(self, content: Any, modality: str, parents: list[str], index: Any, synth: dict[str, Any],
                   signals: dict[str, Any] | None = None) -> Record:
        rid = derive_id(*parents, self.name, index)
        return Record(rid, content, modality, meta={"parents": list(parents), "synth": synth},
                      signals=signals or {})

    def map_batches(self, batches: Iterable[Batch], ctx: StepContext,
                    make: Callable[[Batch], Batch]) -> Iterator[Batch]:
        """The usual ``process`` of a synthesis step: the backend made ready, ``make`` applied to each input batch
        (its non-empty results passed on), the backend's spending counted even when the run stops half-way."""
        self.ensure_backend(ctx)
        try:
            for batch in batches:
                out = make(batch)
                if out:
                    yield out
        finally:
            self.report_usage()

    # -- accounting --------------------------------------------------------------------------------------------
    def report_usage(self) -> None:
        """Add what the backend spent since the last report to this step's counters (``llm.*``)."""
        if self.llm is None:
            return
        now = self.llm.usage.snapshot()
        for key in ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "errors", "retries", "cost_usd"):
            delta = now[key] - self._usage_reported.get(key, 0)
            if delta:
                self.count(f"llm.{key}", round(delta, 6) if key == "cost_usd" else int(delta))
        self._usage_reported = now


def conversation(instruction: str, input_text: str, output: str) -> dict[str, Any]:
    """The content of an instruction-following record: Alpaca-style fields plus chat ``messages``."""
    user = instruction if not input_text else f"{instruction}\n\n{input_text}"
    return {"instruction": instruction, "input": input_text, "output": output,
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}


def instruction_of(record: Record, max_chars: int) -> str:
    """The instruction a seed record holds: ``content`` itself for text, else the ``instruction`` / ``prompt``
    field or the first user message of a dict."""
    c = record.content
    if isinstance(c, str):
        return clean_text(c, max_chars)
    if isinstance(c, dict):
        for key in ("instruction", "prompt", "question", "problem", "text"):
            if isinstance(c.get(key), str) and c[key].strip():
                return clean_text(c[key], max_chars)
        messages = c.get("messages")
        if isinstance(messages, list):
            for m in messages:
                if isinstance(m, dict) and m.get("role") == "user":
                    return clean_text(m.get("content"), max_chars)
    return ""

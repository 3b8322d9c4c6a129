"""The one small interface every LLM backend implements (local llama.cpp, OpenAI-compatible HTTP, ...).

A backend answers a *batch* of :class:`LLMRequest` (chat or plain completion, each with its own
:class:`SamplingParams` and optional JSON schema) with one :class:`Completion` per request, in order. Batching is the
only entry point that matters for throughput: the HTTP backend sends a batch concurrently, the local backend runs it
in sequence. The convenience methods (:meth:`LLMBackend.chat`, :meth:`LLMBackend.complete`,
:meth:`LLMBackend.chat_json`) are thin wrappers.

A request that fails after the backend's own retries does not raise: its completion carries ``error`` so a synthesis
step can count it and go on with the rest of the batch. Only configuration errors that doom every request (bad API
key, unknown model) raise :class:`BackendError`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


class BackendError(RuntimeError):
    """A backend cannot serve any request (misconfiguration, missing model, authentication)."""


class SamplingParams(BaseModel):
    """How to sample one completion. Names and meanings follow the OpenAI API so that every backend agrees.

    ``seed`` makes a request reproducible on backends that honour it (llama.cpp, vLLM); synthesis steps derive one
    seed per request from their own ``seed`` so reruns send the very same requests (and hit the cache).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)

    def with_(self, **changes: Any) -> "SamplingParams":
        """A copy with some fields changed (validated)."""
        return SamplingParams(**{**self.model_dump(), **changes})


Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class LLMRequest:
    """One prompt to answer: ``messages`` for chat models, ``prompt`` for plain text completion (exactly one)."""

    params: SamplingParams
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...): hashable and immutable
    prompt: str | None = None
    #: a JSON schema the answer must follow (constrained decoding where the backend supports it)
    json_schema: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("an LLMRequest needs exactly one of `messages` and `prompt`")

    @classmethod
    def chat(cls, messages: list[Message] | str, params: SamplingParams,
             json_schema: dict[str, Any] | None = None) -> "LLMRequest":
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return cls(params=params, messages=tuple((m["role"], m["content"]) for m in messages),
                   json_schema=json_schema)

    @classmethod
    def completion(cls, prompt: str, params: SamplingParams) -> "LLMRequest":
        return cls(params=params, prompt=prompt)

    @property
    def kind(self) -> Literal["chat", "completion"]:
        return "chat" if self.messages is not None else "completion"

    def message_dicts(self) -> list[Message]:
        return [{"role": r, "content": c} for r, c in (self.messages or ())]

    def canonical(self) -> bytes:
        """A stable byte string of everything that determines the answer (for cache keys)."""
        return orjson.dumps({
            "kind": self.kind,
            "messages": self.messages,
            "prompt": self.prompt,
            "params": self.params.model_dump(mode="json"),
            "json_schema": self.json_schema,
        }, option=orjson.OPT_SORT_KEYS)


@dataclass
class Completion:
    """The answer to one :class:`LLMRequest`."""

    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    cached: bool = False  # served from the response cache (no backend call)
    error: str | None = None  # why the request failed after retries (then ``text`` is "")
    cost_usd: float = 0.0  # what this call cost (0 when cached or free)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "model": self.model}

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> "Completion":
        return cls(text=d["text"], finish_reason=d.get("finish_reason", "stop"),
                   prompt_tokens=int(d.get("prompt_tokens", 0)), completion_tokens=int(d.get("completion_tokens", 0)),
                   model=d.get("model", ""), cached=cached)

    @classmethod
    def failed(cls, error: str, model: str = "") -> "Completion":
        return cls(text="", finish_reason="error", model=model, error=error)


OnComplete = Callable[[int, Completion], None]


@dataclass
class Usage:
    """What a backend has spent so far: calls, tokens, money, failures. Thread-safe to update."""

    calls: int = 0  # requests actually sent to the model (cache hits excluded)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retries: int = 0
    errors: int = 0
    seconds: float = 0.0  # wall time spent inside the model / server
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for key, value in amounts.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"calls": self.calls, "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd, 6),
                    "retries": self.retries, "errors": self.errors, "seconds": round(self.seconds, 3)}


class LLMBackend(ABC):
    """Base class of backends. Subclasses implement :meth:`generate` and set :attr:`kind` and :attr:`model`."""

    kind: str = ""
    model: str = ""

    def __init__(self) -> None:
        self.usage = Usage()

    # -- identity --------------------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Which model answers: part of every cache key (``kind:model``)."""
        return f"{self.kind}:{self.model}"

    def describe(self) -> dict[str, Any]:
        """What to record in a synthetic record's ``meta["synth"]`` about the backend."""
        return {"backend": self.kind, "model": self.model}

    # -- work ------------------------------------------------------------------------------------------------
    @abstractmethod
    def generate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        """Answer every request; one :class:`Completion` per request, in the same order.

        ``on_complete(i, completion)`` is called as soon as request ``i`` is answered (in completion order, possibly
        from another thread): the response cache uses it to persist each answer before the batch ends.
        """

    def close(self) -> None:
        """Release connections, threads, model memory."""

    def __enter__(self) -> "LLMBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- conveniences ----------------------------------------------------------------------------------------
    def chat(self, messages: list[Message] | str, params: SamplingParams | None = None) -> Completion:
        return self._one(LLMRequest.chat(messages, params or SamplingParams()))

    def complete(self, prompt: str, params: SamplingParams | None = None) -> Completion:
        return self._one(LLMRequest.completion(prompt, params or SamplingParams()))

    def chat_batch(self, conversations: list[list[Message] | str], params: SamplingParams | None = None
                   ) -> list[Completion]:
        p = params or SamplingParams()
        return self.generate([LLMRequest.chat(m, p) for m in conversations])

    def complete_batch(self, prompts: list[str], params: SamplingParams | None = None) -> list[Completion]:
        p = params or SamplingParams()
        return self.generate([LLMRequest.completion(x, p) for x in prompts])

    def chat_json(self, messages: list[Message] | str, schema: dict[str, Any], params: SamplingParams | None = None,
                  max_repairs: int = 2) -> tuple[Any, Completion]:
        """A JSON answer that validates against ``schema`` (see :mod:`assay.synthesize.backends.structured`)."""
        from assay.synthesize.backends.structured import chat_json

        return chat_json(self, messages, schema, params or SamplingParams(), max_repairs=max_repairs)

    def _one(self, request: LLMRequest) -> Completion:
        (completion,) = self.generate([request])
        if completion.error is not None:
            raise BackendError(completion.error)
        return completion

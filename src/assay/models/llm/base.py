"""The one small interface every LLM backend implements (local llama.cpp, OpenAI-compatible HTTP, ...).

A backend answers a *batch* of :class:`LLMRequest` (chat or plain completion, each with its own
:class:`SamplingParams` and optional JSON schema) with one :class:`Completion` per request, in order. Batching is the
only entry point that matters for throughput: the HTTP backend sends a batch concurrently, the local backend runs it
in sequence. The convenience methods (:meth:`LLMBackend.chat`, :meth:`LLMBackend.complete`,
:meth:`LLMBackend.chat_json`) are thin wrappers.

A request that fails after the backend's own retries does not raise: its completion carries ``error`` (and
``retryable`` when the server was unreachable or overloaded, so that asking again later may succeed) so a synthesis
step can count it and go on with the rest of the batch. Only configuration errors that doom every request (bad API
key, unknown model) raise :class:`BackendError`, an :class:`~assay.core.errors.AssayError` that the CLI reports in
one line.

A chat message's content is a string, or (for vision-language models) a list of OpenAI-style content parts:
``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}``.
Inside a request, images are held as :class:`ImagePart` (the decoded bytes), so the cache key hashes the image bytes
rather than carrying a base64 blob; :meth:`LLMRequest.message_dicts` turns them back into data URLs for the wire.
"""

from __future__ import annotations

import base64
import binascii
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import orjson
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from assay.core.errors import AssayError


class BackendError(RuntimeError, AssayError):
    """A backend cannot serve any request (misconfiguration, missing model, authentication, a long outage)."""


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


Message = dict[str, Any]  # {"role": "system"|"user"|"assistant", "content": "..." or [content parts]}


@dataclass(frozen=True)
class ImagePart:
    """An image inside a chat message: encoded bytes (sent as a ``data:`` URL) or a URL the server fetches itself.

    ``detail`` is OpenAI's resolution hint (``"low"``, ``"high"``, ``"auto"``); ``None`` sends none.
    """

    data: bytes | None = None
    mime: str = "image/jpeg"
    url: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ValueError("an ImagePart needs exactly one of `data` and `url`")

    @property
    def digest(self) -> str:
        """xxh3-128 of the image bytes (or of the URL): what the cache key holds instead of the image."""
        return xxhash.xxh3_128_hexdigest(self.data if self.data is not None else (self.url or "").encode())

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``image_url`` content part."""
        if self.data is not None:
            url = f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"
        else:
            url = self.url or ""
        image_url: dict[str, Any] = {"url": url}
        if self.detail is not None:
            image_url["detail"] = self.detail
        return {"type": "image_url", "image_url": image_url}

    def canonical(self) -> dict[str, Any]:
        return {"type": "image", "digest": self.digest, "mime": self.mime if self.data is not None else None,
                "url": self.url is not None, "detail": self.detail}

    @classmethod
    def from_openai(cls, part: dict[str, Any]) -> "ImagePart":
        """Parse an ``image_url`` content part; a ``data:`` URL is decoded to bytes (raises ValueError if bad)."""
        image_url = part.get("image_url")
        if isinstance(image_url, str):  # some clients send the URL directly
            image_url = {"url": image_url}
        if not isinstance(image_url, dict) or not isinstance(image_url.get("url"), str):
            raise ValueError("an image_url part needs image_url.url")
        url, detail = image_url["url"], image_url.get("detail")
        if not url.startswith("data:"):
            return cls(url=url, detail=detail)
        header, sep, payload = url[5:].partition(",")
        if not sep or not header.endswith(";base64"):
            raise ValueError("an image data URL must be data:<mime>;base64,<data>")
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error as e:
            raise ValueError(f"bad base64 in an image data URL: {e}") from None
        return cls(data=data, mime=header[:-len(";base64")] or "application/octet-stream", detail=detail)


#: a message's content inside a request: plain text, or parts (a ``str`` part is a text part)
Content = str | tuple[str | ImagePart, ...]


def _content(value: Any) -> Content:
    """A message's content (a string or a list of OpenAI content parts) in the immutable request form."""
    if isinstance(value, str):
        return value
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"message content must be a string or a list of parts, not {type(value).__name__}")
    parts: list[str | ImagePart] = []
    for part in value:
        if isinstance(part, (str, ImagePart)):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif isinstance(part, dict) and part.get("type") == "image_url":
            parts.append(ImagePart.from_openai(part))
        else:
            raise ValueError(f"unsupported content part: {str(part)[:80]}")
    return tuple(parts)


def content_text(content: Content) -> str:
    """The text of a message's content (text parts joined by newlines; images left out)."""
    if isinstance(content, str):
        return content
    return "\n".join(p for p in content if isinstance(p, str))


def content_images(content: Content) -> list[ImagePart]:
    """The images of a message's content, in order."""
    return [] if isinstance(content, str) else [p for p in content if isinstance(p, ImagePart)]


def _content_wire(content: Content) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": p} if isinstance(p, str) else p.to_openai() for p in content]


def _content_canonical(content: Content) -> Any:
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": p} if isinstance(p, str) else p.canonical() for p in content]


@dataclass(frozen=True)
class LLMRequest:
    """One prompt to answer: ``messages`` for chat models, ``prompt`` for plain text completion (exactly one)."""

    params: SamplingParams
    messages: tuple[tuple[str, Content], ...] | None = None  # ((role, content), ...): hashable and immutable
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
        return cls(params=params, messages=tuple((m["role"], _content(m["content"])) for m in messages),
                   json_schema=json_schema)

    @classmethod
    def completion(cls, prompt: str, params: SamplingParams) -> "LLMRequest":
        return cls(params=params, prompt=prompt)

    @property
    def kind(self) -> Literal["chat", "completion"]:
        return "chat" if self.messages is not None else "completion"

    @property
    def has_images(self) -> bool:
        return any(not isinstance(c, str) and content_images(c) for _, c in (self.messages or ()))

    def message_dicts(self) -> list[Message]:
        """The messages as the OpenAI API takes them (images as ``image_url`` parts with ``data:`` URLs)."""
        return [{"role": r, "content": _content_wire(c)} for r, c in (self.messages or ())]

    def canonical(self) -> bytes:
        """A stable byte string of everything that determines the answer (for cache keys).

        Images enter as the hash of their bytes. Text-only requests keep the form they always had, so existing
        caches stay valid.
        """
        messages: Any = self.messages
        if messages is not None and not all(isinstance(c, str) for _, c in messages):
            messages = [(r, _content_canonical(c)) for r, c in messages]
        return orjson.dumps({
            "kind": self.kind,
            "messages": messages,
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
    retries: int = 0  # attempts the backend repeated for this request (429, 5xx, timeouts, refused connections)
    retryable: bool = False  # failed because the server was unreachable or overloaded: asking later may succeed

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
    def failed(cls, error: str, model: str = "", retries: int = 0, retryable: bool = False) -> "Completion":
        return cls(text="", finish_reason="error", model=model, error=error, retries=retries, retryable=retryable)


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
        """A JSON answer that validates against ``schema`` (see :mod:`assay.models.llm.structured`)."""
        from assay.models.llm.structured import chat_json

        return chat_json(self, messages, schema, params or SamplingParams(), max_repairs=max_repairs)

    def _one(self, request: LLMRequest) -> Completion:
        (completion,) = self.generate([request])
        if completion.error is not None:
            raise BackendError(completion.error)
        return completion

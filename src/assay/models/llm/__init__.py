"""LLM backends behind one small interface (:class:`LLMBackend`), configured from a recipe by
:class:`BackendConfig` and built by :func:`make_backend`.

* ``kind: local`` (default): a GGUF model in-process with llama.cpp; with no ``model`` the bundled
  SmolLM2-135M-Instruct, so recipes run offline out of the box.
* ``kind: openai``: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, OpenAI) at ``base_url``.

Every backend a step uses is wrapped in the persistent response cache (:mod:`.cache`) unless caching is off.
Importing this package is cheap: llama.cpp and httpx are imported when a backend is first used.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.models.llm.base import (BackendError, Completion, LLMBackend, LLMRequest, Message,
                                            SamplingParams, Usage)

__all__ = ["BackendConfig", "BackendError", "Completion", "LLMBackend", "LLMRequest", "Message", "SamplingParams",
           "Usage", "make_backend", "shared_backend"]


class BackendConfig(BaseModel):
    """Which model answers a step's prompts (the ``backend:`` block of a synthesis step in a recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "openai"] = "local"
    #: local: path to a .gguf file (default: the bundled SmolLM2-135M-Instruct); openai: the served model's name
    model: str | None = None
    # -- local -------------------------------------------------------------------------------------------------
    n_ctx: int = Field(2048, ge=128)
    n_threads: int | None = Field(None, ge=1)
    # -- openai ------------------------------------------------------------------------------------------------
    base_url: str = "https://api.openai.com/v1"
    #: the environment variable holding the API key (never put a key in a recipe)
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1, le=1024)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff: float = Field(0.5, ge=0)
    #: seconds a step waits out a server that answers none of a batch's requests (down, restarting, overloaded),
    #: asking again with growing pauses, before the run stops with an error (a rerun resumes from the cache)
    max_outage: float = Field(120.0, ge=0)
    #: how to ask for JSON: "json_schema" (OpenAI, vLLM), "json_object" (llama.cpp server, Ollama), "none"
    json_mode: Literal["json_schema", "json_object", "none"] = "json_schema"
    #: USD per million tokens, for cost accounting in the run stats
    price_input_per_mtok: float = Field(0.0, ge=0)
    price_output_per_mtok: float = Field(0.0, ge=0)
    #: extra fields merged into every request body (e.g. {"top_k": 20} for vLLM)
    extra_body: dict[str, Any] = Field(default_factory=dict)


def make_backend(config: BackendConfig | dict[str, Any] | None = None) -> LLMBackend:
    """A new backend for ``config`` (no cache around it)."""
    if not isinstance(config, BackendConfig):
        config = BackendConfig(**(config or {}))
    if config.kind == "local":
        from assay.models.llm.local import LlamaCppBackend

        return LlamaCppBackend(config.model, n_ctx=config.n_ctx, n_threads=config.n_threads)
    from assay.models.llm.http import OpenAIBackend

    if not config.model:
        raise BackendError("backend kind 'openai' needs `model:` (the name the server serves)")
    return OpenAIBackend(config.model, base_url=config.base_url, api_key_env=config.api_key_env,
                         concurrency=config.concurrency, timeout=config.timeout, max_retries=config.max_retries,
                         backoff=config.backoff, json_mode=config.json_mode,
                         price_input_per_mtok=config.price_input_per_mtok,
                         price_output_per_mtok=config.price_output_per_mtok, extra_body=config.extra_body)


_SHARED: dict[tuple[str, int], LLMBackend] = {}
_SHARED_LOCK = threading.Lock()


def shared_backend(config: BackendConfig) -> LLMBackend:
    """One backend per configuration per process, so that several steps of a recipe load a local model once."""
    key = (config.model_dump_json(), os.getpid())
    with _SHARED_LOCK:
        backend = _SHARED.get(key)
        if backend is None:
            backend = _SHARED[key] = make_backend(config)
        return backend


@atexit.register
def close_shared_backends() -> None:
    """Free shared models and connections while the interpreter is still whole (llama.cpp frees on exit badly)."""
    with _SHARED_LOCK:
        backends = list(_SHARED.values())
        _SHARED.clear()
    for backend in backends:
        backend.close()


def cached(backend: LLMBackend, path: str | os.PathLike[str] | None) -> LLMBackend:
    """``backend`` behind the SQLite response cache at ``path`` (``None``: no cache), with its own usage account."""
    from assay.models.llm.cache import CachedBackend, ResponseCache

    return CachedBackend(backend, ResponseCache(Path(path)) if path is not None else None)

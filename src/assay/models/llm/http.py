"""The OpenAI-compatible HTTP backend: vLLM, llama.cpp's server, Ollama, OpenAI itself, or Assay's own
``python -m assay.models.llm.server``.

Requests in a batch are sent concurrently from an asyncio event loop that runs in a background thread (so the
synchronous :meth:`generate` also works inside Jupyter, where a loop is already running), with at most
``concurrency`` in flight. 429 and 5xx answers, timeouts and dropped connections are retried with exponential
backoff and jitter (``Retry-After`` is honoured); other 4xx answers fail that request only, except 401/403/404,
which mean the whole configuration is wrong and raise :class:`BackendError`. Tokens come from the server's
``usage``; cost is tokens times the prices given in the configuration.

Chat messages may carry images (see :class:`~assay.models.llm.base.ImagePart`): they go out as OpenAI
``image_url`` content parts with ``data:`` URLs, which vLLM, Ollama, llama.cpp's server and OpenAI all accept.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from typing import Any

from assay.models.llm.base import BackendError, Completion, LLMBackend, LLMRequest, OnComplete

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})


class _Retryable(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OpenAIBackend(LLMBackend):
    """A model behind an OpenAI-compatible API (``/chat/completions`` and ``/completions``)."""

    kind = "openai"

    def __init__(self, model: str, base_url: str = "https://api.openai.com/v1", api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8, timeout: float = 120.0,
                 connect_timeout: float = 10.0, max_retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 price_input_per_mtok: float = 0.0, price_output_per_mtok: float = 0.0,
                 json_mode: str = "json_schema", extra_body: dict[str, Any] | None = None,
                 seed: bool = True) -> None:
        super().__init__()
        if not model:
            raise BackendError("the openai backend needs `model` (the name the server knows the model by)")
        if concurrency < 1:
            raise BackendError("concurrency must be >= 1")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env, "")
        self.concurrency = concurrency
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.price_input = price_input_per_mtok
        self.price_output = price_output_per_mtok
        self.json_mode = json_mode  # "json_schema" (OpenAI, vLLM), "json_object" (llama.cpp, Ollama) or "none"
        self.extra_body = dict(extra_body or {})
        self.send_seed = seed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._start_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": self.base_url}

    # -- the background event loop -----------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="assay-openai-backend", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _http_client(self) -> Any:
        if self._client is None:
            import httpx

            headers = {"Content-Type": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            )
        return self._client

    def generate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        if not requests:
            return []
        future = asyncio.run_coroutine_threadsafe(self.agenerate(requests, on_complete), self._ensure_loop())
        return future.result()

    async def agenerate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        """The asynchronous form of :meth:`generate` (must run on this backend's loop; ``generate`` sees to it)."""
        semaphore = asyncio.Semaphore(self.concurrency)
        started = time.perf_counter()

        async def one(i: int, request: LLMRequest) -> Completion:
            async with semaphore:
                completion = await self._send(request)
            if on_complete is not None:
                on_complete(i, completion)
            return completion

        tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        finally:
            self.usage.add(seconds=time.perf_counter() - started)
        return list(results)

    # -- one request ---------------------------------------------------------------------------------------------
    def payload(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint and JSON body for ``request``."""
        p = request.params
        body: dict[str, Any] = {"model": self.model, "temperature": p.temperature, "top_p": p.top_p,
                                "max_tokens": p.max_tokens}
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None and self.send_seed:
            body["seed"] = p.seed
        if p.presence_penalty:
            body["presence_penalty"] = p.presence_penalty
        if p.frequency_penalty:
            body["frequency_penalty"] = p.frequency_penalty
        if request.kind == "chat":
            body["messages"] = request.message_dicts()
            if request.json_schema is not None and self.json_mode == "json_schema":
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "answer", "schema": request.json_schema}}
            elif request.json_schema is not None and self.json_mode == "json_object":
                body["response_format"] = {"type": "json_object", "schema": request.json_schema}
            endpoint = "/chat/completions"
        else:
            body["prompt"] = request.prompt
            endpoint = "/completions"
        body.update(self.extra_body)
        return self.base_url + endpoint, body

    async def _send(self, request: LLMRequest) -> Completion:
        url, body = self.payload(request)
        last_reason = ""
        for attempt in range(self.max_retries + 1):
            try:
                completion = await self._attempt(url, body, request.kind)
                completion.retries = attempt
                return completion
            except _Retryable as e:
                last_reason = e.reason
                if attempt == self.max_retries:
                    break
                self.usage.add(retries=1)
                delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (0.5 + random.random() / 2)
                if e.retry_after is not None:
                    delay = min(self.max_backoff, max(delay, e.retry_after))
                await asyncio.sleep(delay)
            except _Failed as e:
                self.usage.add(errors=1)
                return Completion.failed(e.reason, self.model, retries=attempt)
        self.usage.add(errors=1)
        return Completion.failed(f"gave up after {self.max_retries + 1} attempts: {last_reason}", self.model,
                                 retries=self.max_retries, retryable=True)

    async def _attempt(self, url: str, body: dict[str, Any], kind: str) -> Completion:
        import httpx

        try:
            response = await self._http_client().post(url, json=body)
        except httpx.TimeoutException as e:
            raise _Retryable(f"timeout ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__}: {e})") from None
        status = response.status_code
        if status in FATAL_STATUS:
            raise BackendError(f"{url} answered {status}: {response.text[:300]}")
        if status in RETRYABLE_STATUS:
            raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
        if status != 200:
            raise _Failed(f"HTTP {status}: {response.text[:200]}")
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] if kind == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(f"malformed answer: {response.text[:120]!r}") from None
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        cost = (prompt_tokens * self.price_input + completion_tokens * self.price_output) / 1e6
        self.usage.add(calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost)
        return Completion(text=text or "", finish_reason=choice.get("finish_reason") or "stop",
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          model=str(data.get("model") or self.model), cost_usd=cost)

    def close(self) -> None:
        loop, thread, client = self._loop, self._thread, self._client
        self._loop = self._thread = self._client = None
        if loop is None:
            return
        if client is not None:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()


class _Failed(Exception):
    """One request failed in a way that retrying will not fix (e.g. HTTP 400: prompt too long)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (only the delta-seconds form; dates are ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

"""Size and rate limits for a web service, one ASGI middleware in front of all its routes (the knowledge server puts
it in front of REST and MCP alike).

* **Body size**: a request whose body is larger than ``max_body`` bytes is answered **413** — at once when it says
  so in ``Content-Length``, else as soon as the streamed body passes the limit (the body is read before the app
  sees it, never more than ``max_body`` bytes of it, so memory stays flat whatever the client sends).
* **Rate**: each client (its bearer token, else its address) has a token bucket of ``burst`` requests refilled at
  ``rate`` per second; a request finding it empty is answered **429** with ``Retry-After``. ``rate=0`` turns it off.

The knowledge server's per-field limits (query length, document size) live in :mod:`assay.knowledge.service`, so
MCP over stdio has them too.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from typing import Any

DEFAULT_MAX_BODY = 2 << 20        # 2 MiB: a patch may hold 200,000 characters of content plus its reviews
DEFAULT_RATE = 20.0               # requests per second and client, sustained
DEFAULT_BURST = 60


class RequestLimits:
    """See the module docstring. ``clock``: a monotonic time source (tests pass their own)."""

    def __init__(self, app: Any, *, max_body: int = DEFAULT_MAX_BODY, rate: float = DEFAULT_RATE,
                 burst: int = DEFAULT_BURST, clock: Any = time.monotonic) -> None:
        self.app, self.max_body, self.rate, self.burst, self.clock = app, max_body, rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}   # client -> (tokens, last refill)
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wait = self._take(self._client(scope))
        if wait > 0:
            await _answer(send, 429, f"too many requests: try again in {math.ceil(wait)} s",
                          [(b"retry-after", str(math.ceil(wait)).encode())])
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _answer(send, 413, self._too_large())
            return
        # read the whole body first (at most max_body bytes are ever held), so the app never starts on a body that
        # turns out too large, whatever it does with a failed read
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            received += len(message.get("body", b""))
            if received > self.max_body:
                await _answer(send, 413, self._too_large())
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body:,} bytes"

    @staticmethod
    def _client(scope: Any) -> str:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        if header[:7].lower() == b"bearer ":
            return "t:" + hashlib.sha256(header[7:].strip()).hexdigest()
        client = scope.get("client")
        return "a:" + (client[0] if client else "?")

    def _take(self, client: str) -> float:
        """Take one token from ``client``'s bucket: 0 when granted, else the seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > 100_000:  # forget idle clients rather than grow without bound
                self._buckets = {c: v for c, v in self._buckets.items() if now - v[1] < 60}
            return 0.0


def _replay(messages: list[Any], receive: Any) -> Any:
    """A ``receive`` that hands out ``messages`` first, then waits on the real one (for the disconnect)."""
    pending = list(messages)

    async def replayed() -> Any:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _answer(send: Any, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})

"""A persistent response cache (SQLite), so that a rerun after a crash makes no repeated LLM calls.

The key is a hash of the backend identity (``kind:model``), the whole request (chat messages or prompt, JSON
schema) and its sampling parameters, seed included. Each answer is committed as soon as it arrives, so everything
that finished before a crash or a kill is served from the cache on the rerun. Failed requests are not cached.

The file uses SQLite's WAL journal so several worker processes can share one cache; writes retry on a busy lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import orjson
import xxhash

from assay.models.llm.base import Completion, LLMBackend, LLMRequest, OnComplete

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    response BLOB NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(identity: str, request: LLMRequest) -> str:
    """The cache key of ``request`` sent to the model ``identity``."""
    return xxhash.xxh3_128_hexdigest(identity.encode() + b"\x00" + request.canonical())


class ResponseCache:
    """Key → completion, in one SQLite file. Safe to use from several threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._conn.execute(
                f"SELECT key, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for key, blob in rows:
                found[key] = Completion.from_dict(orjson.loads(blob), cached=True)
        return found

    def put(self, key: str, identity: str, completion: Completion) -> None:
        blob = orjson.dumps(completion.to_dict())
        for attempt in range(5):
            try:
                self._conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                                   (key, identity, blob, time.time()))
                return
            except sqlite3.OperationalError:  # database is locked by another writer beyond the timeout
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class CachedBackend(LLMBackend):
    """Wraps a backend: answers from the cache what it can, sends the rest, stores new answers at once.

    Each wrapper keeps its own :class:`Usage` (cache hits, calls, tokens, cost of the answers it obtained), so two
    steps sharing one model still report their own spending. ``cache=None`` keeps the accounting without caching.
    """

    def __init__(self, inner: LLMBackend, cache: ResponseCache | None) -> None:
        super().__init__()
        self.inner = inner
        self.cache = cache
        self.kind = inner.kind
        self.model = inner.model

    @property
    def identity(self) -> str:
        return self.inner.identity

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    def _account(self, answer: Completion) -> None:
        if answer.ok:
            self.usage.add(calls=1, prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                           cost_usd=answer.cost_usd, retries=answer.retries)
        else:
            self.usage.add(errors=1, retries=answer.retries)

    def generate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        keys = [request_key(self.identity, r) for r in requests]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        results: list[Completion | None] = [found.get(k) for k in keys]
        self.usage.add(cache_hits=sum(r is not None for r in results))
        if on_complete is not None:
            for i, r in enumerate(results):
                if r is not None:
                    on_complete(i, r)
        missing = [i for i, r in enumerate(results) if r is None]
        # a request repeated inside one batch is sent once
        first_of: dict[str, int] = {}
        to_send = []
        for i in missing:
            if keys[i] not in first_of:
                first_of[keys[i]] = i
                to_send.append(i)
        if to_send:
            def store(j: int, answer: Completion) -> None:
                i = to_send[j]
                self._account(answer)
                if answer.ok and self.cache is not None:  # committed now: a kill after this loses nothing
                    self.cache.put(keys[i], self.identity, answer)
                if on_complete is not None:
                    on_complete(i, answer)

            answers = self.inner.generate([requests[i] for i in to_send], on_complete=store)
            for i, answer in zip(to_send, answers):
                results[i] = answer
            for i in missing:
                if results[i] is None:
                    results[i] = results[first_of[keys[i]]]
                    if on_complete is not None:
                        on_complete(i, results[i])
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Close the cache; the wrapped backend may be shared, so its owner closes it."""
        if self.cache is not None:
            self.cache.close()

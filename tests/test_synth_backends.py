"""LLM backends: the local llama.cpp model, the OpenAI-compatible HTTP client against a real server process on
loopback (with injected 429/500, a hanging server, a refused connection), JSON-schema answers, and the SQLite
response cache (including a run killed half-way)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from testutil import LoopbackLLMServer

from assay.models.llm import BackendConfig, make_backend
from assay.models.llm.base import (BackendError, Completion, LLMBackend, LLMRequest, OnComplete,
                                            SamplingParams)
from assay.models.llm.cache import CachedBackend, ResponseCache, request_key
from assay.models.llm.http import OpenAIBackend
from assay.models.llm.local import LlamaCppBackend, default_model_path
from assay.models.llm.structured import chat_json, extract_json, generate_json, validation_error

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


@pytest.fixture(scope="module")
def local() -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(n_ctx=1024)
    yield backend
    backend.close()


# -- local backend ---------------------------------------------------------------------------------------------
def test_default_model_is_the_bundled_gguf() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 10_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_local_completion_and_chat_count_tokens(local: LlamaCppBackend) -> None:
    before = local.usage.snapshot()
    c = local.complete("The capital of France is", SamplingParams(max_tokens=8, temperature=0.0))
    assert c.ok and c.text.strip() and c.prompt_tokens > 3 and 0 < c.completion_tokens <= 8
    chat = local.chat("Say hello.", SamplingParams(max_tokens=4, temperature=0.0))
    assert chat.ok and chat.finish_reason == "length" and chat.completion_tokens == 4
    after = local.usage.snapshot()
    assert after["calls"] - before["calls"] == 2
    assert after["completion_tokens"] - before["completion_tokens"] == c.completion_tokens + 4


def test_local_seed_makes_sampling_reproducible(local: LlamaCppBackend) -> None:
    p = SamplingParams(max_tokens=12, temperature=1.0, top_p=1.0)
    prompt = "Here is a list of animals:\n1."
    a = local.complete(prompt, p.with_(seed=7)).text
    local.complete("Something else entirely to change the KV cache.", p.with_(seed=1))
    b = local.complete(prompt, p.with_(seed=7)).text
    others = {local.complete(prompt, p.with_(seed=s)).text for s in (8, 9)}
    assert a == b
    assert len(others | {a}) == 3  # other seeds sample other text


def test_local_errors_become_failed_completions(local: LlamaCppBackend) -> None:
    too_long = LLMRequest.completion("word " * 3000, SamplingParams(max_tokens=4))
    surrogate = LLMRequest.completion("bad \ud800 text", SamplingParams(max_tokens=2))
    ok = LLMRequest.completion("Hello", SamplingParams(max_tokens=2))
    results = local.generate([too_long, surrogate, ok])
    assert not results[0].ok and results[0].finish_reason == "error"
    assert not results[1].ok
    assert results[2].ok
    with pytest.raises(BackendError):
        local.complete("word " * 3000, SamplingParams(max_tokens=4))


def test_missing_model_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not found"):
        LlamaCppBackend(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"):
        LlamaCppBackend(junk).complete("hi")


def test_local_json_schema_answer_validates(local: LlamaCppBackend) -> None:
    value, completion = chat_json(local, "Give a person's name and age as JSON.", PERSON,
                                  SamplingParams(max_tokens=48, temperature=0.2, seed=3))
    assert completion.ok, completion.error
    assert validation_error(value, PERSON) is None
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


# -- structured output: parsing, validation, bounded repair ----------------------------------------------------
def test_extract_json_finds_the_value_in_prose_and_fences() -> None:
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! Here it is: {"a": [1, 2]} Hope it helps.') == {"a": [1, 2]}
    assert extract_json("[1, 2]") == [1, 2]
    assert extract_json('{broken {"b": 2}') == {"b": 2}
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_validation_error_names_the_problem() -> None:
    assert validation_error({"name": "x", "age": 3}, PERSON) is None
    assert "age" in (validation_error({"name": "x"}, PERSON) or "")
    assert "integer" in (validation_error({"name": "x", "age": "old"}, PERSON) or "")


class ScriptedBackend(LLMBackend):
    """Answers from a fixed script and records what it was asked. The repair loop's contract is about what it does
    with answers it does not control, so the answers must be ours to choose here."""

    kind = "scripted"
    model = "script"

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.seen: list[LLMRequest] = []

    def generate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        out = []
        for i, r in enumerate(requests):
            self.seen.append(r)
            c = Completion(self.answers.pop(0), model=self.model)
            if on_complete:
                on_complete(i, c)
            out.append(c)
        return out


def test_repair_turn_shows_the_error_and_stops_after_max_repairs() -> None:
    backend = ScriptedBackend(['{"name": "Ann"}', 'I think {"name": "Ann", "age": 31}'])
    value, completion = chat_json(backend, "Describe Ann.", PERSON, SamplingParams(seed=10), max_repairs=2)
    assert value == {"name": "Ann", "age": 31} and completion.ok
    repair = backend.seen[1]
    assert repair.messages is not None and len(repair.messages) == 3
    assert repair.messages[1] == ("assistant", '{"name": "Ann"}')
    assert "age" in repair.messages[2][1] and "required" in repair.messages[2][1]
    assert repair.params.seed == 11  # a different, reproducible request

    stubborn = ScriptedBackend(["nope", "still nope", "no", "never"])
    results = generate_json(stubborn, [[{"role": "user", "content": "x"}]], PERSON, SamplingParams(), max_repairs=1)
    assert len(stubborn.seen) == 2  # one try + one repair, no more
    assert results[0][0] is None and "invalid JSON" in (results[0][1].error or "")


# -- the response cache ----------------------------------------------------------------------------------------
def test_cache_key_depends_on_model_prompt_and_params() -> None:
    base = LLMRequest.completion("hi", SamplingParams(seed=1))
    assert request_key("local:a", base) == request_key("local:a", LLMRequest.completion("hi", SamplingParams(seed=1)))
    assert request_key("local:a", base) != request_key("local:b", base)
    assert request_key("local:a", base) != request_key("local:a", LLMRequest.completion("hi!", SamplingParams(seed=1)))
    assert request_key("local:a", base) != request_key("local:a", LLMRequest.completion("hi", SamplingParams(seed=2)))
    assert request_key("local:a", base) != request_key("local:a", LLMRequest.chat("hi", SamplingParams(seed=1)))


def test_cache_serves_repeats_without_calling_the_model(local: LlamaCppBackend, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    reqs = [LLMRequest.completion(f"Name a colour number {i}:", SamplingParams(max_tokens=4, seed=i)) for i in range(3)]
    first = CachedBackend(local, ResponseCache(path))
    got = first.generate(reqs + [reqs[0]])  # a repeat inside one batch is sent once
    assert first.usage.calls == 3 and first.usage.cache_hits == 0
    assert got[3].text == got[0].text
    first.close()

    again = CachedBackend(local, ResponseCache(path))  # a new process would open the file like this
    calls_before = local.usage.calls
    replay = again.generate(reqs)
    assert [c.text for c in replay] == [c.text for c in got[:3]]
    assert all(c.cached for c in replay)
    assert again.usage.cache_hits == 3 and again.usage.calls == 0 and local.usage.calls == calls_before
    assert len(again.cache) == 3


def test_failed_answers_are_not_cached(local: LlamaCppBackend, tmp_path: Path) -> None:
    cached = CachedBackend(local, ResponseCache(tmp_path / "c.sqlite"))
    bad = LLMRequest.completion("word " * 3000, SamplingParams(max_tokens=2))
    assert not cached.generate([bad])[0].ok
    assert len(cached.cache) == 0 and cached.usage.errors == 1


KILL_SCRIPT = r"""
import sys
from assay.models.llm.base import LLMRequest, SamplingParams
from assay.models.llm.cache import CachedBackend, ResponseCache
from assay.models.llm.local import LlamaCppBackend
backend = CachedBackend(LlamaCppBackend(n_ctx=512), ResponseCache(sys.argv[1]))
reqs = [LLMRequest.completion(f"Story {i}: once upon a time", SamplingParams(max_tokens=12, seed=i)) for i in range(8)]
backend.generate(reqs, on_complete=lambda i, c: print("done", i, flush=True))
"""


def test_killed_run_loses_nothing_that_finished(local: LlamaCppBackend, tmp_path: Path) -> None:
    """SIGKILL a process half-way through a batch; rerunning the batch calls the model only for what was left."""
    path = tmp_path / "cache.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    finished = 0
    for line in proc.stdout:
        finished += line.startswith("done")
        if finished == 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stored = sqlite3.connect(path).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 3 <= stored < 8

    rerun = CachedBackend(LlamaCppBackend(n_ctx=512), ResponseCache(path))
    reqs = [LLMRequest.completion(f"Story {i}: once upon a time", SamplingParams(max_tokens=12, seed=i))
            for i in range(8)]
    results = rerun.generate(reqs)
    assert all(c.ok for c in results)
    assert rerun.usage.cache_hits == stored and rerun.usage.calls == 8 - stored
    assert all(c.cached for c in results[:stored])


# -- the HTTP backend against a real server on loopback ----------------------------------------------------------
class Server(LoopbackLLMServer):
    def __init__(self, *args: str) -> None:
        super().__init__("--threads", "1", *args)


@pytest.fixture
def server_factory() -> Iterator:
    started: list[Server] = []

    def start(*args: str) -> Server:
        s = Server(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def http(url: str, **kw: object) -> OpenAIBackend:
    return OpenAIBackend("smollm2", base_url=url, api_key="test-key", backoff=0.05, **kw)  # type: ignore[arg-type]


def one(backend: LLMBackend, prompt: str = "Hello") -> Completion:
    """One request through ``generate`` (which reports failures in the completion instead of raising)."""
    return backend.generate([LLMRequest.completion(prompt, SamplingParams(max_tokens=3, seed=1))])[0]


@pytest.fixture(scope="module")
def model_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


def test_http_chat_completion_tokens_and_cost(model_server: Server) -> None:
    server = model_server
    before = server.stats().get("200", 0)
    backend = http(server.url, price_input_per_mtok=1000.0, price_output_per_mtok=2000.0)
    try:
        chat = backend.chat("Say hello.", SamplingParams(max_tokens=6, temperature=0.0))
        done = backend.complete("The capital of France is", SamplingParams(max_tokens=5, temperature=0.0))
        value, js = backend.chat_json("A person as JSON.", PERSON, SamplingParams(max_tokens=48, seed=3))
    finally:
        backend.close()
    assert chat.ok and chat.text and chat.completion_tokens == 6 and chat.finish_reason == "length"
    assert done.ok and done.prompt_tokens > 3
    assert js.ok and validation_error(value, PERSON) is None
    u = backend.usage
    assert u.calls == 3 and u.retries == 0
    expected = (u.prompt_tokens * 1000.0 + u.completion_tokens * 2000.0) / 1e6
    assert u.cost_usd == pytest.approx(expected) and u.cost_usd > 0
    assert server.stats()["200"] - before == 3


def test_http_answers_match_the_local_engine(model_server: Server, local: LlamaCppBackend) -> None:
    """The server runs the same GGUF; with the same seed the HTTP answer is the local answer."""
    backend = http(model_server.url)
    p = SamplingParams(max_tokens=16, temperature=0.8, seed=42)
    try:
        remote = backend.complete("A short poem about rain:\n", p)
    finally:
        backend.close()
    assert remote.text == local.complete("A short poem about rain:\n", p).text


def test_http_retries_injected_429_and_500(server_factory) -> None:
    server = server_factory("--engine", "echo", "--fail", "429,500", "--retry-after", "0.2")
    backend = http(server.url, max_retries=3)
    started = time.perf_counter()
    try:
        c = backend.complete("Hello", SamplingParams(max_tokens=3, seed=1))
    finally:
        backend.close()
    assert c.ok and c.text == "Hello"
    assert backend.usage.retries == 2 and backend.usage.errors == 0
    assert time.perf_counter() - started >= 0.4  # Retry-After honoured on both
    stats = server.stats()
    assert stats["429"] == 1 and stats["500"] == 1 and stats["200"] == 1 and stats["received"] == 3


def test_http_gives_up_after_max_retries(server_factory) -> None:
    server = server_factory("--engine", "echo", "--fail", "503,503,503,503")
    backend = http(server.url, max_retries=2)
    try:
        c = one(backend)
    finally:
        backend.close()
    assert not c.ok and "gave up after 3 attempts" in (c.error or "") and "503" in (c.error or "")
    assert server.stats()["received"] == 3 and backend.usage.errors == 1


def test_http_timeout_on_a_server_that_never_answers(server_factory) -> None:
    server = server_factory("--engine", "echo", "--hang")
    backend = http(server.url, timeout=0.5, max_retries=1)
    started = time.perf_counter()
    try:
        c = one(backend)
    finally:
        backend.close()
    elapsed = time.perf_counter() - started
    assert not c.ok and "timeout" in (c.error or "")
    assert 0.9 <= elapsed < 10
    assert server.stats()["hung"] == 2  # first try + one retry


def test_http_client_errors_fail_fast(server_factory) -> None:
    server = server_factory("--engine", "echo", "--fail", "400,401")
    backend = http(server.url, max_retries=5)
    try:
        bad = one(backend)
        assert not bad.ok and "HTTP 400" in (bad.error or "") and backend.usage.retries == 0
        with pytest.raises(BackendError, match="401"):
            backend.complete("Hello", SamplingParams(max_tokens=3))
    finally:
        backend.close()


def test_http_connection_refused_is_retried_then_reported() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = http(f"http://127.0.0.1:{port}/v1", max_retries=1)
    try:
        c = one(backend)
    finally:
        backend.close()
    assert not c.ok and "connection error" in (c.error or "") and backend.usage.retries == 1


def test_http_concurrency_is_bounded_and_used(server_factory) -> None:
    server = server_factory("--engine", "echo", "--latency", "0.3")
    reqs = [LLMRequest.completion(f"request {i}", SamplingParams(max_tokens=2)) for i in range(8)]
    backend = http(server.url, concurrency=4)
    try:
        started = time.perf_counter()
        results = backend.generate(reqs)
        elapsed = time.perf_counter() - started
    finally:
        backend.close()
    assert [c.text for c in results] == [f"request {i}" for i in range(8)]  # answers stay in request order
    assert server.stats()["max_in_flight"] == 4
    assert 0.55 < elapsed < 2.0  # two waves of 0.3 s, not eight


def test_make_backend_from_recipe_config() -> None:
    assert isinstance(make_backend({"kind": "local"}), LlamaCppBackend)
    remote = make_backend(BackendConfig(kind="openai", model="m", base_url="http://127.0.0.1:9/v1"))
    assert isinstance(remote, OpenAIBackend) and remote.identity == "openai:m"
    with pytest.raises(BackendError):
        make_backend({"kind": "openai"})
    with pytest.raises(ValueError):
        BackendConfig(kind="openai", model="m", api_key="sk-secret")  # keys come from the environment only


def test_server_rejects_malformed_requests(server_factory) -> None:
    server = server_factory("--engine", "echo")
    r = httpx.post(server.url + "/chat/completions", content=json.dumps({"messages": "nope"}), timeout=10)
    assert r.status_code == 400
    r = httpx.post(server.url + "/completions", json={"prompt": "x", "temperature": 9}, timeout=10)
    assert r.status_code == 400

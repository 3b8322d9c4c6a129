"""A small OpenAI-compatible HTTP server around any Assay backend (by default the local GGUF model).

Run ``python -m assay.models.llm.server --port 8000`` to serve the bundled SmolLM2 model at
``http://127.0.0.1:8000/v1`` (``/chat/completions``, ``/completions``, ``/models``). It exists so that the HTTP
backend can be tested and benchmarked for real on loopback without extra dependencies (standard library only),
and it can inject faults to exercise a client's retry logic:

* ``--fail 429,500``: answer the first requests with these statuses, in order, then serve normally;
* ``--hang``: accept connections and never answer (timeouts);
* ``--engine echo --latency 0.05``: answer instantly with an echo of the prompt after a fixed delay, to measure a
  client's own overhead and concurrency without the cost of a model;
* ``--engine fixed --reply "I like turtles"``: answer every request with the same text, whatever it asks for (a
  model that ignores instructions and JSON schemas: what a client must not mistake for a usable answer);
* ``--log FILE``: append every completion request's JSON body to ``FILE`` (one line each), to check what a client
  sent;
* ``--engine vlm``: a deterministic stand-in for a vision-language model that describes the images it is sent
  (dominant colour, size, brightness; for two images, what changed) (see :mod:`.vlm_server`).

``GET /stats`` returns how many requests arrived and how each was answered.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from assay.models.llm.base import (Completion, LLMBackend, LLMRequest, OnComplete, SamplingParams,
                                            content_text)


class EchoBackend(LLMBackend):
    """Answers every request with the end of its prompt after ``latency`` seconds (load-testing clients only)."""

    kind = "echo"
    model = "echo"

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__()
        self.latency = latency

    def answer(self, request: LLMRequest) -> Completion:
        last_message = (request.messages or (("", ""),))[-1][1]
        source = request.prompt if request.prompt is not None else content_text(last_message)
        words = source.split()[-request.params.max_tokens:]
        return Completion(" ".join(words), "stop", len(source.split()), len(words), self.model)

    def generate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        out = []
        for i, r in enumerate(requests):
            if self.latency:
                time.sleep(self.latency)
            c = self.answer(r)
            self.usage.add(calls=1, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)
            if on_complete is not None:
                on_complete(i, c)
            out.append(c)
        return out


class FixedReplyBackend(EchoBackend):
    """Answers every request with the same ``reply``, ignoring the prompt and any JSON schema."""

    kind = "fixed"
    model = "fixed"

    def __init__(self, reply: str, latency: float = 0.0) -> None:
        super().__init__(latency)
        self.reply = reply

    def answer(self, request: LLMRequest) -> Completion:
        return Completion(self.reply, "stop", 0, len(self.reply.split()), self.model)


class FaultPlan:
    """Which status to force on the next requests (consumed in order), and whether to hang forever."""

    def __init__(self, fail: list[int] | None = None, hang: bool = False, retry_after: float | None = None) -> None:
        self._fail = collections.deque(fail or ())
        self.hang = hang
        self.retry_after = retry_after
        self._lock = threading.Lock()

    def next_failure(self) -> int | None:
        with self._lock:
            return self._fail.popleft() if self._fail else None


def request_from_body(body: dict[str, Any], chat: bool) -> LLMRequest:
    """Turn an OpenAI-style request body into an :class:`LLMRequest` (raises ValueError when malformed)."""
    stop = body.get("stop") or ()
    params = SamplingParams(
        temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
        max_tokens=int(body.get("max_tokens") or 256), stop=tuple([stop] if isinstance(stop, str) else stop),
        seed=body.get("seed"), presence_penalty=float(body.get("presence_penalty", 0.0)),
        frequency_penalty=float(body.get("frequency_penalty", 0.0)))
    if not chat:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError("`prompt` must be a string")
        return LLMRequest.completion(prompt, params)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("`messages` must be a non-empty list")
    schema = None
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
    elif fmt.get("type") == "json_object":
        schema = fmt.get("schema") or {"type": "object"}
    # content stays a list of parts (text, image_url) when it is one; LLMRequest.chat validates the parts
    return LLMRequest.chat([{"role": str(m["role"]),
                             "content": m["content"] if isinstance(m["content"], list) else str(m["content"])}
                            for m in messages], params, json_schema=schema)


def completion_body(completion: Completion, chat: bool, model: str) -> dict[str, Any]:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": completion.text},
                  "finish_reason": completion.finish_reason}
    else:
        choice = {"index": 0, "text": completion.text, "finish_reason": completion.finish_reason}
    return {"id": f"cmpl-{time.time_ns()}", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                      "total_tokens": completion.prompt_tokens + completion.completion_tokens}}


class OpenAICompatibleServer(ThreadingHTTPServer):
    """Serves ``backend`` over the OpenAI API on ``(host, port)``; ``port=0`` picks a free port."""

    daemon_threads = True
    #: pending connections the kernel queues (socketserver's default of 5 dropped the 7th of 8 simultaneous
    #: connections, which the client's TCP stack then retried a second later)
    request_queue_size = 128

    def __init__(self, backend: LLMBackend, host: str = "127.0.0.1", port: int = 0,
                 faults: FaultPlan | None = None, log_path: str | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.backend = backend
        self.faults = faults or FaultPlan()
        self.log_path = log_path
        self.stats: collections.Counter[str] = collections.Counter()
        self.stats_lock = threading.Lock()
        self.in_flight = 0
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def record(self, outcome: str) -> None:
        with self.stats_lock:
            self.stats[outcome] += 1

    def enter(self) -> None:
        """A completion request starts: track the most requests served at once (``max_in_flight``)."""
        with self.stats_lock:
            self.in_flight += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)

    def leave(self) -> None:
        with self.stats_lock:
            self.in_flight -= 1

    def log_request(self, raw: bytes) -> None:
        """Append a completion request's body to the request log (``--log``), one line each."""
        if self.log_path is not None:
            with self.stats_lock, open(self.log_path, "ab") as f:
                f.write(raw.replace(b"\n", b" ").strip() + b"\n")

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OpenAICompatibleServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: this is a test and benchmark fixture
        pass

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        blob = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(blob)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(blob)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [{"id": self.server.backend.model, "object": "model"}]})
        elif self.path.rstrip("/") == "/stats":
            with self.server.stats_lock:
                self._send_json(200, dict(self.server.stats))
        elif self.path.rstrip("/") == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.rstrip("/")
        if path not in ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions"):
            self.server.record("404")
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        self.server.record("received")
        self.server.log_request(raw)
        self.server.enter()
        try:
            self._complete(raw, path)
        finally:
            self.server.leave()

    def _complete(self, raw: bytes, path: str) -> None:
        if self.server.faults.hang:
            self.server.record("hung")
            self.server.stopping.wait()  # never answer
            return
        forced = self.server.faults.next_failure()
        if forced is not None:
            self.server.record(str(forced))
            headers = {}
            if self.server.faults.retry_after is not None:
                headers["Retry-After"] = str(self.server.faults.retry_after)
            self._send_json(forced, {"error": {"message": f"injected {forced}"}}, headers)
            return
        chat = path.endswith("chat/completions")
        try:
            request = request_from_body(json.loads(raw), chat)
        except (ValueError, KeyError, TypeError) as e:
            self.server.record("400")
            self._send_json(400, {"error": {"message": f"bad request: {e}"}})
            return
        (completion,) = self.server.backend.generate([request])
        if not completion.ok:
            self.server.record("400")
            self._send_json(400, {"error": {"message": completion.error}})
            return
        self.server.record("200")
        self._send_json(200, completion_body(completion, chat, self.server.backend.model))


def serve_in_thread(server: OpenAICompatibleServer) -> threading.Thread:
    """Run ``server`` in a daemon thread (call ``server.shutdown()`` to stop it)."""
    thread = threading.Thread(target=server.serve_forever, name="assay-openai-server", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--engine", choices=("local", "echo", "fixed", "vlm"), default="local")
    parser.add_argument("--model", default=None, help="GGUF path for --engine local (default: bundled SmolLM2)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer for --engine echo / fixed / vlm")
    parser.add_argument("--fail", default="", help="comma-separated statuses for the first requests, e.g. 429,500")
    parser.add_argument("--retry-after", type=float, default=None, help="Retry-After header on injected failures")
    parser.add_argument("--hang", action="store_true", help="never answer completion requests")
    parser.add_argument("--reply", default="I like turtles", help="the one answer of --engine fixed")
    parser.add_argument("--log", default=None, help="append each completion request's JSON body to this file")
    args = parser.parse_args(argv)

    backend: LLMBackend
    if args.engine == "echo":
        backend = EchoBackend(args.latency)
    elif args.engine == "fixed":
        backend = FixedReplyBackend(args.reply, args.latency)
    elif args.engine == "vlm":
        from assay.models.llm.vlm_server import DescribeImagesBackend

        backend = DescribeImagesBackend(args.latency)
    else:
        from assay.models.llm.local import LlamaCppBackend

        backend = LlamaCppBackend(args.model, n_threads=args.threads)
        backend.llm  # load now, before announcing the port
    fail = [int(s) for s in args.fail.split(",") if s.strip()]
    server = OpenAICompatibleServer(backend, args.host, args.port, FaultPlan(fail, args.hang, args.retry_after),
                                    args.log)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        backend.close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()

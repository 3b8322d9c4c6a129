"""Model calls, kept for the lineage view: which backend answered, with which prompt template, under which cache key.

:class:`CallLog` wraps the (cached) backend of an LLM step and appends one entry per request to a JSONL file: the
step, backend and model, the template the prompt was rendered from (recognised by the template's fixed text), the
response cache key (:func:`assay.models.llm.cache.request_key`), and the heads of prompt and answer. Calls are
tied to records by content afterwards (:func:`calls_for`): a call *made* a record when its answer is part of the
record's text, and *read* it when the record's text is part of its prompt.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Iterable

import orjson

from assay.models.llm.base import Completion, LLMBackend, LLMRequest
from assay.models.llm.cache import request_key

_PLACEHOLDER = re.compile(r"\$(?:\{\w+\}|\w+)")


def _prompt_text(request: LLMRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    parts = []
    for _role, content in request.messages or ():
        parts.append(content if isinstance(content, str) else str(content))
    return "\n".join(parts)


def template_of(prompt: str, templates: dict[str, Any]) -> str | None:
    """The name of the template whose fixed pieces all occur in ``prompt`` (the longest such template)."""
    best, best_len = None, -1
    for name, tpl in templates.items():
        pieces = [p.strip() for p in _PLACEHOLDER.split(tpl.text) if len(p.strip()) >= 12]
        if pieces and all(p in prompt for p in pieces):
            size = sum(len(p) for p in pieces)
            if size > best_len:
                best, best_len = name, size
    return best


class CallLog(LLMBackend):
    """A backend that forwards to ``inner`` and logs every request (see the module docstring)."""

    def __init__(self, inner: LLMBackend, path: Path, step: str, templates: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.kind = inner.kind
        self.model = inner.model
        self.usage = inner.usage  # the step's usage counters stay those of its cached backend
        self.path = path
        self.step = step
        self.templates = templates or {}
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self.inner.identity

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def generate(self, requests: list[LLMRequest], on_complete: Any = None) -> list[Completion]:
        answers = self.inner.generate(requests, on_complete=on_complete)
        described = self.inner.describe()
        lines = []
        for req, ans in zip(requests, answers):
            prompt = _prompt_text(req)
            lines.append(orjson.dumps({
                "step": self.step, "backend": described.get("backend", self.kind), "model": described.get("model"),
                "template": template_of(prompt, self.templates), "cache_key": request_key(self.inner.identity, req),
                "ok": ans.ok, "prompt": prompt[:4000], "answer": (ans.text or "")[:4000],
                "completion_tokens": ans.completion_tokens, "seed": req.params.seed,
                "max_tokens": req.params.max_tokens}) + b"\n")
        with self._lock, open(self.path, "ab") as f:
            f.writelines(lines)
        return answers

    def close(self) -> None:
        self.inner.close()


def attach(steps: Iterable[Any], ctx: Any, path: Path) -> None:
    """Wrap the backend of every LLM step in ``steps`` with a :class:`CallLog` writing to ``path``."""
    for step in steps:
        if hasattr(step, "ensure_backend") and hasattr(step, "use_backend"):
            inner = step.ensure_backend(ctx)
            step.use_backend(CallLog(inner, path, step.name, getattr(step, "templates", {})))


def read_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with open(path, "rb") as f:
        for line in f:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:  # a line cut by a kill
                continue
    return out


def _norm(text: str) -> str:
    return " ".join(text.split())


def calls_for(text: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The logged calls that made ``text`` (their answer is in it) or read it (it is in their prompt)."""
    t = _norm(text)
    if not t:
        return []
    out = []
    for c in calls:
        answer = _norm(c.get("answer") or "")
        prompt = _norm(c.get("prompt") or "")
        if answer and len(answer) >= 20 and answer in t:
            out.append({**c, "role": "made"})
        elif t[:300] and t[:300] in prompt:
            out.append({**c, "role": "read"})
    return out

"""JSON answers that follow a schema: constrained decoding where the backend has it, then validation, then a
bounded number of *repair* turns in which the model sees its invalid answer and the validation error.

Small local models (and HTTP servers without ``response_format`` support) often wrap JSON in prose or code fences,
so :func:`extract_json` looks for the first JSON value in the text before validating it.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from assay.models.llm.base import Completion, LLMBackend, LLMRequest, Message, SamplingParams

REPAIR_PROMPT = ("Your answer is not valid: {error}\n"
                 "Reply again with only a JSON value (no prose, no code fences) that follows this JSON schema:\n"
                 "{schema}")


class NoJSON(ValueError):
    """The text holds no parseable JSON value."""


def strip_fences(text: str) -> str:
    """``text`` without surrounding whitespace and a Markdown code fence around it (```` ```json ... ``` ````)."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (code fences and surrounding prose are ignored)."""
    decoder = json.JSONDecoder()
    stripped = strip_fences(text)
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    for i, ch in enumerate(stripped):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(stripped, i)
                return value
            except ValueError:
                continue
    raise NoJSON("no JSON value found in the answer")


def validation_error(value: Any, schema: dict[str, Any]) -> str | None:
    """Why ``value`` does not follow ``schema`` (a short message), or ``None`` if it does."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema ships with the llm extra
        return _minimal_validation_error(value, schema)
    validator_cls = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"[:300]


def _minimal_validation_error(value: Any, schema: dict[str, Any]) -> str | None:
    """Type and required-keys check used only when ``jsonschema`` is not installed."""
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    expected = kinds.get(schema.get("type", ""))
    if expected is not None and not isinstance(value, expected):
        return f"expected {schema['type']}"
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", ()) if k not in value]
        if missing:
            return f"missing required keys {missing}"
    return None


def parse_and_validate(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """``(value, None)`` when ``text`` holds JSON that follows ``schema``; ``(None, error)`` otherwise."""
    try:
        value = extract_json(text)
    except NoJSON as e:
        return None, str(e)
    error = validation_error(value, schema)
    return (None, error) if error else (value, None)


def generate_json(backend: LLMBackend, conversations: list[list[Message]], schema: dict[str, Any],
                  params: SamplingParams | list[SamplingParams], max_repairs: int = 2,
                  send: Callable[[list[LLMRequest]], list[Completion]] | None = None) -> list[tuple[Any, Completion]]:
    """Answer each conversation with JSON following ``schema``; ``(value or None, last completion)`` per input.

    ``params`` is one for all or one per conversation. All first attempts go out as one batch, then all first
    repairs, and so on, so the HTTP backend stays concurrent. Repair ``k`` uses seed ``seed + k`` so that it is a
    different (and still reproducible) request. ``send`` sends a batch (default ``backend.generate``; a synthesis
    step passes its own ``generate``, which counts failures and waits out server outages).
    """
    send = send or backend.generate
    per_request = params if isinstance(params, list) else [params] * len(conversations)
    if len(per_request) != len(conversations):
        raise ValueError("give one SamplingParams, or one per conversation")
    schema_text = json.dumps(schema, separators=(",", ":"))
    results: list[tuple[Any, Completion] | None] = [None] * len(conversations)
    histories = [list(c) for c in conversations]
    pending = list(range(len(conversations)))
    for attempt in range(max_repairs + 1):
        if not pending:
            break
        completions = send([
            LLMRequest.chat(histories[i], _attempt_params(per_request[i], attempt), json_schema=schema)
            for i in pending])
        still = []
        for i, completion in zip(pending, completions):
            if not completion.ok:
                results[i] = (None, completion)
                continue
            value, error = parse_and_validate(completion.text, schema)
            if error is None:
                results[i] = (value, completion)
                continue
            if attempt < max_repairs:
                backend.usage.add(retries=1)
            results[i] = (None, Completion(completion.text, completion.finish_reason, completion.prompt_tokens,
                                           completion.completion_tokens, completion.model, completion.cached,
                                           error=f"invalid JSON: {error}"))
            histories[i] = histories[i] + [
                {"role": "assistant", "content": completion.text[:2000]},
                {"role": "user", "content": REPAIR_PROMPT.format(error=error, schema=schema_text)},
            ]
            still.append(i)
        pending = still
    return [r for r in results if r is not None]


def _attempt_params(params: SamplingParams, attempt: int) -> SamplingParams:
    return params if params.seed is None or attempt == 0 else params.with_(seed=params.seed + attempt)


def chat_json(backend: LLMBackend, messages: list[Message] | str, schema: dict[str, Any], params: SamplingParams,
              max_repairs: int = 2) -> tuple[Any, Completion]:
    """One conversation's JSON answer: ``(value, completion)``; ``value`` is ``None`` if every repair failed."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return generate_json(backend, [messages], schema, params, max_repairs)[0]

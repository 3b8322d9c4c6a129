"""The four task types: how an imported record becomes an item to show, and what a valid answer looks like.

=============  =========================================================  ==============================================
task type      item content (normalised at import)                        annotation value
=============  =========================================================  ==============================================
sft            ``prompt`` (+ ``context`` turns, ``system``, draft          ``{"response": str}``
               ``response`` to edit)
preference     ``prompt``, ``a``, ``b``, ``kind`` (``text``|``image``)     ``{"choice": "a"|"b"|"tie", "rationale": str}``
rating         ``prompt`` (optional), ``response``                         ``{"scores": {dimension: int}, "comment": str}``
critique       ``prompt`` (optional), ``response``                         ``{"critique": str}``
=============  =========================================================  ==============================================

Preference values are stored in the record's own orientation (``a`` is the record's first response, e.g. ``chosen``),
whatever side the annotator saw it on: items are shown swapped at random (fixed per item) to cancel position bias,
and the UI maps the on-screen A/B back before saving.

Accepted record shapes (``content`` of an Assay record, or a foreign JSON object): a plain string; ``prompt`` /
``instruction`` (+ ``input``) / ``question``; ``messages`` (chat turns); ``chosen``/``rejected``;
``response_a``/``response_b``; ``responses: [a, b]``; Pick-a-Pic style ``caption`` + ``jpg_0``/``jpg_1``;
``image_a``/``image_b`` (bytes or URLs).
"""

from __future__ import annotations

from typing import Any

import xxhash

MAX_TEXT = 200_000  # characters in one annotation field
PREFERENCE_CHOICES = ("a", "b", "tie")
DEFAULT_RUBRIC = ["helpfulness", "correctness", "harmlessness"]


class SkipRecord(ValueError):
    """A record that cannot become an item of this task type; ``str(e)`` is the counted reason."""


class InvalidAnswer(ValueError):
    """An annotation value that does not fit the task type."""


# -- project configuration -----------------------------------------------------------------------------------------
def default_config(task_type: str) -> dict[str, Any]:
    if task_type == "rating":
        return {"dimensions": list(DEFAULT_RUBRIC), "scale": [1, 5], "gold_tolerance": 0}
    if task_type == "preference":
        return {"randomize_sides": True, "rationale": "optional"}
    return {}


def check_config(task_type: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """The project config with defaults filled in; raises ValueError on nonsense."""
    cfg = default_config(task_type)
    cfg.update(config or {})
    if task_type == "rating":
        dims = cfg["dimensions"]
        if not isinstance(dims, list) or not dims or not all(isinstance(d, str) and d.strip() for d in dims):
            raise ValueError("rating projects need a non-empty list of dimension names")
        if len(set(dims)) != len(dims):
            raise ValueError("rating dimensions must be distinct")
        lo, hi = cfg["scale"]
        if not (isinstance(lo, int) and isinstance(hi, int) and lo < hi and hi - lo <= 20):
            raise ValueError("rating scale must be two integers [low, high] with low < high (at most 21 points)")
    if task_type == "preference" and cfg.get("rationale") not in ("optional", "required", "none"):
        raise ValueError("preference rationale must be optional, required or none")
    return cfg


# -- records -> items ----------------------------------------------------------------------------------------------
def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _prompt_of(c: dict[str, Any]) -> str | None:
    for key in ("prompt", "question", "query", "caption", "instruction"):
        v = _text(c.get(key))
        if v is not None:
            if key == "instruction" and _text(c.get("input")):
                return f"{v}\n\n{c['input']}"
            return v
    return None


def _from_messages(messages: Any) -> tuple[str | None, list[dict[str, str]], str | None, str | None]:
    """(last user prompt, earlier turns, system prompt, assistant reply after the last user turn)."""
    if not isinstance(messages, list):
        return None, [], None, None
    turns = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    system = next((m["content"] for m in turns if m.get("role") == "system"), None)
    turns = [{"role": str(m.get("role", "user")), "content": m["content"]} for m in turns if m.get("role") != "system"]
    last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=None)
    if last_user is None:
        return None, [], system, None
    after = [m["content"] for m in turns[last_user + 1:] if m["role"] == "assistant"]
    return turns[last_user]["content"], turns[:last_user], system, (after[0] if after else None)


def _pair(c: dict[str, Any]) -> tuple[Any, Any, str] | None:
    for ka, kb in (("chosen", "rejected"), ("response_a", "response_b"), ("a", "b"), ("completion_a", "completion_b")):
        a, b = c.get(ka), c.get(kb)
        if isinstance(a, str) and isinstance(b, str):
            return a, b, "text"
        if isinstance(a, list) and isinstance(b, list):  # chosen/rejected as chat turns: take the final reply
            ra = _from_messages(a + [{"role": "user", "content": ""}])[1]
            rb = _from_messages(b + [{"role": "user", "content": ""}])[1]
            if ra and rb and ra[-1]["role"] == "assistant" and rb[-1]["role"] == "assistant":
                return ra[-1]["content"], rb[-1]["content"], "text"
    resp = c.get("responses")
    if isinstance(resp, list) and len(resp) == 2 and all(isinstance(r, str) for r in resp):
        return resp[0], resp[1], "text"
    for ka, kb in (("image_a", "image_b"), ("jpg_0", "jpg_1"), ("image_0", "image_1")):
        a, b = c.get(ka), c.get(kb)
        if isinstance(a, (bytes, str)) and isinstance(b, (bytes, str)) and a and b:
            return a, b, "image"
    return None


def item_content(task_type: str, content: Any) -> dict[str, Any]:
    """The normalised item content for ``task_type`` (see the module table); raises :class:`SkipRecord`."""
    if isinstance(content, str):
        content = {"text": content}
    if not isinstance(content, dict):
        raise SkipRecord("unsupported_content")
    prompt = _prompt_of(content)
    context: list[dict[str, str]] = []
    system = _text(content.get("system"))
    reply = _text(content.get("response")) or _text(content.get("output")) or _text(content.get("completion"))
    if prompt is None and "messages" in content:
        prompt, context, system_m, reply_m = _from_messages(content["messages"])
        system = system or system_m
        reply = reply or reply_m
    text = _text(content.get("text"))
    if task_type == "sft":
        prompt = prompt if prompt is not None else text
        if not prompt or not prompt.strip():
            raise SkipRecord("no_prompt")
        out: dict[str, Any] = {"prompt": prompt, "response": reply or ""}
    elif task_type == "preference":
        pair = _pair(content)
        if pair is None:
            raise SkipRecord("no_pair")
        out = {"prompt": prompt or text or "", "a": pair[0], "b": pair[1], "kind": pair[2]}
    elif task_type in ("rating", "critique"):
        response = reply if reply is not None else (text if prompt is None or text != prompt else None)
        if not response or not response.strip():
            raise SkipRecord("no_response")
        out = {"prompt": prompt or "", "response": response}
    else:
        raise ValueError(f"unknown task type {task_type!r}")
    if context:
        out["context"] = context
    if system:
        out["system"] = system
    return out


def swapped_for(record_id: str, config: dict[str, Any]) -> bool:
    """Whether a pairwise item is shown with its responses swapped: a coin flip fixed by the record id."""
    return bool(config.get("randomize_sides", True)) and xxhash.xxh3_64_intdigest(record_id.encode()) & 1 == 1


def gold_answer(task_type: str, meta: dict[str, Any], content: Any, config: dict[str, Any]) -> Any:
    """The known answer of a gold item, from ``meta["gold"]`` (or ``content["gold"]``), validated like an answer."""
    raw = meta.get("gold")
    if raw is None and isinstance(content, dict):
        raw = content.get("gold")
    if raw is None:
        raise SkipRecord("no_gold_answer")
    if task_type == "preference":
        choice = raw.get("choice") if isinstance(raw, dict) else raw
        choice = str(choice).lower()
        choice = {"0": "a", "1": "b", "chosen": "a", "rejected": "b", "first": "a", "second": "b"}.get(choice, choice)
        if choice not in PREFERENCE_CHOICES:
            raise SkipRecord("bad_gold_answer")
        return {"choice": choice}
    if task_type == "rating":
        scores = raw.get("scores", raw) if isinstance(raw, dict) else None
        try:
            return {"scores": _check_scores(scores, config)}
        except InvalidAnswer:
            raise SkipRecord("bad_gold_answer") from None
    raise SkipRecord("gold_not_supported_for_task")


# -- answers -------------------------------------------------------------------------------------------------------
def _bounded_text(v: Any, field: str, required: bool) -> str:
    if v is None:
        v = ""
    if not isinstance(v, str):
        raise InvalidAnswer(f"{field} must be text")
    if len(v) > MAX_TEXT:
        raise InvalidAnswer(f"{field} is longer than {MAX_TEXT} characters")
    if "\x00" in v:
        raise InvalidAnswer(f"{field} contains a NUL character")
    if required and not v.strip():
        raise InvalidAnswer(f"{field} is empty")
    return v


def _check_scores(scores: Any, config: dict[str, Any]) -> dict[str, int]:
    if not isinstance(scores, dict):
        raise InvalidAnswer("scores must be an object {dimension: score}")
    lo, hi = config["scale"]
    out = {}
    for dim in config["dimensions"]:
        v = scores.get(dim)
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise InvalidAnswer(f"score for {dim!r} must be an integer from {lo} to {hi}")
        out[dim] = v
    extra = set(scores) - set(config["dimensions"])
    if extra:
        raise InvalidAnswer(f"unknown dimensions: {', '.join(sorted(map(str, extra)))}")
    return out


def validate_answer(task_type: str, config: dict[str, Any], value: Any) -> dict[str, Any]:
    """The cleaned annotation value, or :class:`InvalidAnswer`."""
    if not isinstance(value, dict):
        raise InvalidAnswer("the answer must be an object")
    if task_type == "sft":
        return {"response": _bounded_text(value.get("response"), "response", True)}
    if task_type == "preference":
        choice = str(value.get("choice", "")).lower()
        if choice not in PREFERENCE_CHOICES:
            raise InvalidAnswer("choice must be a, b or tie")
        need = config.get("rationale") == "required"
        return {"choice": choice, "rationale": _bounded_text(value.get("rationale"), "rationale", need)}
    if task_type == "rating":
        return {"scores": _check_scores(value.get("scores"), config),
                "comment": _bounded_text(value.get("comment"), "comment", False)}
    if task_type == "critique":
        return {"critique": _bounded_text(value.get("critique"), "critique", True)}
    raise InvalidAnswer(f"unknown task type {task_type!r}")


def gold_score(task_type: str, config: dict[str, Any], answer: dict[str, Any], gold: dict[str, Any]) -> float:
    """1.0 for a correct gold answer, 0.0 for a wrong one; ratings score the share of dimensions within
    ``gold_tolerance`` of the known score."""
    if task_type == "preference":
        return float(answer.get("choice") == gold.get("choice"))
    if task_type == "rating":
        tol = config.get("gold_tolerance", 0)
        dims = gold["scores"]
        return sum(abs(answer["scores"].get(d, 10 ** 6) - v) <= tol for d, v in dims.items()) / len(dims)
    return float("nan")


def screen_to_stored(choice: str, swapped: bool) -> str:
    """Map the side the annotator picked on screen to the record's orientation (and back: it is an involution)."""
    if swapped and choice in ("a", "b"):
        return "b" if choice == "a" else "a"
    return choice

"""The ``dialogue`` annotation task (SuperBrain's expert dialogues): an expert converses with a configured LLM
backend about a domain question, corrects or rewrites the model's turns, and marks the final answer.

An item is a question: a record with ``question`` / ``prompt`` / ``instruction`` (or chat ``messages``), and an
optional ``domain`` (else the project's ``config["domain"]``). The expert asks; the server generates each model turn
(``POST /api/projects/{p}/assignments/{a}/dialogue/turn`` with the transcript so far, as the expert has corrected
it); the model always continues from the corrected conversation. The answer::

    {"turns": [{"role": "model"|"expert", "text": str}, ...], "final_answer": str, "final_turn": int | None}

**What the model said is never taken from the browser.** On submission the server asks the backend again for every
model turn, with the same messages and sampling (temperature 0 by default, a fixed seed): the response cache
(``$ASSAY_DIALOGUE_CACHE``, default ``$XDG_CACHE_HOME/assay/dialogue-responses.sqlite``) answers with exactly what
the model said during the dialogue. The stored value records, per model turn, the ``original`` and whether the
expert ``corrected`` it, plus the model's identity; a turn whose original cannot be reproduced (the cache was
cleared and the backend samples) is kept with ``verified: false``.

Project config: ``backend`` (a :class:`~assay.models.llm.BackendConfig`: default the bundled SmolLM2-135M-Instruct),
``max_tokens`` (default 96: keep model turns short), ``temperature`` (0.0), ``max_turns`` (model + expert turns,
default 12), ``system`` (the system prompt), ``domain``.
"""


import json
import os
import threading
from pathlib import Path
from typing import Any

TASK = "dialogue"
MAX_TEXT = 20_000
ROLES = ("model", "expert")
DEFAULT_SYSTEM = ("You are a knowledgeable assistant talking with a domain expert. Answer the question directly and "
                  "briefly; state your claims plainly so the expert can check them.")


class SkipRecord(ValueError):
    """A record that cannot become a dialogue item (re-raised as ``tasks.SkipRecord``)."""


class InvalidAnswer(ValueError):
    """A transcript that does not fit (re-raised as ``tasks.InvalidAnswer``)."""


class TurnError(RuntimeError):
    """The model could not produce a turn (the backend failed); the expert may try again."""


# -- configuration -------------------------------------------------------------------------------------------------
def default_config() -> dict[str, Any]:
    return {"backend": {}, "max_tokens": 96, "temperature": 0.0, "max_turns": 12, "system": DEFAULT_SYSTEM,
            "domain": ""}


def check_config(cfg: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from assay.models.llm import BackendConfig

    if not isinstance(cfg.get("backend"), dict):
        raise ValueError("dialogue backend must be an object (a backend configuration)")
    try:
        BackendConfig(**cfg["backend"])
    except (ValidationError, TypeError) as e:
        raise ValueError(f"dialogue backend: {str(e).splitlines()[0]}") from None
    mt = cfg.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool) or not 1 <= mt <= 4096:
        raise ValueError("dialogue max_tokens must be an integer from 1 to 4096")
    t = cfg.get("temperature")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0.0 <= t <= 2.0:
        raise ValueError("dialogue temperature must be a number from 0 to 2")
    turns = cfg.get("max_turns")
    if not isinstance(turns, int) or isinstance(turns, bool) or not 1 <= turns <= 100:
        raise ValueError("dialogue max_turns must be an integer from 1 to 100")
    if not isinstance(cfg.get("system"), str) or not isinstance(cfg.get("domain"), str):
        raise ValueError("dialogue system and domain must be strings")


# -- items ---------------------------------------------------------------------------------------------------------
def item_content(content: dict[str, Any], question: str | None) -> dict[str, Any]:
    """The item: ``question`` (found by the caller in the usual places) and ``domain`` when the record has one."""
    if not question or not question.strip():
        raise SkipRecord("no_question")
    out: dict[str, Any] = {"question": question}
    domain = content.get("domain")
    if isinstance(domain, str) and domain.strip():
        out["domain"] = domain.strip().lower()
    return out


def domain_of(config: dict[str, Any], content: dict[str, Any]) -> str:
    return content.get("domain") or (config.get("domain") or "").strip().lower() or "general"


# -- the conversation ----------------------------------------------------------------------------------------------
def check_turns(turns: Any, max_turns: int, *, ending: str | None = None) -> list[dict[str, str]]:
    """The transcript's turns, cleaned: a list of ``{"role", "text"}`` alternating model/expert, starting with the
    model (the question is the first user message); ``ending``: the role the last turn must have."""
    if not isinstance(turns, list):
        raise InvalidAnswer("turns must be a list")
    if len(turns) > max_turns:
        raise InvalidAnswer(f"at most {max_turns} turns")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise InvalidAnswer(f"turn {i} is not an object")
        role, text = t.get("role"), t.get("text")
        expected = ROLES[i % 2]
        if role != expected:
            raise InvalidAnswer(f"turn {i} must be a {expected} turn (the model answers first, then you, in turn)")
        if not isinstance(text, str) or len(text) > MAX_TEXT or "\x00" in text:
            raise InvalidAnswer(f"turn {i}: text must be a string of at most {MAX_TEXT} characters")
        if role == "expert" and not text.strip():
            raise InvalidAnswer(f"turn {i}: your message is empty")
        out.append({"role": role, "text": text})
    if ending and out and out[-1]["role"] != ending:
        raise InvalidAnswer(f"the transcript must end with a {ending} turn")
    return out


def messages(config: dict[str, Any], content: dict[str, Any], turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """The chat the model sees: system prompt, the question, then the turns as the expert left them."""
    system = config.get("system", DEFAULT_SYSTEM)
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": content["question"]})
    for t in turns:
        msgs.append({"role": "assistant" if t["role"] == "model" else "user", "content": t["text"]})
    return msgs


def cache_path() -> Path:
    env = os.environ.get("ASSAY_DIALOGUE_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "assay" / "dialogue-responses.sqlite"


_BACKENDS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def backend(config: dict[str, Any]) -> Any:
    """The project's backend behind the response cache (one per configuration and cache file per process)."""
    from assay.models.llm import BackendConfig, cached, shared_backend

    bc = BackendConfig(**(config.get("backend") or {}))
    key = (bc.model_dump_json(), str(cache_path()))
    with _LOCK:
        b = _BACKENDS.get(key)
        if b is None:
            b = _BACKENDS[key] = cached(shared_backend(bc), cache_path())
        return b


def _ask(config: dict[str, Any], content: dict[str, Any], turns: list[dict[str, str]]) -> tuple[str, str]:
    from assay.models.llm import SamplingParams

    params = SamplingParams(temperature=float(config.get("temperature", 0.0)), max_tokens=int(config["max_tokens"]),
                            seed=len(turns))
    b = backend(config)
    done = b.chat(messages(config, content, turns), params)
    if not done.ok:
        raise TurnError(f"the model did not answer: {done.error}")
    return done.text.strip(), b.identity


def next_turn(config: dict[str, Any], content: dict[str, Any], turns: Any) -> dict[str, str]:
    """The model's next turn after ``turns`` (which end with the expert's message, or are empty)."""
    cleaned = check_turns(turns, int(config["max_turns"]) - 1)
    if cleaned and cleaned[-1]["role"] != "expert":
        raise InvalidAnswer("write your message before asking the model again")
    text, model = _ask(config, content, cleaned)
    return {"role": "model", "text": text, "model": model}


def verified_answer(config: dict[str, Any], content: dict[str, Any], value: Any) -> dict[str, Any]:
    """The submitted transcript with what the model really said: each model turn's ``original`` is asked of the
    backend again (the cache has it), ``corrected`` when the expert changed it (module docstring)."""
    if not isinstance(value, dict):
        raise InvalidAnswer("the answer must be an object")
    turns = check_turns(value.get("turns"), int(config["max_turns"]))
    if not any(t["role"] == "model" for t in turns):
        raise InvalidAnswer("ask the model at least once before submitting")
    final = value.get("final_answer")
    if not isinstance(final, str) or not final.strip() or len(final) > MAX_TEXT:
        raise InvalidAnswer("mark the final answer (it may not be empty)")
    final_turn = value.get("final_turn")
    if final_turn in ("", None):
        final_turn = None
    else:
        try:
            final_turn = int(final_turn)
        except (TypeError, ValueError):
            raise InvalidAnswer("final_turn must be the index of a model turn") from None
        if not (0 <= final_turn < len(turns) and turns[final_turn]["role"] == "model"):
            raise InvalidAnswer("final_turn must be the index of a model turn")
    out_turns, model = [], None
    for i, t in enumerate(turns):
        if t["role"] == "expert":
            out_turns.append(dict(t))
            continue
        try:
            original, model = _ask(config, content, turns[:i])
            verified = True
        except TurnError:
            original, verified = None, False
        out_turns.append({"role": "model", "text": t["text"], "original": original,
                          "corrected": original is None or t["text"].strip() != original.strip(),
                          "verified": verified})
    return {"turns": out_turns, "final_answer": final.strip(), "final_turn": final_turn,
            "model": model or backend(config).identity, "domain": domain_of(config, content)}


def submitted(db: Any, project: Any, assignment_id: int, value: Any) -> dict[str, Any]:
    """The value to store for a submitted dialogue (:func:`verified_answer` over the slot's item); a bad transcript
    is a 400 WorkflowError."""
    from sqlalchemy import select

    from assay.annotate import workflow
    from assay.annotate.models import Assignment, Item

    with db.read() as s:
        content = s.scalar(select(Item.content).join(Assignment, Assignment.item_id == Item.id)
                           .where(Assignment.id == assignment_id))
    try:
        return verified_answer(project.config, content, value)
    except InvalidAnswer as e:
        raise workflow.WorkflowError(str(e)) from None


def validate(value: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Structural check of a stored value (:func:`verified_answer` made it); used by ``tasks.validate_answer``."""
    if not isinstance(value, dict) or not isinstance(value.get("model"), str):
        raise InvalidAnswer("a dialogue answer is checked by the server against the model (submit the transcript)")
    turns = value.get("turns")
    check_turns([{"role": t.get("role"), "text": t.get("text")} for t in turns if isinstance(t, dict)]
                if isinstance(turns, list) else turns, int(config["max_turns"]))
    return value


def answer_from_form(form: Any) -> dict[str, Any]:
    try:
        turns = json.loads(form.get("transcript") or "[]")
    except ValueError:
        turns = None
    return {"turns": turns, "final_answer": form.get("final_answer", ""), "final_turn": form.get("final_turn")}


# -- export --------------------------------------------------------------------------------------------------------
def export_fields(content: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """A transcript row: the conversation as chat ``messages`` (the expert's corrections applied), the turns with
    their originals, which model turns were corrected, the final answer and the model."""
    msgs = [{"role": "user", "content": content["question"]}]
    for t in value["turns"]:
        msgs.append({"role": "assistant" if t["role"] == "model" else "user", "content": t["text"]})
    corrected = [i for i, t in enumerate(value["turns"]) if t["role"] == "model" and t.get("corrected")]
    return {"question": content["question"], "domain": value.get("domain") or content.get("domain") or "general",
            "messages": msgs, "turns": value["turns"], "corrected_turns": corrected,
            "final_answer": value["final_answer"], "final_turn": value.get("final_turn"), "model": value["model"]}


# -- the turn endpoint ---------------------------------------------------------------------------------------------
def router() -> Any:
    from fastapi import APIRouter, HTTPException, Request
    from pydantic import BaseModel, Field
    from sqlalchemy import select

    from assay.annotate.app import authorize
    from assay.annotate.models import SLOT_LEASED, Assignment, Item

    r = APIRouter(prefix="/api")

    class TurnBody(BaseModel):
        turns: list[dict[str, Any]] = Field(default_factory=list, max_length=200)

    @r.post("/projects/{project_id}/assignments/{assignment_id}/dialogue/turn")
    def turn(project_id: int, assignment_id: int, body: TurnBody, request: Request) -> dict[str, Any]:
        """The model's next turn in the dialogue of a slot you hold (the transcript so far, as you corrected it)."""
        with request.app.state.db.read() as s:
            c, p, _ = authorize(s, request, project_id, mutate=True)
            if p.task_type != TASK:
                raise HTTPException(400, "not a dialogue project")
            content = s.scalar(select(Item.content).join(Assignment, Assignment.item_id == Item.id)
                               .where(Assignment.id == assignment_id, Assignment.project_id == p.id,
                                      Assignment.user_id == c.user_id, Assignment.status == SLOT_LEASED))
            config = dict(p.config)
        if content is None:
            raise HTTPException(404, "no such assignment for you (a slot whose lease ran out may have gone to "
                                     "somebody else)")
        try:
            return next_turn(config, content, body.turns)
        except InvalidAnswer as e:
            raise HTTPException(400, str(e)) from None
        except TurnError as e:
            raise HTTPException(503, str(e)) from None

    return r

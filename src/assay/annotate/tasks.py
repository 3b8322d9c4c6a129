"""The task types: how an imported record becomes an item to show, and what a valid answer looks like.

=============  =========================================================  ==============================================
task type      item content (normalised at import)                        annotation value
=============  =========================================================  ==============================================
sft            ``prompt`` (+ ``context`` turns, ``system``, draft          ``{"response": str}``
               ``response`` to edit)
preference     ``prompt``, ``a``, ``b``, ``kind`` (``text``|``image``)     ``{"choice": "a"|"b"|"tie", "rationale": str}``
rating         ``prompt`` (optional), ``response``                         ``{"scores": {dimension: int}, "comment": str}``
critique       ``prompt`` (optional), ``response``                         ``{"critique": str}``
image_edit     ``before`` image, ``after`` image (optional),               ``{"instruction": str, "after_source": "item"|
               ``caption``, draft ``instruction``, ``width``/``height``    "upload"|"url", "after": bytes, "after_url":
                                                                           str, "mask": PNG bytes, "mask_pixels": int}``
trajectory     one robot episode: ``episode_index``, ``instruction``,       ``{"success": bool, "instruction": str,
               ``fps``, ``n_frames``, action/state ``series``, camera       "segments": [{"start", "end", "label"}],
               ``videos`` (see ``trajectory_task.py``)                      "note": str}``
clip_rating    ``prompt`` (the caption), ``video`` (a checked local file   ``{"scores": {dimension: int},
               with ``start``/``end``, or bytes), ``keyframes``            "physics_note": str}``
classify       ``text``, model ``suggestions`` (see ``label_task.py``)     ``{"labels": [str], "suggested", ...}``
spans          ``text``, model ``suggestions``                             ``{"spans": [{"start", "end", "label"}], ...}``
=============  =========================================================  ==============================================

Image pairs (preference items of kind ``image``) and the images of ``image_edit`` items are kept as bytes in the item
(a record's ``image_path`` is read at import); remote URLs are refused at import (``remote_image``), so a browser
only ever loads media from the app's own authenticated endpoints. Video stays on disk (checked at import) unless the
record holds its bytes. Preference answers also record ``shown_swapped``: whether the annotator saw the record's
second response on the left.

Preference values are stored in the record's own orientation (``a`` is the record's first response, e.g. ``chosen``),
whatever side the annotator saw it on: items are shown swapped at random (fixed per item) to cancel position bias,
and the UI maps the on-screen A/B back before saving.

Accepted record shapes (``content`` of an Assay record, or a foreign JSON object): a plain string; ``prompt`` /
``instruction`` (+ ``input``) / ``question``; ``messages`` (chat turns); ``chosen``/``rejected``;
``response_a``/``response_b``; ``responses: [a, b]``; Pick-a-Pic style ``caption`` + ``jpg_0``/``jpg_1``;
``image_a``/``image_b`` (bytes or local paths); for ``image_edit`` ``before``/``after``, MagicBrush's
``source_img``/``target_img`` or an image-text record's ``image``/``image_path``; for ``clip_rating`` Assay video
records (``path`` + ``start``/``end``, ``clip_path``, ``keyframes``, ``caption``) or ``video`` bytes.
"""

from __future__ import annotations

from typing import Any

import xxhash

from assay.annotate import dialogue_task, label_task, media, trajectory_task

MAX_TEXT = 200_000  # characters in one annotation field
PREFERENCE_CHOICES = ("a", "b", "tie")
DEFAULT_RUBRIC = ["helpfulness", "correctness", "harmlessness"]
CLIP_RUBRIC = ["motion_quality", "physical_plausibility", "visual_quality", "text_alignment"]
RUBRIC_TASKS = ("rating", "clip_rating")  # answers are {"scores": {dimension: int}} on the project's scale
SIDES = (True, False, "item", "assignment")  # preference randomize_sides: per item (True = "item"), off, per assignment
MAX_URL = 2000
MAX_UPLOAD_MB = 30  # per uploaded image; the web form as a whole is capped at MAX_FORM_BYTES
MAX_FORM_BYTES = 2 * MAX_UPLOAD_MB * 2**20 + 4 * 2**20


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
    if task_type == "image_edit":
        return {"mask": "optional", "max_upload_mb": 10}
    if task_type == "clip_rating":
        return {"dimensions": list(CLIP_RUBRIC), "scale": [1, 5], "gold_tolerance": 0, "note": "optional"}
    if task_type == trajectory_task.TASK:
        return trajectory_task.default_config()
    if task_type == dialogue_task.TASK:
        return dialogue_task.default_config()
    if task_type in label_task.TASKS:
        return label_task.default_config(task_type)
    return {}


def check_config(task_type: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """The project config with defaults filled in; raises ValueError on nonsense."""
    cfg = default_config(task_type)
    cfg.update(config or {})
    if task_type in RUBRIC_TASKS:
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
    if task_type == "preference" and cfg.get("randomize_sides") not in SIDES:
        raise ValueError("preference randomize_sides must be true (per item), false or \"assignment\"")
    if task_type == "image_edit":
        if cfg.get("mask") not in ("optional", "required", "none"):
            raise ValueError("image_edit mask must be optional, required or none")
        mb = cfg.get("max_upload_mb")
        if not isinstance(mb, (int, float)) or isinstance(mb, bool) or not 0 < mb <= MAX_UPLOAD_MB:
            raise ValueError(f"image_edit max_upload_mb must be a number in (0, {MAX_UPLOAD_MB}]")
    if task_type == "clip_rating" and cfg.get("note") not in ("optional", "required", "none"):
        raise ValueError("clip_rating note must be optional, required or none")
    if task_type == trajectory_task.TASK:
        trajectory_task.check_config(cfg)
    if task_type == dialogue_task.TASK:
        dialogue_task.check_config(cfg)
    if task_type in label_task.TASKS:
        label_task.check_config(task_type, cfg)
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


def item_content(task_type: str, content: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The normalised item content for ``task_type`` (see the module table); raises :class:`SkipRecord`."""
    if task_type in label_task.TASKS:
        try:
            return label_task.item_content(content, _prompt_of(content) if isinstance(content, dict) else None, meta)
        except label_task.SkipRecord as e:
            raise SkipRecord(str(e)) from None
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
        a, b = pair[0], pair[1]
        if pair[2] == "image":
            a, b = _image(a), _image(b)
        out = {"prompt": prompt or text or "", "a": a, "b": b, "kind": pair[2]}
    elif task_type in ("rating", "critique"):
        response = reply if reply is not None else (text if prompt is None or text != prompt else None)
        if not response or not response.strip():
            raise SkipRecord("no_response")
        out = {"prompt": prompt or "", "response": response}
    elif task_type == "image_edit":
        return _edit_item(content)
    elif task_type == "clip_rating":
        return _clip_item(content)
    elif task_type == dialogue_task.TASK:
        try:
            return dialogue_task.item_content(content, prompt if prompt is not None else text)
        except dialogue_task.SkipRecord as e:
            raise SkipRecord(str(e)) from None
    elif task_type == trajectory_task.TASK:
        try:
            return trajectory_task.item_content(content)
        except trajectory_task.SkipRecord as e:
            raise SkipRecord(str(e)) from None
    else:
        raise ValueError(f"unknown task type {task_type!r}")
    if context:
        out["context"] = context
    if system:
        out["system"] = system
    return out


# -- visual items --------------------------------------------------------------------------------------------------
def _image(value: Any) -> bytes:
    """Image bytes for an item, or :class:`SkipRecord` with the reason (``remote_image``, ``bad_image``, ...).
    Accepts the Hugging Face ``datasets`` image form ``{"bytes": …, "path": …}`` too."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    try:
        return media.load_image(value)
    except media.MediaError as e:
        raise SkipRecord(str(e)) from None


def _first(c: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((c[k] for k in keys if c.get(k) not in (None, "", b"")), None)


def _edit_item(c: dict[str, Any]) -> dict[str, Any]:
    before_v = _first(c, ("before", "source_img", "input_image", "image", "image_path"))
    if before_v is None:
        raise SkipRecord("no_before_image")
    before = _image(before_v)
    after_v = _first(c, ("after", "target_img", "output_image", "edited_image"))
    after = _image(after_v) if after_v is not None else None
    _fmt, width, height = media.image_info(before)
    caption = _text(c.get("caption")) or _text(c.get("prompt")) or ""
    return {"before": before, "after": after, "width": width, "height": height, "caption": caption,
            "instruction": _text(c.get("instruction")) or ""}


def _seconds_or_none(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0 else None


def _clip_item(c: dict[str, Any]) -> dict[str, Any]:
    """A clip to rate: video bytes in the record, the materialised ``clip_path``, or the source ``path`` with the
    clip's ``start``/``end`` (the player is limited to that span); plus any keyframes (JPEG bytes)."""
    video: dict[str, Any] | None = None
    problem = "no_video"
    raw = _first(c, ("video", "clip", "mp4", "webm"))
    if isinstance(raw, (bytes, bytearray)):
        mime = media.video_mime_of_bytes(bytes(raw))
        if mime is None:
            raise SkipRecord("not_a_video")
        video = {"bytes": bytes(raw), "mime": mime, "start": None, "end": None}
    else:
        for key, span in (("clip_path", False), ("path", True)):
            if c.get(key):
                try:
                    path = media.check_video_file(c[key])
                except media.MediaError as e:
                    problem = str(e)
                    continue
                start = _seconds_or_none(c.get("start")) if span else None
                end = _seconds_or_none(c.get("end")) if span else None
                if start is not None and end is not None and end <= start:
                    raise SkipRecord("bad_clip_span")
                video = {"path": path, "start": start, "end": end}
                break
    frames = c.get("keyframes") if isinstance(c.get("keyframes"), list) else []
    keyframes = []
    for f in frames:
        try:
            keyframes.append(media.load_image(f) if isinstance(f, (bytes, bytearray)) else None)
        except media.MediaError:
            keyframes.append(None)
    if any(k is None for k in keyframes):
        raise SkipRecord("bad_keyframe")
    if video is None and not keyframes:
        raise SkipRecord(problem)
    times = c.get("keyframe_times")
    times = [float(x) for x in times] if isinstance(times, list) and len(times) == len(keyframes) and all(
        isinstance(x, (int, float)) for x in times) else []
    prompt = _text(c.get("caption")) or _text(c.get("prompt")) or _text(c.get("text")) or ""
    return {"prompt": prompt, "video": video, "keyframes": keyframes, "keyframe_times": times}


def answer_context(task_type: str, content: dict[str, Any]) -> dict[str, Any] | None:
    """What validating an answer needs to know about its item (image_edit: the before image's size, whether the item
    has an after image); None for tasks whose answers stand alone."""
    if task_type == "image_edit":
        return {"size": (content["width"], content["height"]), "has_after": content.get("after") is not None}
    if task_type == trajectory_task.TASK:
        return trajectory_task.answer_context(content)
    if task_type in label_task.TASKS:
        return label_task.answer_context(content)
    return None


def swapped_for(record_id: str, config: dict[str, Any]) -> bool:
    """Whether a pairwise item is shown with its responses swapped (per-item mode): a coin flip fixed by the record
    id."""
    per_item = config.get("randomize_sides", True) in (True, "item")
    return per_item and xxhash.xxh3_64_intdigest(record_id.encode()) & 1 == 1


def sides_swapped(config: dict[str, Any], item_swapped: bool, record_id: str, assignment_id: int | None,
                  user_id: int | None) -> bool:
    """Whether this annotator sees the pair swapped. ``randomize_sides: "assignment"``: a coin flip per assignment
    (fixed by record, slot and annotator, so a reload shows the same order, and the k annotators of an item see
    independent orders); otherwise the item's own flip."""
    if config.get("randomize_sides", True) == "assignment":
        if assignment_id is None:
            return False
        return xxhash.xxh3_64_intdigest(f"{record_id}\x00{assignment_id}\x00{user_id}".encode()) & 1 == 1
    return bool(item_swapped)


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
    if task_type in RUBRIC_TASKS:
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


def _edit_answer(config: dict[str, Any], value: dict[str, Any], context: dict[str, Any] | None) -> dict[str, Any]:
    if context is None:
        raise InvalidAnswer("image_edit answers are checked against their item")
    limit = int(config.get("max_upload_mb", 10) * 2**20)
    out: dict[str, Any] = {"instruction": _bounded_text(value.get("instruction"), "instruction", True),
                           "after_source": value.get("after_source"), "after": None, "after_url": None,
                           "mask": None, "mask_pixels": 0}
    source = out["after_source"]
    try:
        if source == "item":
            if not context["has_after"]:
                raise InvalidAnswer("this item has no after image: upload one or give its link")
        elif source == "upload":
            if value.get("after") in (None, "", b""):
                raise InvalidAnswer("choose the after image to upload")
            out["after"] = media.check_upload(value["after"], what="after image", max_bytes=limit)
        elif source == "url":
            url = _bounded_text(value.get("after_url"), "after image link", True).strip()
            if not url.startswith(("https://", "http://")) or len(url) > MAX_URL or any(c.isspace() for c in url):
                raise InvalidAnswer("the after image link must be an http(s) URL")
            out["after_url"] = url
        else:
            raise InvalidAnswer("after_source must be item, upload or url")
        mask = value.get("mask")
        if mask not in (None, "", b"") and config.get("mask") != "none":
            png = media.check_upload(mask, what="mask", max_bytes=limit)
            out["mask"], out["mask_pixels"] = media.normalise_mask(png, context["size"])
            if out["mask_pixels"] == 0:
                out["mask"] = None
    except media.MediaError as e:
        raise InvalidAnswer(str(e)) from None
    if config.get("mask") == "required" and out["mask"] is None:
        raise InvalidAnswer("draw the mask of the edited region")
    return out


def validate_answer(task_type: str, config: dict[str, Any], value: Any,
                    context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cleaned annotation value, or :class:`InvalidAnswer`. ``context``: see :func:`answer_context`."""
    if not isinstance(value, dict):
        raise InvalidAnswer("the answer must be an object")
    if task_type == "sft":
        return {"response": _bounded_text(value.get("response"), "response", True)}
    if task_type == "preference":
        choice = str(value.get("choice", "")).lower()
        if choice not in PREFERENCE_CHOICES:
            raise InvalidAnswer("choice must be a, b or tie")
        need = config.get("rationale") == "required"
        out = {"choice": choice, "rationale": _bounded_text(value.get("rationale"), "rationale", need)}
        if isinstance(value.get("shown_swapped"), bool):
            out["shown_swapped"] = value["shown_swapped"]
        return out
    if task_type == "rating":
        return {"scores": _check_scores(value.get("scores"), config),
                "comment": _bounded_text(value.get("comment"), "comment", False)}
    if task_type == "critique":
        return {"critique": _bounded_text(value.get("critique"), "critique", True)}
    if task_type == "clip_rating":
        return {"scores": _check_scores(value.get("scores"), config),
                "physics_note": _bounded_text(value.get("physics_note"), "physics note",
                                              config.get("note") == "required")}
    if task_type == "image_edit":
        return _edit_answer(config, value, context)
    if task_type == dialogue_task.TASK:
        try:
            return dialogue_task.validate(value, config)
        except dialogue_task.InvalidAnswer as e:
            raise InvalidAnswer(str(e)) from None
    if task_type == trajectory_task.TASK:
        try:
            return trajectory_task.validate_answer(config, value, context, _bounded_text)
        except trajectory_task.InvalidAnswer as e:
            raise InvalidAnswer(str(e)) from None
    if task_type in label_task.TASKS:
        try:
            return label_task.validate_answer(task_type, config, value, context)
        except label_task.InvalidAnswer as e:
            raise InvalidAnswer(str(e)) from None
    raise InvalidAnswer(f"unknown task type {task_type!r}")


def gold_score(task_type: str, config: dict[str, Any], answer: dict[str, Any], gold: dict[str, Any]) -> float:
    """1.0 for a correct gold answer, 0.0 for a wrong one; ratings score the share of dimensions within
    ``gold_tolerance`` of the known score."""
    if task_type == "preference":
        return float(answer.get("choice") == gold.get("choice"))
    if task_type in RUBRIC_TASKS:
        tol = config.get("gold_tolerance", 0)
        dims = gold["scores"]
        return sum(abs(answer["scores"].get(d, 10 ** 6) - v) <= tol for d, v in dims.items()) / len(dims)
    return float("nan")


def screen_to_stored(choice: str, swapped: bool) -> str:
    """Map the side the annotator picked on screen to the record's orientation (and back: it is an involution)."""
    if swapped and choice in ("a", "b"):
        return "b" if choice == "a" else "a"
    return choice

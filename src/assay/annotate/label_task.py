"""The ``classify`` and ``spans`` annotation tasks: label a text (one label, or several with ``multi_label``), or
mark spans of it with entity labels (NER), optionally starting from a model's suggestions.

=========  ===================================================  ====================================================
task       item content (normalised at import)                  answer (cleaned by :func:`validate_answer`)
=========  ===================================================  ====================================================
classify   ``text``, ``suggestions: {"labels": [{"label",        ``{"labels": [str], "suggested": [str],
           "score"}]}``                                         "suggestion_accepted": bool|None}``
spans      ``text``, ``suggestions: {"spans": [{"start", "end",   ``{"spans": [{"start", "end", "label", "text",
           "label", "score"}]}``                                 "suggested"}], "accepted_suggestions": int,
                                                                "rejected_suggestions": int, "added": int}``
=========  ===================================================  ====================================================

Suggestions come with the record (``content["suggestions"]`` or ``meta["suggestions"]``) or from ``assay annotate
suggest`` (zero-shot: :mod:`assay.annotate.suggest`). The annotator's form starts *pre-filled* with the suggested
answer: for ``classify`` the top-scoring label (single-label) or every label scoring at least the project's
``suggestion_threshold`` (multi-label); for ``spans`` every suggested span at or above the threshold. The server
re-derives that suggested answer when an answer is submitted and records whether it was kept, so the project lead
can measure how much the model helps.

Span offsets are **Unicode code points** into the item's ``text`` (Python ``str`` indices: ``text[start:end]`` is the
span). The browser works in UTF-16 code units and converts both ways (``static/labels.js``), so emoji and other
characters outside the BMP do not shift later spans. Spans may not overlap (so that a BIO tagging exists).
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable

CLASSIFY, SPANS = "classify", "spans"
TASKS = (CLASSIFY, SPANS)
MAX_LABELS = 200
MAX_NAME = 100
MAX_SPANS = 1000
RESERVED_KEYS = {" ", "Enter", "Escape"}
TOKEN = re.compile(r"\w+|[^\w\s]")  # tokens of the BIO export and of token-overlap agreement


class SkipRecord(ValueError):
    """A record that cannot become an item (re-raised as ``tasks.SkipRecord`` by the caller)."""


class InvalidAnswer(ValueError):
    """An answer that does not fit (re-raised as ``tasks.InvalidAnswer`` by the caller)."""


# -- configuration -------------------------------------------------------------------------------------------------
def default_config(task: str) -> dict[str, Any]:
    """``labels``: names, or ``{"name", "key", "description"}`` (``key`` a hotkey, default 1-9 in order;
    ``description`` what zero-shot suggestions compare the text with); ``multi_label`` (classify);
    ``suggestion_threshold``: the score from which a suggestion pre-fills the form."""
    cfg: dict[str, Any] = {"labels": [], "suggestion_threshold": 0.5}
    if task == CLASSIFY:
        cfg["multi_label"] = False
    return cfg


def check_config(task: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Labels normalised to ``{"name", "key", "description"}``; raises ValueError on nonsense."""
    raw = cfg.get("labels")
    if isinstance(raw, str):
        raw = [x.strip() for x in raw.split(",") if x.strip()]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_LABELS:
        raise ValueError(f"{task} projects need a list of 1 to {MAX_LABELS} labels (config labels)")
    labels = []
    for k, x in enumerate(raw):
        spec = {"name": x} if isinstance(x, str) else x
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
            raise ValueError(f"label {k + 1} must be a name or an object with a name")
        name = spec["name"].strip()
        if len(name) > MAX_NAME or any(ch in name for ch in "\n\r\t\x00"):
            raise ValueError(f"label {name[:40]!r} is too long or has control characters")
        key = spec.get("key", str(k + 1) if k < 9 else None)
        if key is not None and (not isinstance(key, str) or len(key) != 1 or key in RESERVED_KEYS):
            raise ValueError(f"label {name!r}: key must be one character (not space)")
        desc = spec.get("description") or ""
        if not isinstance(desc, str):
            raise ValueError(f"label {name!r}: description must be text")
        labels.append({"name": name, "key": key, "description": desc})
    names = [x["name"] for x in labels]
    if len(set(names)) != len(names):
        raise ValueError("label names must be distinct")
    keys = [x["key"] for x in labels if x["key"] is not None]
    if len(set(keys)) != len(keys):
        raise ValueError("label keys must be distinct")
    cfg["labels"] = labels
    threshold = cfg.get("suggestion_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError("suggestion_threshold must be a number from 0 to 1")
    if task == CLASSIFY and not isinstance(cfg.get("multi_label"), bool):
        raise ValueError("multi_label must be true or false")
    return cfg


def label_names(config: dict[str, Any]) -> list[str]:
    return [x["name"] for x in config["labels"]]


# -- records -> items ----------------------------------------------------------------------------------------------
def _score(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        return None
    return round(float(v), 6)


def clean_suggestions(raw: Any, text: str) -> dict[str, Any]:
    """The well-formed part of a suggestions object: label scores in [0, 1], spans inside the text (code points).
    Malformed entries are dropped (a suggestion is a hint, never a reason to lose the record)."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    labels = raw.get("labels")
    if isinstance(labels, dict):  # {"sports": 0.91, ...}
        labels = [{"label": k, "score": v} for k, v in labels.items()]
    if isinstance(labels, list):
        best: dict[str, float] = {}
        for x in labels:
            if isinstance(x, dict) and isinstance(x.get("label"), str) and _score(x.get("score", 1.0)) is not None:
                best[x["label"]] = max(best.get(x["label"], 0.0), _score(x.get("score", 1.0)))
        out["labels"] = [{"label": k, "score": v} for k, v in sorted(best.items(), key=lambda kv: -kv[1])]
    spans = raw.get("spans")
    if isinstance(spans, list):
        good = []
        for x in spans[:MAX_SPANS]:
            if not isinstance(x, dict) or not isinstance(x.get("label"), str):
                continue
            start, end, score = x.get("start"), x.get("end"), _score(x.get("score", 1.0))
            if (isinstance(start, int) and isinstance(end, int) and not isinstance(start, bool)
                    and not isinstance(end, bool) and 0 <= start < end <= len(text) and score is not None):
                good.append({"start": start, "end": end, "label": x["label"], "score": score})
        out["spans"] = sorted(good, key=lambda s: (s["start"], s["end"]))
    if isinstance(raw.get("model"), str):
        out["model"] = raw["model"][:200]
    return out


def item_content(content: Any, fallback_text: str | None, meta: dict[str, Any] | None) -> dict[str, Any]:
    """``{"text", "suggestions"}`` of a record; the text is ``text`` (or the prompt a caller found)."""
    text = content if isinstance(content, str) else None
    if isinstance(content, dict):
        text = next((content[k] for k in ("text", "content", "sentence") if isinstance(content.get(k), str)),
                    fallback_text)
    if not isinstance(text, str) or not text.strip():
        raise SkipRecord("no_text")
    if "\x00" in text:
        raise SkipRecord("bad_text")
    raw = content.get("suggestions") if isinstance(content, dict) else None
    if raw is None and meta:
        raw = meta.get("suggestions")
    return {"text": text, "suggestions": clean_suggestions(raw, text)}


# -- what the model suggests ---------------------------------------------------------------------------------------
def suggested_labels(config: dict[str, Any], suggestions: dict[str, Any]) -> list[str]:
    """The labels the form starts with: the top known label (single-label), or every known label scoring at least
    the threshold (multi-label)."""
    known = set(label_names(config))
    scored = [x for x in suggestions.get("labels") or [] if x["label"] in known]
    if not scored:
        return []
    if config.get("multi_label"):
        return [x["label"] for x in scored if x["score"] >= config["suggestion_threshold"]]
    top = max(scored, key=lambda x: x["score"])
    return [top["label"]] if top["score"] >= config["suggestion_threshold"] else []


def suggested_spans(config: dict[str, Any], suggestions: dict[str, Any]) -> list[dict[str, Any]]:
    """Suggested spans of known labels at or above the threshold, without overlaps (the higher score wins)."""
    known = set(label_names(config))
    ok = [x for x in suggestions.get("spans") or [] if x["label"] in known
          and x["score"] >= config["suggestion_threshold"]]
    kept: list[dict[str, Any]] = []
    for x in sorted(ok, key=lambda s: -s["score"]):
        if all(x["end"] <= y["start"] or y["end"] <= x["start"] for y in kept):
            kept.append(x)
    return sorted(kept, key=lambda s: (s["start"], s["end"]))


def display(task: str, content: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The item for the page: the text, each label's suggestion score, and the pre-filled answer."""
    sugg = content.get("suggestions") or {}
    out = {"text": content["text"], "scores": {x["label"]: x["score"] for x in sugg.get("labels") or []}}
    if task == CLASSIFY:
        out["prefill"] = suggested_labels(config, sugg)
    else:
        out["prefill"] = [{**s, "suggested": True} for s in suggested_spans(config, sugg)]
    return out


# -- answers -------------------------------------------------------------------------------------------------------
def answer_context(content: dict[str, Any]) -> dict[str, Any]:
    return {"text": content["text"], "suggestions": content.get("suggestions") or {}}


def parse_span_lines(text: str) -> list[dict[str, Any]]:
    """Spans written one per line as ``START END LABEL`` (what the page's span box holds without JavaScript)."""
    out = []
    for k, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(None, 2)
        if not parts:
            continue
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise InvalidAnswer(f"span line {k} must read START END LABEL (character offsets), got {line.strip()!r}")
        out.append({"start": int(parts[0]), "end": int(parts[1]), "label": parts[2].strip()})
    return out


def _offset(v: Any, what: str) -> int:
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidAnswer(f"{what} must be a character offset")
    return v


def check_spans(raw: Any, text: str, names: list[str]) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        raw = parse_span_lines(raw)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidAnswer("spans must be a list of {start, end, label}")
    if len(raw) > MAX_SPANS:
        raise InvalidAnswer(f"at most {MAX_SPANS} spans")
    out = []
    for k, s in enumerate(raw, 1):
        if not isinstance(s, dict):
            raise InvalidAnswer(f"span {k} must be an object with start, end and label")
        start, end = _offset(s.get("start"), f"span {k}'s start"), _offset(s.get("end"), f"span {k}'s end")
        if not 0 <= start < end <= len(text):
            raise InvalidAnswer(f"span {k} ({start}-{end}) must lie within characters 0-{len(text)}, start < end")
        if s.get("label") not in names:
            raise InvalidAnswer(f"span {k}'s label {s.get('label')!r} is not one of: {', '.join(names)}")
        out.append({"start": start, "end": end, "label": s["label"], "text": text[start:end]})
    out.sort(key=lambda s: (s["start"], s["end"]))
    for a, b in zip(out, out[1:]):
        if b["start"] < a["end"]:
            raise InvalidAnswer(f"spans {a['start']}-{a['end']} ({a['label']}) and {b['start']}-{b['end']} "
                                f"({b['label']}) overlap")
    return out


def validate_answer(task: str, config: dict[str, Any], value: dict[str, Any],
                    context: dict[str, Any] | None) -> dict[str, Any]:
    if context is None:
        raise InvalidAnswer(f"{task} answers are checked against their item")
    names = label_names(config)
    if task == CLASSIFY:
        raw = value.get("labels", value.get("label"))
        chosen = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        if not all(isinstance(x, str) for x in chosen):
            raise InvalidAnswer("labels must be label names")
        unknown = [x for x in chosen if x not in names]
        if unknown:
            raise InvalidAnswer(f"unknown label {unknown[0]!r}: choose from {', '.join(names)}")
        labels = [n for n in names if n in chosen]  # the project's order, no duplicates
        if not config.get("multi_label") and len(labels) != 1:
            raise InvalidAnswer("choose exactly one label")
        suggested = suggested_labels(config, context["suggestions"])
        return {"labels": labels, "suggested": suggested,
                "suggestion_accepted": (labels == suggested) if suggested else None}
    spans = check_spans(value.get("spans"), context["text"], names)
    proposed = {(s["start"], s["end"], s["label"]) for s in suggested_spans(config, context["suggestions"])}
    for s in spans:
        s["suggested"] = (s["start"], s["end"], s["label"]) in proposed
    kept = sum(s["suggested"] for s in spans)
    return {"spans": spans, "accepted_suggestions": kept, "rejected_suggestions": len(proposed) - kept,
            "added": len(spans) - kept}


def answer_from_form(task: str, form: Any) -> dict[str, Any]:
    if task == CLASSIFY:
        return {"labels": [str(x) for x in form.getlist("label")]}
    return {"spans": str(form.get("spans", ""))}


# -- export --------------------------------------------------------------------------------------------------------
def tokens_of(text: str) -> list[tuple[int, int]]:
    """(start, end) code-point offsets of the tokens (words and single punctuation marks)."""
    return [m.span() for m in TOKEN.finditer(text)]


def bio_tags(text: str, spans: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Tokens and their BIO tags: a token belongs to a span it overlaps; the first such token is ``B-``."""
    tokens, tags = [], []
    ordered = sorted(spans, key=lambda s: s["start"])
    last_span = None
    for start, end in tokens_of(text):
        tokens.append(text[start:end])
        span = next((s for s in ordered if s["start"] < end and start < s["end"]), None)
        if span is None:
            tags.append("O")
        else:
            tags.append(("I-" if span is last_span else "B-") + span["label"])
        last_span = span
    return tokens, tags


def export_fields(task: str, config: dict[str, Any], content: dict[str, Any], value: dict[str, Any]
                  ) -> dict[str, Any]:
    sugg = content.get("suggestions") or {}
    if task == CLASSIFY:
        row = {"text": content["text"], "labels": value["labels"], "suggested": value.get("suggested", []),
               "suggestion_accepted": value.get("suggestion_accepted"), "suggestion_scores": sugg.get("labels", [])}
        if not config.get("multi_label"):
            row = {"text": row.pop("text"), "label": value["labels"][0], **row}
        return row
    tokens, tags = bio_tags(content["text"], value["spans"])
    return {"text": content["text"],
            "spans": [{"start": s["start"], "end": s["end"], "label": s["label"], "suggested": s["suggested"]}
                      for s in value["spans"]],
            "tokens": tokens, "ner_tags": tags, "accepted_suggestions": value["accepted_suggestions"],
            "rejected_suggestions": value["rejected_suggestions"], "added": value["added"],
            "suggested_spans": sugg.get("spans", [])}


# -- agreement -----------------------------------------------------------------------------------------------------
def label_sets(config: dict[str, Any], rows: Iterable[Any]) -> dict[str, list[tuple[Any, Any, Any]]]:
    """(item, annotator, value) triples for Krippendorff's α: one set ``label`` (single-label), or one per label
    ``label:NAME`` with True/False (multi-label: each label is its own yes/no question)."""
    rows = [r for r in rows if isinstance((r.value or {}).get("labels"), list)]
    if not config.get("multi_label"):
        return {"label": [(r.item_id, r.user_id, r.value["labels"][0]) for r in rows if r.value["labels"]]}
    return {f"label:{n}": [(r.item_id, r.user_id, n in r.value["labels"]) for r in rows] for n in label_names(config)}


def domain_of(config: dict[str, Any], name: str) -> list[Any]:
    return [True, False] if name.startswith("label:") else label_names(config)


def _f1(matched: int, total_a: int, total_b: int) -> float | None:
    if total_a + total_b == 0:
        return None
    return round(2 * matched / (total_a + total_b), 4)


def span_agreement(text_of: dict[Any, str], answers: Iterable[tuple[Any, Any, list[dict[str, Any]]]]
                   ) -> dict[str, Any]:
    """Span-level agreement between every pair of annotators of an item, micro-averaged over pairs: ``exact_f1``
    counts spans with the same start, end and label; ``token_f1`` counts (token, label) pairs, a token belonging to
    a span it overlaps (partial overlaps earn partial credit). F1 is symmetric: 2·matched / (|A| + |B|)."""
    per_item: dict[Any, dict[Any, list[dict[str, Any]]]] = {}
    for item, user, spans in answers:
        per_item.setdefault(item, {})[user] = spans
    pairs = ex_m = ex_a = ex_b = tok_m = tok_a = tok_b = 0
    for item, by_user in per_item.items():
        toks = tokens_of(text_of[item])
        labelled = {u: {(k, s["label"]) for s in spans for k, (ts, te) in enumerate(toks)
                        if s["start"] < te and ts < s["end"]} for u, spans in by_user.items()}
        exact = {u: {(s["start"], s["end"], s["label"]) for s in spans} for u, spans in by_user.items()}
        for ua, ub in itertools.combinations(sorted(by_user, key=str), 2):
            pairs += 1
            ex_m += len(exact[ua] & exact[ub])
            ex_a, ex_b = ex_a + len(exact[ua]), ex_b + len(exact[ub])
            tok_m += len(labelled[ua] & labelled[ub])
            tok_a, tok_b = tok_a + len(labelled[ua]), tok_b + len(labelled[ub])
    return {"pairs": pairs, "exact_f1": _f1(ex_m, ex_a, ex_b) if pairs else None,
            "token_f1": _f1(tok_m, tok_a, tok_b) if pairs else None, "spans": ex_a + ex_b}


def suggestion_uptake(rows: Iterable[Any]) -> dict[str, Any]:
    """How often annotators kept the model's suggestion: classify — share of answers equal to the suggested
    labels; spans — share of suggested spans kept, and of final spans that came from a suggestion."""
    rows = [r.value or {} for r in rows]
    judged = [v["suggestion_accepted"] for v in rows if v.get("suggestion_accepted") is not None]
    out: dict[str, Any] = {}
    if judged:
        out["answers_with_suggestion"] = len(judged)
        out["accepted_share"] = round(sum(judged) / len(judged), 4)
    kept = sum(v.get("accepted_suggestions", 0) for v in rows)
    rejected = sum(v.get("rejected_suggestions", 0) for v in rows)
    added = sum(v.get("added", 0) for v in rows)
    if kept + rejected:
        out["suggested_spans"] = kept + rejected
        out["kept_share"] = round(kept / (kept + rejected), 4)
        out["final_from_suggestion"] = round(kept / (kept + added), 4) if kept + added else None
    return out

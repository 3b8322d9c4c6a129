"""The ``trajectory`` annotation task: an annotator watches a robot episode's camera video(s) with its action and
state curves on one timeline, marks success or failure, writes or corrects the language instruction, and cuts the
episode into labelled sub-task segments (start/end frames).

An item is one episode (one Assay trajectory record, or a foreign dict of the same shape):

=================  ==============================================================================================
record content     accepted keys
=================  ==============================================================================================
episode            ``episode_index`` (int), ``task`` / ``instruction`` / ``language_instruction`` (str), ``fps``,
                   ``success`` (the environment's verdict, shown to reviewers only), draft ``segments``
per-frame data     ``frames``: columns ``{"action": [[…], …], "observation.state": [[…], …], "timestamp": […]}``
                   or a list of per-frame dicts; or those columns at the top level of the content
videos             ``videos``: ``{camera: path}``, ``{camera: {"path", "from_timestamp", "to_timestamp"}}`` (the
                   LeRobot v3 layout: one mp4 per chunk, an episode is a time span of it) or a list of
                   ``{"camera"|"key", "path"|"bytes", …}``; local files only, checked at import
=================  ==============================================================================================

The item keeps the curves dimension-major (``series[key]["values"][d]`` is dimension ``d`` over all frames), so the
page draws them without reshaping. The answer::

    {"success": bool, "instruction": str, "segments": [{"start": int, "end": int, "label": str}, ...], "note": str}

``start``/``end`` are frame indices, inclusive, ``0 <= start <= end < n_frames``; segments are sorted and may not
overlap. Agreement (``quality.py`` calls :func:`segment_agreement`): Krippendorff's α on the success labels like any
nominal label, and for segments a boundary F1 per pair of annotators: a boundary (a segment start or end) of one
annotator matches at most one boundary of the other within ``boundary_tolerance`` frames.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable

from assay.annotate import media

TASK = "trajectory"
SERIES_KEYS = ("action", "observation.state")  # curves drawn on the timeline, in this order (others follow)
MAX_FRAMES = 20_000
MAX_DIMS = 64
MAX_SEGMENTS = 200
MAX_LABEL = 200
SUCCESS_DOMAIN = [True, False]
DEFAULT_TOLERANCE = 5  # frames


class SkipRecord(ValueError):
    """Raised for an episode that cannot become an item (re-raised as ``tasks.SkipRecord`` by the caller)."""


class InvalidAnswer(ValueError):
    """An answer that does not fit (re-raised as ``tasks.InvalidAnswer`` by the caller)."""


# -- configuration -------------------------------------------------------------------------------------------------
def default_config() -> dict[str, Any]:
    """``boundary_tolerance``: frames two annotators' boundaries may differ by and still agree; ``labels``: the
    allowed sub-task labels (empty: free text); ``note``: optional | required | none."""
    return {"boundary_tolerance": DEFAULT_TOLERANCE, "labels": [], "note": "optional"}


def check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    tol = cfg.get("boundary_tolerance")
    if not isinstance(tol, int) or isinstance(tol, bool) or not 0 <= tol <= 1000:
        raise ValueError("trajectory boundary_tolerance must be an integer number of frames from 0 to 1000")
    labels = cfg.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError("trajectory labels must be a list of sub-task names (empty for free text)")
    if len(set(labels)) != len(labels):
        raise ValueError("trajectory labels must be distinct")
    if cfg.get("note") not in ("optional", "required", "none"):
        raise ValueError("trajectory note must be optional, required or none")
    return cfg


# -- records -> items ----------------------------------------------------------------------------------------------
def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _columns(c: dict[str, Any]) -> dict[str, list[Any]]:
    """The per-frame columns of an episode, whatever the layout."""
    frames = c.get("frames")
    if isinstance(frames, list):
        if not all(isinstance(f, dict) for f in frames):
            raise SkipRecord("bad_frames")
        keys = {k for f in frames for k in f}
        return {k: [f.get(k) for f in frames] for k in keys}
    if isinstance(frames, dict):
        return {k: v for k, v in frames.items() if isinstance(v, list)}
    return {k: c[k] for k in c if isinstance(c[k], list) and (k in SERIES_KEYS or k.startswith("observation.")
                                                               or k in ("timestamp", "frame_index"))}


def _series(name: str, column: list[Any]) -> dict[str, Any] | None:
    """A numeric per-frame column, dimension-major; None for a column that is not numbers (images, strings)."""
    rows = [r if isinstance(r, list) else [r] for r in column]
    if not rows or not all(rows):
        return None
    dims = len(rows[0])
    if dims > MAX_DIMS or any(len(r) != dims for r in rows):
        return None
    values = [[_number(r[d]) for r in rows] for d in range(dims)]
    if any(v is None for dim in values for v in dim):
        if all(v is None for dim in values for v in dim):
            return None
        raise SkipRecord("bad_frame_values")  # numbers with NaN, inf or holes in them
    return {"names": [f"{name}[{d}]" for d in range(dims)], "values": values}


def _videos(c: dict[str, Any]) -> list[dict[str, Any]]:
    raw = c.get("videos")
    if raw is None:
        return []
    if isinstance(raw, dict):
        entries = [(str(cam), v) for cam, v in raw.items()]
    elif isinstance(raw, list):
        entries = [(str(v.get("camera") or v.get("key") or f"camera{k}") if isinstance(v, dict) else f"camera{k}", v)
                   for k, v in enumerate(raw)]
    else:
        raise SkipRecord("bad_videos")
    out = []
    for camera, v in sorted(entries):
        spec = v if isinstance(v, dict) else {"path": v}
        data = spec.get("bytes")
        start = _number(spec.get("from_timestamp", spec.get("start")))
        end = _number(spec.get("to_timestamp", spec.get("end")))
        if start is not None and end is not None and end <= start:
            raise SkipRecord("bad_video_span")
        if isinstance(data, (bytes, bytearray)):
            mime = media.video_mime_of_bytes(bytes(data))
            if mime is None:
                raise SkipRecord("not_a_video")
            video = {"camera": camera, "bytes": bytes(data), "mime": mime}
        elif isinstance(spec.get("path"), (bytes, bytearray)):
            raise SkipRecord("bad_videos")
        else:
            try:
                video = {"camera": camera, "path": media.check_video_file(spec.get("path"))}
            except media.MediaError as e:
                raise SkipRecord(str(e)) from None
        video["start"], video["end"] = start, end
        out.append(video)
    return out


def _segments(raw: Any, n_frames: int) -> list[dict[str, Any]]:
    """Draft segments of a record (e.g. a scripted policy's phases), cleaned like an answer; bad drafts are dropped."""
    try:
        return check_segments(raw, n_frames, labels=[]) if raw else []
    except InvalidAnswer:
        return []


def item_content(c: Any) -> dict[str, Any]:
    """The normalised item of one episode (see the module table); raises :class:`SkipRecord`."""
    if not isinstance(c, dict):
        raise SkipRecord("unsupported_content")
    cols = _columns(c)
    series: dict[str, Any] = {}
    for key in [*SERIES_KEYS, *sorted(k for k in cols if k not in SERIES_KEYS)]:
        if key in cols and key not in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            s = _series(key, cols[key])
            if s is not None:
                series[key] = s
    lengths = {len(s["values"][0]) for s in series.values()}
    if not series:
        raise SkipRecord("no_frames")
    if len(lengths) != 1:
        raise SkipRecord("frame_count_mismatch")
    n_frames = lengths.pop()
    if n_frames > MAX_FRAMES:
        raise SkipRecord("too_many_frames")
    names = c.get("names") if isinstance(c.get("names"), dict) else {}
    for key, s in series.items():
        given = names.get(key)
        if isinstance(given, list) and len(given) == len(s["values"]) and all(isinstance(x, str) for x in given):
            s["names"] = list(given)
    fps = _number(c.get("fps"))
    stamps = [_number(t) for t in cols.get("timestamp") or []]
    if fps is None and len(stamps) == n_frames and n_frames > 1 and None not in stamps and stamps[-1] > stamps[0]:
        fps = (n_frames - 1) / (stamps[-1] - stamps[0])
    if fps is None or fps <= 0:
        raise SkipRecord("no_fps")
    instruction = next((c[k] for k in ("instruction", "task", "language_instruction", "prompt")
                        if isinstance(c.get(k), str)), "")
    episode = c.get("episode_index")
    success = c.get("success")
    flags = cols.get("next.success")  # LeRobot's per-frame success flag (gym-aloha, the Assay simulator)
    if not isinstance(success, bool) and isinstance(flags, list) and flags:
        flat = [f[0] if isinstance(f, list) and len(f) == 1 else f for f in flags]
        success = any(flat) if all(isinstance(f, bool) for f in flat) else None
    return {"episode_index": episode if isinstance(episode, int) and not isinstance(episode, bool) else None,
            "instruction": instruction, "fps": round(fps, 6), "n_frames": n_frames, "series": series,
            "videos": _videos(c), "env_success": success if isinstance(success, bool) else None,
            "segments": _segments(c.get("segments"), n_frames)}


# -- how an item is shown, and its media ---------------------------------------------------------------------------
def display(content: dict[str, Any], url_of: Any, reviewer: bool) -> dict[str, Any]:
    """The item for the page: videos as URLs of the app's media endpoint (``url_of(name)``) with a media fragment
    for the episode's span; the environment's verdict only for reviewers (an annotator judges for themselves)."""
    out = dict(content)
    videos = []
    for k, v in enumerate(content.get("videos") or []):
        span = ""
        if v.get("start") is not None or v.get("end") is not None:
            end = f",{v['end']:g}" if v.get("end") is not None else ""
            span = f"#t={v.get('start') or 0:g}{end}"
        videos.append({"camera": v["camera"], "url": url_of(f"video-{k}") + span, "start": v.get("start") or 0.0})
    out["videos"] = videos
    if not reviewer:
        out.pop("env_success", None)
    return out


def media_of(content: dict[str, Any], name: str) -> tuple[str, Any] | None:
    videos = content.get("videos") or []
    if name.startswith("video-") and name[6:].isdigit() and int(name[6:]) < len(videos):
        return "video", videos[int(name[6:])]
    return None


# -- answers -------------------------------------------------------------------------------------------------------
def answer_context(content: dict[str, Any]) -> dict[str, Any]:
    return {"n_frames": int(content["n_frames"])}


def _int(v: Any, what: str) -> int:
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidAnswer(f"{what} must be a frame number")
    return v


def check_segments(raw: Any, n_frames: int, labels: list[str]) -> list[dict[str, Any]]:
    """Cleaned, sorted segments; raises :class:`InvalidAnswer` with a sentence the annotator can act on."""
    if isinstance(raw, str):
        raw = parse_segment_lines(raw)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidAnswer("segments must be a list of {start, end, label}")
    if len(raw) > MAX_SEGMENTS:
        raise InvalidAnswer(f"at most {MAX_SEGMENTS} segments")
    out = []
    for k, s in enumerate(raw, 1):
        if not isinstance(s, dict):
            raise InvalidAnswer(f"segment {k} must be an object with start, end and label")
        start, end = _int(s.get("start"), f"segment {k}'s start"), _int(s.get("end"), f"segment {k}'s end")
        label = s.get("label")
        if not isinstance(label, str) or not label.strip():
            raise InvalidAnswer(f"segment {k} ({start}-{end}) needs a label")
        label = label.strip()
        if len(label) > MAX_LABEL or "\x00" in label:
            raise InvalidAnswer(f"segment {k}'s label is too long")
        if labels and label not in labels:
            raise InvalidAnswer(f"segment {k}'s label {label!r} is not one of: {', '.join(labels)}")
        if not 0 <= start <= end < n_frames:
            raise InvalidAnswer(f"segment {k} ({start}-{end}) must lie within frames 0-{n_frames - 1}, start <= end")
        out.append({"start": start, "end": end, "label": label})
    out.sort(key=lambda s: (s["start"], s["end"]))
    for a, b in zip(out, out[1:]):
        if b["start"] <= a["end"]:
            raise InvalidAnswer(f"segments {a['start']}-{a['end']} ({a['label']}) and {b['start']}-{b['end']} "
                                f"({b['label']}) overlap")
    return out


def _success(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("success", "true", "yes", "1"):
        return True
    if isinstance(v, str) and v.lower() in ("failure", "false", "no", "0"):
        return False
    raise InvalidAnswer("mark the episode as a success or a failure")


def validate_answer(config: dict[str, Any], value: dict[str, Any], context: dict[str, Any] | None,
                    bounded_text: Any) -> dict[str, Any]:
    """The cleaned answer (``bounded_text``: ``tasks._bounded_text``, the house check for free text)."""
    if context is None:
        raise InvalidAnswer("trajectory answers are checked against their item")
    return {"success": _success(value.get("success")),
            "instruction": bounded_text(value.get("instruction"), "instruction", True).strip(),
            "segments": check_segments(value.get("segments"), context["n_frames"], config.get("labels") or []),
            "note": bounded_text(value.get("note"), "note", config.get("note") == "required")}


def parse_segment_lines(text: str) -> list[dict[str, Any]]:
    """Segments written one per line as ``START END LABEL`` (``12-40 grasp`` and ``12 40 grasp`` both work): what the
    page's segment box holds, so the form works with the keyboard alone and without JavaScript."""
    out = []
    for k, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.replace("-", " ", 1).split(None, 2) if "-" in line.split(None, 1)[0] else line.split(None, 2)
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise InvalidAnswer(f"segment line {k} must read START END LABEL (frame numbers), got {line!r}")
        out.append({"start": int(parts[0]), "end": int(parts[1]), "label": parts[2]})
    return out


def answer_from_form(form: Any) -> dict[str, Any]:
    """The answer from the web form (``segments`` as the box's lines, parsed when the answer is validated)."""
    return {"success": form.get("success", ""), "instruction": form.get("instruction", ""),
            "segments": str(form.get("segments", "")), "note": form.get("note", "")}


def segment_lines(segments: Iterable[dict[str, Any]]) -> str:
    return "\n".join(f"{s['start']} {s['end']} {s['label']}" for s in segments)


# -- export --------------------------------------------------------------------------------------------------------
def export_fields(content: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """The columns of a ``trajectory`` export row: what joins back to the episode (``episode_index``) and the labels."""
    return {"episode_index": content.get("episode_index"), "success": value["success"],
            "instruction": value["instruction"], "original_instruction": content.get("instruction", ""),
            "instruction_changed": value["instruction"] != (content.get("instruction") or ""),
            "segments": value["segments"], "note": value.get("note", ""), "env_success": content.get("env_success"),
            "fps": content.get("fps"), "n_frames": content.get("n_frames"),
            "cameras": [v["camera"] for v in content.get("videos") or []]}


# -- agreement -----------------------------------------------------------------------------------------------------
def _boundaries(segments: list[dict[str, Any]]) -> list[int]:
    return sorted(b for s in segments for b in (s["start"], s["end"]))


def match_boundaries(a: list[int], b: list[int], tolerance: int) -> list[tuple[int, int]]:
    """A maximum one-to-one matching of two sorted boundary lists within ``tolerance`` frames. On a line, the greedy
    sweep (match the two earliest unmatched boundaries when they are close enough, else drop the earlier one) is
    optimal for intervals of equal width, so the count is the true maximum."""
    i = j = 0
    pairs = []
    while i < len(a) and j < len(b):
        if abs(a[i] - b[j]) <= tolerance:
            pairs.append((a[i], b[j]))
            i += 1
            j += 1
        elif a[i] < b[j]:
            i += 1
        else:
            j += 1
    return pairs


def segment_agreement(answers: Iterable[tuple[Any, Any, list[dict[str, Any]]]], tolerance: int) -> dict[str, Any]:
    """Agreement on sub-task segments from ``(item, annotator, segments)``: over every pair of annotators of an item,
    boundary precision/recall/F1 within ``tolerance`` frames (micro-averaged over pairs), the mean offset of matched
    boundaries, the share of pairs that cut the episode into the same number of segments, and the share of matched
    segments (both boundaries matched) that carry the same label."""
    per_item: dict[Any, dict[Any, list[dict[str, Any]]]] = {}
    for item, user, segs in answers:
        per_item.setdefault(item, {})[user] = segs
    matched = total_a = total_b = pairs = same_count = label_pairs = same_label = 0
    offsets: list[int] = []
    for item, by_user in per_item.items():
        for ua, ub in itertools.combinations(sorted(by_user, key=str), 2):
            sa, sb = by_user[ua], by_user[ub]
            ba, bb = _boundaries(sa), _boundaries(sb)
            found = match_boundaries(ba, bb, tolerance)
            matched += len(found)
            total_a += len(ba)
            total_b += len(bb)
            offsets.extend(abs(x - y) for x, y in found)
            pairs += 1
            same_count += len(sa) == len(sb)
            for x in sa:  # segments of a whose both ends fall within tolerance of one segment of b
                twin = next((y for y in sb if abs(x["start"] - y["start"]) <= tolerance
                             and abs(x["end"] - y["end"]) <= tolerance), None)
                if twin is not None:
                    label_pairs += 1
                    same_label += twin["label"].casefold() == x["label"].casefold()
    if pairs == 0:
        return {"pairs": 0, "tolerance": tolerance, "boundary_precision": None, "boundary_recall": None,
                "boundary_f1": None, "mean_offset": None, "same_count": None, "label_agreement": None}
    precision = matched / total_a if total_a else (1.0 if total_b == 0 else 0.0)
    recall = matched / total_b if total_b else (1.0 if total_a == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pairs": pairs, "tolerance": tolerance, "boundary_precision": round(precision, 4),
            "boundary_recall": round(recall, 4), "boundary_f1": round(f1, 4),
            "mean_offset": round(sum(offsets) / len(offsets), 4) if offsets else None,
            "same_count": round(same_count / pairs, 4),
            "label_agreement": round(same_label / label_pairs, 4) if label_pairs else None}


def success_triples(rows: Iterable[Any]) -> list[tuple[Any, Any, bool]]:
    """(item, annotator, success) of annotation rows with ``item_id``, ``user_id`` and ``value``."""
    return [(r.item_id, r.user_id, bool(r.value["success"])) for r in rows if "success" in (r.value or {})]

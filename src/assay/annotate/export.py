"""Export annotations to training formats, with lineage.

=============  ===========================================================================================
format         rows
=============  ===========================================================================================
``sft``        one per SFT annotation: ``messages`` (system, earlier turns, the prompt, the written response)
``dpo``        one per complete preference item (votes >= ``min_votes``, default the project's overlap) with a
               strict-majority (or Dawid-Skene) winner: ``prompt``, ``chosen``, ``rejected``, vote counts and
               rationales; incomplete items, ties and split votes are left out and counted. ``layout``:
               ``string`` (text columns) or ``conversational`` (TRL's chat layout: ``prompt`` is the list of
               messages before the answer, ``chosen``/``rejected`` one assistant message each)
``ratings``    one per rating annotation: a column per rubric dimension, ``comment``; for ``clip_rating``
               projects ``physics_note`` and the clip (``video_path``, ``start``, ``end``) instead of
               ``response``
``critiques``  one per critique annotation: ``prompt``, ``response``, ``critique``
``edit``       one per image_edit annotation (MagicBrush layout): ``before``, ``after`` (image bytes: the
               item's after image or the annotator's upload; None when only ``after_url`` was given),
               ``after_url``, ``instruction``, ``mask`` (one-channel PNG, 255 = edited region, or None)
``trajectory`` one per trajectory annotation: ``episode_index`` (joins back to the LeRobot episode; ``record_id``
               to the Assay record), ``success``, ``instruction`` (as written or corrected) with the
               ``original_instruction``, ``segments`` (``[{start, end, label}]``, frames), ``note``,
               ``env_success`` (the environment's own verdict, when the record had one), ``fps``, ``n_frames``
``dialogue``   one per expert dialogue: ``question``, ``domain``, ``messages`` (the conversation with the expert's
               corrections), ``turns`` (model turns with their ``original`` and ``corrected``),
               ``corrected_turns``, ``final_answer``, ``final_turn``, ``model``
``labels``     one per classify annotation: ``text``, ``label`` (single-label) or ``labels``, ``suggested`` (the
               model's pre-filled answer), ``suggestion_accepted``, ``suggestion_scores``
``spans``      one per spans annotation: ``text``, ``spans`` (``[{start, end, label, suggested}]``, code-point
               offsets), ``tokens`` + ``ner_tags`` (BIO), ``accepted_suggestions``, ``rejected_suggestions``
``annotations``  any task type, one row per annotation, the raw value as JSON text
=============  ===========================================================================================

Every row carries its provenance: ``record_id`` (the Assay record the item was imported from), ``project``,
``annotator``/``annotator_id`` (or the lists of them for aggregated rows), ``annotation_id(s)``, the record's
``meta`` (JSON text) and ``lineage`` — the record's own step history plus one entry for this annotation project — so
a trained model's data can be traced back to the crawl and to the person who wrote each answer.

Files are written under a temporary name and renamed; ``.parquet`` output loads with
``datasets.load_dataset("parquet", data_files=...)``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import xxhash
from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.annotate import dialogue_task, label_task, trajectory_task
from assay.annotate.models import REVIEW_ACCEPTED, REVIEW_REJECTED, Annotation, Item, Project
from assay.core.record import derive_id, dumps
from assay.platform.models import User

FORMATS = ("sft", "dpo", "ratings", "critiques", "edit", "trajectory", "dialogue", "labels", "spans", "annotations")
DPO_LAYOUTS = ("string", "conversational")
_TASKS_OF_FORMAT = {"sft": ("sft",), "dpo": ("preference",), "ratings": ("rating", "clip_rating"),
                    "critiques": ("critique",), "edit": ("image_edit",), "trajectory": ("trajectory",),
                    "dialogue": ("dialogue",), "labels": ("classify",), "spans": ("spans",)}
EXPORT_VERSION = "1"


class ExportError(ValueError):
    pass


def _project_lineage(project: Project) -> dict[str, str]:
    params = xxhash.xxh3_64_hexdigest(dumps({"name": project.name, "task": project.task_type,
                                             "config": project.config, "overlap": project.overlap}))
    return {"step": f"annotate.{project.task_type}", "version": EXPORT_VERSION, "params": params[:12]}


def _rows_query(s: Session, project: Project, accepted_only: bool, include_gold: bool):  # noqa: ANN202
    q = (select(Annotation, Item, User.username).join(Item, Item.id == Annotation.item_id)
         .join(User, User.id == Annotation.user_id)
         .where(Annotation.project_id == project.id, Annotation.review_status != REVIEW_REJECTED)
         .order_by(Item.id, Annotation.id))
    if accepted_only:
        q = q.where(Annotation.review_status == REVIEW_ACCEPTED)
    if not include_gold:
        q = q.where(Item.is_gold.is_(False))
    return s.execute(q)


def _base(project: Project, item: Item, lineage_entry: dict[str, str]) -> dict[str, Any]:
    return {"record_id": item.record_id, "project": project.name,
            "meta": dumps(item.meta or {}).decode(), "lineage": list(item.lineage or []) + [lineage_entry]}


def _prompt_messages(content: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation up to the answer: system prompt, earlier turns, the user's prompt."""
    msgs = []
    if content.get("system"):
        msgs.append({"role": "system", "content": content["system"]})
    msgs.extend({"role": m["role"], "content": m["content"]} for m in content.get("context", []))
    msgs.append({"role": "user", "content": content["prompt"]})
    return msgs


def _messages(content: dict[str, Any], response: str) -> list[dict[str, str]]:
    return [*_prompt_messages(content), {"role": "assistant", "content": response}]


def export_rows(s: Session, project: Project, fmt: str, *, accepted_only: bool = False, include_gold: bool = False,
                aggregate: str = "majority", min_votes: int | None = None, layout: str = "string",
                stats: Counter | None = None) -> Iterator[dict[str, Any]]:
    """The rows of ``fmt`` for ``project`` (see the module table). ``stats`` counts what was left out and why.
    ``min_votes`` and ``layout``: dpo only."""
    stats = stats if stats is not None else Counter()
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}")
    if layout not in DPO_LAYOUTS:
        raise ExportError(f"layout must be one of {', '.join(DPO_LAYOUTS)}")
    if min_votes is not None and min_votes < 1:
        raise ExportError("min_votes must be at least 1")
    need = _TASKS_OF_FORMAT.get(fmt)
    if need and project.task_type not in need:
        raise ExportError(f"{fmt} export needs a {' or '.join(need)} project; {project.name!r} is "
                          f"{project.task_type}")
    lin = _project_lineage(project)
    result = _rows_query(s, project, accepted_only, include_gold)
    if fmt == "dpo":
        yield from _dpo_rows(s, project, result, lin, aggregate, stats,
                             project.overlap if min_votes is None else min_votes, layout)
        return
    for ann, item, username in result:
        base = _base(project, item, lin)
        ident = {"id": derive_id(item.record_id, "annotation", ann.id), "annotation_id": ann.id,
                 "annotator": username, "annotator_id": ann.user_id, "review_status": ann.review_status,
                 "is_gold": bool(item.is_gold), "created_at": ann.created_at}
        c, v = item.content, ann.value
        if fmt == "sft":
            row = {**ident, "messages": _messages(c, v["response"]), "prompt": c["prompt"],
                   "response": v["response"], "edited_from": c.get("response") or None}
        elif fmt == "ratings" and project.task_type == "clip_rating":
            video = c.get("video") or {}
            row = {**ident, **{f"score_{d}": v["scores"].get(d) for d in project.config["dimensions"]},
                   "physics_note": v.get("physics_note", ""), "prompt": c.get("prompt", ""),
                   "video_path": video.get("path"), "start": video.get("start"), "end": video.get("end"),
                   "keyframes": len(c.get("keyframes") or [])}
        elif fmt == "ratings":
            row = {**ident, **{f"score_{d}": v["scores"].get(d) for d in project.config["dimensions"]},
                   "comment": v.get("comment", ""), "prompt": c.get("prompt", ""), "response": c["response"]}
        elif fmt == "edit":
            after = c.get("after") if v.get("after_source") == "item" else v.get("after")
            row = {**ident, "before": c["before"], "after": after, "after_url": v.get("after_url"),
                   "after_source": v.get("after_source"), "instruction": v["instruction"], "mask": v.get("mask"),
                   "mask_pixels": v.get("mask_pixels", 0), "width": c.get("width"), "height": c.get("height"),
                   "caption": c.get("caption", "")}
        elif fmt == "critiques":
            row = {**ident, "prompt": c.get("prompt", ""), "response": c["response"], "critique": v["critique"]}
        elif fmt == "trajectory":
            row = {**ident, **trajectory_task.export_fields(c, v)}
        elif fmt == "dialogue":
            row = {**ident, **dialogue_task.export_fields(c, v)}
        elif fmt in ("labels", "spans"):
            row = {**ident, **label_task.export_fields(project.task_type, project.config, c, v)}
        else:
            row = {**ident, "task_type": project.task_type, "value": dumps(v).decode()}
        stats["rows"] += 1
        yield {**row, **base}


def _dpo_rows(s: Session, project: Project, result: Any, lin: dict[str, str], aggregate: str,
              stats: Counter, min_votes: int, layout: str) -> Iterator[dict[str, Any]]:
    per_item: dict[int, tuple[Item, list[tuple[Annotation, str]]]] = {}
    for ann, item, username in result:
        per_item.setdefault(item.id, (item, []))[1].append((ann, username))
    ds_labels: dict[int, Any] = {}
    if aggregate == "dawid-skene":
        from assay.annotate import stats as st

        triples = [(i, a.user_id, a.value["choice"]) for i, (_, anns) in per_item.items() for a, _ in anns]
        ds_labels = st.dawid_skene(triples).labels if triples else {}
    elif aggregate not in ("majority", "none"):
        raise ExportError("aggregate must be majority, dawid-skene or none")
    for item_id, (item, anns) in per_item.items():
        if len(anns) < min_votes:  # still being annotated: a single vote is not a preference yet
            stats["left_out_incomplete"] += 1
            continue
        c = item.content
        groups = [[x] for x in anns] if aggregate == "none" else [anns]
        for group in groups:
            votes = Counter(a.value["choice"] for a, _ in group)
            if aggregate == "dawid-skene":
                winner = ds_labels.get(item_id)
            else:
                top = votes.most_common()
                winner = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else None
            if winner not in ("a", "b"):
                stats["left_out_tie" if winner == "tie" else "left_out_no_majority"] += 1
                continue
            chosen, rejected = (c["a"], c["b"]) if winner == "a" else (c["b"], c["a"])
            prompt: Any = c.get("prompt", "")
            if layout == "conversational":
                if c.get("kind") == "image":
                    raise ExportError("the conversational layout is for text pairs; export image pairs as string")
                prompt = _prompt_messages(c)
                chosen, rejected = ([{"role": "assistant", "content": x}] for x in (chosen, rejected))
            ids = [a.id for a, _ in group]
            row = {"id": derive_id(item.record_id, "dpo", *ids), "prompt": prompt, "chosen": chosen,
                   "rejected": rejected, "kind": c.get("kind", "text"),
                   "votes": {k: votes.get(k, 0) for k in ("a", "b", "tie")},
                   "rationales": [a.value.get("rationale", "") for a, _ in group if a.value.get("rationale")],
                   "annotators": [u for _, u in group], "annotator_ids": [a.user_id for a, _ in group],
                   "annotation_ids": ids, "aggregate": aggregate}
            stats["rows"] += 1
            yield {**row, **_base(project, item, lin)}


def write_rows(rows: Iterator[dict[str, Any]], path: str | Path) -> int:
    """Write rows as JSONL (``.jsonl``, ``.jsonl.gz``) or Parquet (``.parquet``); atomic; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    n = 0
    try:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            batch = list(rows)
            n = len(batch)
            table = pa.Table.from_pylist(batch) if batch else pa.table({"record_id": pa.array([], pa.string())})
            pq.write_table(table, tmp)
        else:
            import gzip

            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(tmp, "wb") as f:
                for row in rows:
                    f.write(dumps(row) + b"\n")
                    n += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def export(db: Any, project_ref: str | int, fmt: str, path: str | Path, **options: Any) -> dict[str, Any]:
    """Export a project to ``path``; returns ``{"rows": n, "left_out": {...}, "path": ...}``."""
    from assay.annotate.workflow import find_project

    stats: Counter = Counter()
    with db.read() as s:
        project = find_project(s, project_ref)
        n = write_rows(export_rows(s, project, fmt, stats=stats, **options), path)
    return {"rows": n, "left_out": {k: v for k, v in stats.items() if k != "rows"}, "path": str(path)}

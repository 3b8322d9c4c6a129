"""The people of the loop: the annotation app served on loopback, and seeded simulated annotators that use it
exactly as a person's browser would (log in, take the next item, submit a rating) through its HTTP API.

**Gold.** A simulated annotator rates a text 1-5 by :func:`gold_rating`, a stated, deterministic rule for "a good
document to learn from" (enough words, most of them in sentences of prose rather than tables, lists or code); with
probability ``noise`` it answers uniformly at random instead. The rule sees only what the app shows the annotator
(the item's text), never the record's signals, so the classifier learns from the same kind of evidence a person would
give. Answers are seeded per (annotator, item), so a resumed run gives the same answers.
"""

from __future__ import annotations

import contextlib
import random
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

_SENTENCE_END = re.compile(r"[.?!:)\"']$")
SCALE = (1, 5)


def gold_rating(text: str) -> int:
    """The stated gold rule (1-5): +1 for >= 150 words, +1 for >= 400 words, +1 if >= 30% of the non-empty lines are
    prose (>= 8 words, ending like a sentence), +1 more if >= 55% are."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    words = sum(len(ln.split()) for ln in lines)
    prose = sum(1 for ln in lines if len(ln.split()) >= 8 and _SENTENCE_END.search(ln)) / len(lines) if lines else 0.0
    return 1 + (words >= 150) + (words >= 400) + (prose >= 0.30) + (prose >= 0.55)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_app(db_url: str, timeout: float = 30.0) -> Iterator[str]:
    """The annotation app (``assay annotate serve``'s app) on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    from assay.annotate.app import create_app

    app = create_app(db_url, migrate=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="flywheel-annotate", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the annotation app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def accounts(out: Path, names: list[str]) -> dict[str, str]:
    """Passwords of the simulated annotators (made once, kept in ``OUT/people.json``, readable by the owner only)."""
    path = out / "people.json"
    known: dict[str, str] = orjson.loads(path.read_bytes()) if path.exists() else {}
    missing = [n for n in names if n not in known]
    if missing:
        known.update({n: secrets.token_urlsafe(18) for n in missing})
        tmp = path.with_name(".people.json.tmp")
        tmp.write_bytes(orjson.dumps(known, option=orjson.OPT_INDENT_2))
        tmp.chmod(0o600)
        tmp.replace(path)
    return known


@dataclass
class SimulatedAnnotator:
    """One seeded annotator working a project's queue over HTTP."""

    base_url: str
    name: str
    password: str
    noise: float
    seed: int = 0

    def rate(self, item_id: int, text: str) -> tuple[int, bool]:
        """(rating, answered at random?) for an item: gold, or with probability ``noise`` uniform on the scale."""
        rng = random.Random(f"{self.seed}\x00{self.name}\x00{item_id}")
        if rng.random() < self.noise:
            return rng.randint(*SCALE), True
        return gold_rating(text), False

    def open(self) -> Any:
        """Log in through the API; returns the session (an HTTP client holding the bearer token)."""
        import httpx

        http = httpx.Client(base_url=self.base_url, timeout=60)
        r = http.post("/api/login", json={"username": self.name, "password": self.password})
        if r.status_code != 200:
            http.close()
            raise RuntimeError(f"simulated annotator {self.name} could not log in: {r.status_code} {r.text[:200]}")
        http.headers["Authorization"] = f"Bearer {r.json()['token']}"
        return http

    def answer_one(self, http: Any, project_id: int, dimension: str = "quality") -> bool | None:
        """Take the next item and submit a rating; ``None`` when the queue has nothing for this annotator, else
        whether the answer was a random one."""
        nxt = http.post(f"/api/projects/{project_id}/next")
        nxt.raise_for_status()
        body = nxt.json()
        if body.get("assignment") is None:
            return None
        item = body["item"]
        content = item.get("content") or {}
        text = "\n".join(str(content.get(k) or "") for k in ("prompt", "response")).strip()
        rating, random_answer = self.rate(int(item["id"]), text)
        sub = http.post(f"/api/projects/{project_id}/assignments/{body['assignment']['id']}/submit",
                        json={"value": {"scores": {dimension: rating}, "comment": "simulated annotator"},
                              "seconds": 1.0})
        sub.raise_for_status()
        return random_answer

    def close(self, http: Any) -> None:
        try:
            http.post("/api/logout")
        finally:
            http.close()


def human_labels(db: Any, project_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every annotation of a project by record id: who, what, when, and its review (for the lineage view)."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from assay.annotate.models import Annotation, Item
    from assay.platform.models import User

    reviewer = aliased(User)
    out: dict[str, list[dict[str, Any]]] = {}
    with db.read() as s:
        rows = s.execute(select(Item.record_id, User.username, Annotation.id, Annotation.value, Annotation.created_at,
                                Annotation.review_status, reviewer.username)
                         .join(Item, Item.id == Annotation.item_id).join(User, User.id == Annotation.user_id)
                         .outerjoin(reviewer, reviewer.id == Annotation.reviewer_id)
                         .where(Annotation.project_id == project_id).order_by(Annotation.id)).all()
    for record_id, user, ann_id, value, at, review, rev in rows:
        out.setdefault(record_id, []).append({"annotation_id": ann_id, "annotator": user, "value": value,
                                              "at": round(at, 3), "review": review, "reviewer": rev})
    return out

"""The FastAPI application: ``create_app(db_url)`` builds it; ``assay annotate serve`` runs it under uvicorn.

Two faces over the same workflow functions: a JSON API under ``/api`` (bearer tokens or the session cookie) and the
server-rendered web UI (``web.py``). Every route resolves the caller and their role in the project inside the same
database transaction that does the work, so authorisation and action can't drift apart.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.annotate import access, dialogue_task, label_task, tasks, trajectory_task, workflow
from assay.annotate.models import Annotation, Assignment, Item, Membership, Project
from assay.platform import auth
from assay.platform import users as accounts
from assay.platform.db import Database
from assay.platform.http import FastJSON, SecurityHeaders, client_address, request_token
from assay.platform.models import User

ANY_ROLE = ("admin", "reviewer", "annotator")
REVIEWERS = ("admin", "reviewer")

# -- caller and project resolution (shared with web.py) ------------------------------------------------------------


def require_caller(s: Session, request: Request, *, mutate: bool = False, csrf: str | None = None) -> auth.Caller:
    token, via_cookie = request_token(request)
    caller = auth.resolve(s, token, via_cookie)
    if caller is None:
        raise HTTPException(401, "not logged in")
    if mutate and not auth.csrf_ok(caller, csrf or request.headers.get("x-csrf-token")):
        raise HTTPException(403, "missing or wrong CSRF token")
    return caller


def authorize(s: Session, request: Request, project_id: int, roles: tuple[str, ...] = ANY_ROLE, *,
              mutate: bool = False, csrf: str | None = None) -> tuple[auth.Caller, Project, str]:
    """Caller, project and role in one query; 401 not logged in, 403 bad CSRF token or role, 404 not a member (the
    same answer as for a project that does not exist)."""
    token, via_cookie = request_token(request)
    caller, role, project = access.resolve_for_project(s, token, via_cookie, project_id)
    if caller is None:
        raise HTTPException(401, "not logged in")
    if mutate and not auth.csrf_ok(caller, csrf or request.headers.get("x-csrf-token")):
        raise HTTPException(403, "missing or wrong CSRF token")
    if role is None or project is None:
        raise HTTPException(404, "no such project")
    if role not in roles:
        raise HTTPException(403, f"needs one of: {', '.join(roles)}")
    return caller, project, role


def require_admin(caller: auth.Caller) -> None:
    if not caller.is_admin:
        raise HTTPException(403, "admins only")


ACCOUNT_ACTIONS = ("deactivate", "reactivate", "unlock", "password")


def account_action(s: Session, username: str, action: str, actor: str, password: str | None = None) -> None:
    """An admin's action on an account (API and admin page share it)."""
    if action == "deactivate":
        workflow.set_active(s, username, False, actor)
    elif action == "reactivate":
        workflow.set_active(s, username, True, actor)
    elif action == "unlock":
        accounts.find_user(s, username)
        auth.unlock(s, username, actor)
    elif action == "password":
        if not password:
            raise workflow.WorkflowError('send {"password": "…"} (8+ characters)')
        accounts.set_password(s, username, password, actor)
    else:
        raise HTTPException(404, f"unknown action {action!r}: one of {', '.join(ACCOUNT_ACTIONS)}")


def secure_cookies(request: Request) -> bool:
    """Cookies get the Secure flag when the request came over https, or always with ``serve --secure-cookies``."""
    return request.url.scheme == "https" or bool(getattr(request.app.state, "secure_cookies", False))


# -- how items look to an annotator --------------------------------------------------------------------------------
def media_url(project_id: int, item_id: int, name: str, record_view: bool = False) -> str:
    """Where the browser fetches an item's image or video: the app's own authenticated endpoint, never the source."""
    return f"/api/projects/{project_id}/items/{item_id}/media/{name}" + ("?view=record" if record_view else "")


def display_item(project: Project, item: Item, swapped: bool | None = None, *,
                 record_view: bool = False) -> dict[str, Any]:
    """The item as the annotator sees it: pairwise sides already swapped when this viewer sees them swapped
    (``swapped``; default: the item's own flip), media replaced by URLs of the media endpoint (no bytes, no server
    paths); nothing that reveals gold status or provenance. ``record_view``: the record's orientation (reviewers)."""
    c = dict(item.content)
    swapped = False if record_view else (item.swapped if swapped is None else swapped)
    if project.task_type == "preference":
        if swapped:
            c["a"], c["b"] = c["b"], c["a"]
        if c.get("kind") == "image":  # a/b name screen sides: the endpoint resolves them for the viewer
            c["a"], c["b"] = (media_url(project.id, item.id, side, record_view) for side in ("a", "b"))
    elif project.task_type == "image_edit":
        c["before"] = media_url(project.id, item.id, "before")
        c["after"] = media_url(project.id, item.id, "after") if c.get("after") is not None else None
    elif project.task_type == "clip_rating":
        video = c.get("video")
        if video:
            span = ""
            if video.get("start") is not None or video.get("end") is not None:  # a media fragment limits playback
                end = f",{video['end']:g}" if video.get("end") is not None else ""
                span = f"#t={video.get('start') or 0:g}{end}"
            c["video"] = media_url(project.id, item.id, "video") + span
        c["keyframes"] = [media_url(project.id, item.id, f"keyframe-{k}") for k in range(len(c.get("keyframes") or []))]
    elif project.task_type == trajectory_task.TASK:
        c = trajectory_task.display(c, lambda name: media_url(project.id, item.id, name), record_view)
    elif project.task_type in label_task.TASKS:
        c = label_task.display(project.task_type, c, project.config)
    return {"id": item.id, "content": c}


def item_media(project: Project, content: dict[str, Any], name: str, swapped: bool) -> tuple[str, Any] | None:
    """What ``media/{name}`` of an item is: ``("image", bytes)``, ``("video", {"bytes"|"path", …})`` or None."""
    t = project.task_type
    if t == "preference" and content.get("kind") == "image" and name in ("a", "b"):
        if swapped:
            name = "b" if name == "a" else "a"
        return "image", content[name]
    if t == "image_edit" and name in ("before", "after") and content.get(name) is not None:
        return "image", content[name]
    if t == "clip_rating":
        if name == "video" and content.get("video"):
            return "video", content["video"]
        frames = content.get("keyframes") or []
        if name.startswith("keyframe-") and name[9:].isdigit() and int(name[9:]) < len(frames):
            return "image", frames[int(name[9:])]
    if t == trajectory_task.TASK:
        return trajectory_task.media_of(content, name)
    return None


def send_media(request: Request, kind: str, value: Any) -> Response:
    from assay.annotate import media

    if kind == "image":
        return media.bytes_response(request, value, media.image_mime(value))
    if "bytes" in value:
        return media.bytes_response(request, value["bytes"], value.get("mime") or "application/octet-stream")
    return media.file_response(value["path"])


def to_stored_answer(project: Project, swapped: bool, value: dict[str, Any]) -> dict[str, Any]:
    """Map an answer given in screen orientation to the record's orientation, recording which orientation was shown."""
    if project.task_type == "preference" and isinstance(value, dict) and "choice" in value:
        value = {**value, "choice": tasks.screen_to_stored(str(value["choice"]).lower(), swapped),
                 "shown_swapped": bool(swapped)}
    return value


def submit_answer(db: Database, request: Request, project_id: int, assignment_id: int, value: dict[str, Any],
                  seconds: float | None, csrf: str | None = None) -> tuple[auth.Caller, Project, workflow.Submitted]:
    """The submit path shared by the API and the web form: authorise and look up the slot's item outside the write
    transaction, then one short write transaction (two statements)."""
    with db.read() as s:
        c, p, _ = authorize(s, request, project_id, mutate=True, csrf=csrf)
        row = s.execute(select(Item.swapped, Item.record_id).join(Assignment, Assignment.item_id == Item.id)
                        .where(Assignment.id == assignment_id, Assignment.project_id == p.id,
                               Assignment.user_id == c.user_id)).first()
    if row is None:  # a missing id and somebody else's slot get the same answer (the web form shows it)
        raise workflow.NotFound(workflow.NOT_YOURS)
    swapped = tasks.sides_swapped(p.config, bool(row.swapped), row.record_id, assignment_id, c.user_id)
    value = to_stored_answer(p, swapped, value)
    if p.task_type == dialogue_task.TASK:  # what the model said is asked of the model again, outside the write
        value = dialogue_task.submitted(db, p, assignment_id, value)
    with db.write() as s:
        return c, p, workflow.submit(s, p, c.user_id, assignment_id, value, seconds)


def claim_next(db: Database, c: auth.Caller, p: Project, avoid_item: int | None = None
               ) -> tuple[workflow.Claim | None, Item | None]:
    with db.write() as s:
        claim = workflow.next_assignment(s, p, c.user_id, avoid_item)
    if claim is None:
        return None, None
    with db.read() as s:
        return claim, s.get(Item, claim.item_id)


def project_json(s: Session, project: Project, role: str, user_id: int) -> dict[str, Any]:
    out = {"id": project.id, "name": project.name, "task_type": project.task_type, "guidelines": project.guidelines,
           "config": project.config, "overlap": project.overlap, "lease_seconds": project.lease_seconds,
           "review": project.review, "role": role}
    if role in REVIEWERS:
        out["gold_rate"] = project.gold_rate
        out["progress"] = workflow.progress(s, project)
    from sqlalchemy import func

    out["my_annotations"] = s.scalar(select(func.count()).where(Annotation.project_id == project.id,
                                                                Annotation.user_id == user_id))
    return out


# -- API -----------------------------------------------------------------------------------------------------------
class LoginBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class PasswordBody(BaseModel):
    password: str = Field(min_length=8, max_length=1024)


class UserBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: str = "annotator"


class ProjectBody(BaseModel):
    name: str = Field(max_length=128)
    task_type: str
    guidelines: str = Field("", max_length=100_000)
    config: dict[str, Any] = Field(default_factory=dict)
    overlap: int = 1
    gold_rate: float = 0.0
    lease_seconds: int = 1800
    review: bool = False


class MemberBody(BaseModel):
    username: str
    role: str = "annotator"


class ItemsBody(BaseModel):
    records: list[dict[str, Any]] = Field(max_length=10_000)
    gold: bool = False


class SubmitBody(BaseModel):
    value: dict[str, Any]
    seconds: float | None = None


class ReviewBody(BaseModel):
    decision: str
    note: str | None = Field(None, max_length=5000)


def api_router() -> APIRouter:
    r = APIRouter(prefix="/api")

    def db_of(request: Request) -> Database:
        return request.app.state.db

    @r.post("/login")
    def login(body: LoginBody, request: Request) -> dict[str, Any]:
        try:
            done = auth.login(db_of(request), body.username, body.password, client_address(request))
        except auth.LoginThrottled as e:
            raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        if done is None:
            raise HTTPException(401, "wrong username or password")
        return {"token": done.token, "csrf_token": done.csrf_token,
                "user": {"id": done.user_id, "username": done.username, "role": done.role}}

    @r.post("/logout")
    def logout(request: Request) -> dict[str, Any]:
        from sqlalchemy import delete

        from assay.platform.models import Session as LoginSession

        with db_of(request).write() as s:
            caller = require_caller(s, request, mutate=True)
            s.execute(delete(LoginSession).where(LoginSession.token_hash == caller.token_hash))
        return {"ok": True}

    @r.get("/me")
    def me(request: Request) -> dict[str, Any]:
        with db_of(request).read() as s:
            c = require_caller(s, request)
            return {"id": c.user_id, "username": c.username, "role": c.role}

    @r.get("/users")
    def list_users(request: Request) -> list[dict[str, Any]]:
        with db_of(request).read() as s:
            require_admin(require_caller(s, request))
            users = s.scalars(select(User).order_by(User.id)).all()
            blocked = auth.account_blocks(s, [u.username for u in users])
            return [{"id": u.id, "username": u.username, "role": u.role, "active": u.active,
                     "locked_until": blocked.get(u.username)} for u in users]

    @r.post("/users/{username}/{action}")
    def user_action(username: str, action: str, request: Request, body: PasswordBody | None = None
                    ) -> dict[str, Any]:
        """Admin actions on an account: ``deactivate`` / ``reactivate`` (offboarding: all sessions end at once),
        ``unlock`` (end a login lockout), ``password`` (``{"password"}``; all sessions end)."""
        with db_of(request).write() as s:
            c = require_caller(s, request, mutate=True)
            require_admin(c)
            account_action(s, username, action, c.username, body.password if body else None)
            u = accounts.find_user(s, username)
            return {"username": u.username, "active": u.active}

    @r.get("/audit")
    def audit_log(request: Request, limit: int = 100, username: str | None = None) -> list[dict[str, Any]]:
        """The security audit log, newest first (admins)."""
        with db_of(request).read() as s:
            require_admin(require_caller(s, request))
            return [{"at": e.at, "kind": e.kind, "username": e.username, "ip": e.ip, "actor": e.actor}
                    for e in auth.recent_events(s, limit, username)]

    @r.post("/users", status_code=201)
    def create_user(body: UserBody, request: Request) -> dict[str, Any]:
        with db_of(request).write() as s:
            require_admin(require_caller(s, request, mutate=True))
            u = accounts.create_user(s, body.username, body.password, body.role)
            return {"id": u.id, "username": u.username, "role": u.role}

    @r.get("/projects")
    def list_projects(request: Request) -> list[dict[str, Any]]:
        with db_of(request).read() as s:
            c = require_caller(s, request)
            if c.is_admin:
                rows = [(p, "admin") for p in s.scalars(select(Project).order_by(Project.id))]
            else:
                rows = list(s.execute(select(Project, Membership.role).join(
                    Membership, Membership.project_id == Project.id).where(Membership.user_id == c.user_id)
                    .order_by(Project.id)))
            return [{"id": p.id, "name": p.name, "task_type": p.task_type, "role": role} for p, role in rows]

    @r.post("/projects", status_code=201)
    def create_project(body: ProjectBody, request: Request) -> dict[str, Any]:
        with db_of(request).write() as s:
            c = require_caller(s, request, mutate=True)
            require_admin(c)
            p = workflow.create_project(s, body.name, body.task_type, guidelines=body.guidelines, config=body.config,
                                        overlap=body.overlap, gold_rate=body.gold_rate,
                                        lease_seconds=body.lease_seconds, review=body.review)
            return project_json(s, p, "admin", c.user_id)

    @r.get("/projects/{project_id}")
    def get_project(project_id: int, request: Request) -> dict[str, Any]:
        with db_of(request).read() as s:
            c, p, role = authorize(s, request, project_id)
            return project_json(s, p, role, c.user_id)

    @r.post("/projects/{project_id}/members")
    def add_member(project_id: int, body: MemberBody, request: Request) -> dict[str, Any]:
        with db_of(request).write() as s:
            c, p, _ = authorize(s, request, project_id, ("admin",), mutate=True)
            m = workflow.add_member(s, p, body.username, body.role)
            return {"project_id": p.id, "user_id": m.user_id, "role": m.role}

    @r.delete("/projects/{project_id}/members/{username}")
    def remove_member(project_id: int, username: str, request: Request) -> dict[str, Any]:
        with db_of(request).write() as s:
            c, p, _ = authorize(s, request, project_id, ("admin",), mutate=True)
            workflow.remove_member(s, p, username)
            return {"ok": True}

    @r.post("/projects/{project_id}/items")
    def add_items(project_id: int, body: ItemsBody, request: Request) -> dict[str, Any]:
        from assay.core.record import Record, stable_id

        with db_of(request).write() as s:
            c, p, _ = authorize(s, request, project_id, ("admin",), mutate=True)
            records, report = [], workflow.ImportReport()
            for k, d in enumerate(body.records):
                try:
                    records.append(Record.from_dict(d) if Record.is_record_dict(d) else
                                   Record(str(d.get("id") or stable_id(f"api:{project_id}", f"{k}:{d}")), d,
                                          meta=d.get("meta") if isinstance(d.get("meta"), dict) else {}))
                except (KeyError, TypeError, ValueError):
                    report.skip("bad_record")
            workflow.add_items(s, p, records, gold=body.gold, report=report)
            return {"imported": report.imported, "duplicates": report.duplicates, "skipped": report.skipped}

    @r.get("/projects/{project_id}/items/{item_id}")
    def get_item(project_id: int, item_id: int, request: Request) -> dict[str, Any]:
        with db_of(request).read() as s:
            c, p, role = authorize(s, request, project_id)
            item = s.get(Item, item_id)
            if item is None or item.project_id != p.id:
                raise HTTPException(404, "no such item")
            if role not in REVIEWERS:
                mine = s.scalar(select(Assignment.id).where(Assignment.item_id == item.id,
                                                            Assignment.user_id == c.user_id).limit(1))
                if mine is None:
                    raise HTTPException(404, "no such item")
                return display_item(p, item, tasks.sides_swapped(p.config, item.swapped, item.record_id, mine,
                                                                 c.user_id))
            return {**display_item(p, item, record_view=True), "record_id": item.record_id, "meta": _jsonable(item.meta),
                    "lineage": item.lineage, "is_gold": item.is_gold, "gold_answer": item.gold_answer,
                    "swapped": item.swapped}

    @r.get("/projects/{project_id}/items/{item_id}/media/{name}")
    def get_item_media(project_id: int, item_id: int, name: str, request: Request, view: str = "screen") -> Response:
        """An item's image or video. Annotators get media only of items they hold or held, in the orientation they
        are shown; reviewers of any item of the project (``view=record``: the record's orientation). ``Range``
        requests are honoured so a video can seek."""
        with db_of(request).read() as s:
            c, p, role = authorize(s, request, project_id)
            item = s.get(Item, item_id)
            if item is None or item.project_id != p.id:
                raise HTTPException(404, "no such item")
            mine = s.scalar(select(Assignment.id).where(Assignment.item_id == item.id, Assignment.user_id == c.user_id)
                            .order_by(Assignment.id).limit(1))
            if mine is None and role not in REVIEWERS:
                raise HTTPException(404, "no such item")
            record_view = mine is None or (view == "record" and role in REVIEWERS)
            swapped = False if record_view else tasks.sides_swapped(p.config, item.swapped, item.record_id, mine,
                                                                   c.user_id)
            found = item_media(p, item.content, name, swapped)
        if found is None:
            raise HTTPException(404, "no such media")
        return send_media(request, *found)

    @r.get("/projects/{project_id}/annotations/{annotation_id}/media/{name}")
    def get_annotation_media(project_id: int, annotation_id: int, name: str, request: Request) -> Response:
        """An image an annotator submitted (image_edit ``mask`` or uploaded ``after``): its author and reviewers."""
        with db_of(request).read() as s:
            c, p, role = authorize(s, request, project_id)
            ann = s.get(Annotation, annotation_id)
            if ann is None or ann.project_id != p.id or (role not in REVIEWERS and ann.user_id != c.user_id):
                raise HTTPException(404, "no such annotation")
            data = ann.value.get(name) if name in ("mask", "after") and isinstance(ann.value, dict) else None
        if not isinstance(data, bytes):
            raise HTTPException(404, "no such media")
        return send_media(request, "image", data)

    @r.post("/projects/{project_id}/next")
    def next_item(project_id: int, request: Request) -> Response:
        db = db_of(request)
        with db.read() as s:
            c, p, _ = authorize(s, request, project_id, mutate=True)
        claim, item = claim_next(db, c, p)
        if claim is None:
            return FastJSON({"assignment": None, "item": None})
        swapped = tasks.sides_swapped(p.config, item.swapped, item.record_id, claim.id, c.user_id)
        return FastJSON({"assignment": claim._asdict(), "item": display_item(p, item, swapped)})

    @r.post("/projects/{project_id}/assignments/{assignment_id}/submit", status_code=201)
    def submit(project_id: int, assignment_id: int, body: SubmitBody, request: Request) -> Response:
        _c, _p, done = submit_answer(db_of(request), request, project_id, assignment_id, body.value, body.seconds)
        return FastJSON({"annotation_id": done.id, "item_id": done.item_id}, status_code=201)

    @r.post("/projects/{project_id}/assignments/{assignment_id}/release")
    def release(project_id: int, assignment_id: int, request: Request) -> dict[str, Any]:
        with db_of(request).write() as s:
            c, p, _ = authorize(s, request, project_id, mutate=True)
            workflow.release(s, p, c.user_id, assignment_id)
            return {"ok": True}

    @r.get("/projects/{project_id}/annotations")
    def list_annotations(project_id: int, request: Request, status: str | None = None, limit: int = 100,
                         offset: int = 0) -> list[dict[str, Any]]:
        with db_of(request).read() as s:
            c, p, role = authorize(s, request, project_id)
            q = select(Annotation).where(Annotation.project_id == p.id)
            if role not in REVIEWERS:
                q = q.where(Annotation.user_id == c.user_id)
            if status:
                q = q.where(Annotation.review_status == status)
            q = q.order_by(Annotation.id).limit(max(1, min(limit, 1000))).offset(max(0, offset))
            return [{"id": a.id, "item_id": a.item_id, "user_id": a.user_id, "value": _jsonable(a.value),
                     "review_status": a.review_status, "created_at": a.created_at} for a in s.scalars(q)]

    @r.post("/projects/{project_id}/annotations/{annotation_id}/review")
    def review(project_id: int, annotation_id: int, body: ReviewBody, request: Request) -> dict[str, Any]:
        with db_of(request).write() as s:
            c, p, _ = authorize(s, request, project_id, REVIEWERS, mutate=True)
            ann = workflow.review(s, p, c.user_id, annotation_id, body.decision, body.note)
            return {"id": ann.id, "review_status": ann.review_status}

    @r.get("/projects/{project_id}/quality")
    def quality(project_id: int, request: Request) -> dict[str, Any]:
        from assay.annotate.quality import project_quality

        with db_of(request).read() as s:
            c, p, _ = authorize(s, request, project_id, REVIEWERS)
            return project_quality(s, p)

    @r.get("/projects/{project_id}/export")
    def export(project_id: int, request: Request, format: str = "annotations", accepted_only: bool = False,
               aggregate: str = "majority", min_votes: int | None = None, layout: str = "string"
               ) -> StreamingResponse:
        from assay.annotate.export import export_rows
        from assay.core.record import dumps

        with db_of(request).read() as s:
            c, p, _ = authorize(s, request, project_id, REVIEWERS)
            try:
                rows = [dumps(row) + b"\n" for row in export_rows(s, p, format, accepted_only=accepted_only,
                                                                    aggregate=aggregate, min_votes=min_votes,
                                                                    layout=layout)]
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        return StreamingResponse(iter(rows), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": f'attachment; filename="{p.id}-{format}.jsonl"'})

    return r


def _jsonable(obj: Any) -> Any:
    import orjson

    from assay.core.record import dumps

    return orjson.loads(dumps(obj))


# -- the app ---
def create_app(db_url: str | None = None, *, migrate: bool = False, database: Database | None = None,
               secure_cookies: bool | None = None) -> FastAPI:
    """The annotation server. ``db_url``: a SQLite path or ``postgresql://...`` (default: ``ASSAY_ANNOTATE_DB``,
    else ``assay-annotate.db``). The schema must be migrated (``assay annotate migrate``, done by ``serve``), or
    pass ``migrate=True``. ``secure_cookies`` (default: ``ASSAY_ANNOTATE_SECURE_COOKIES=1``): the app is served
    over https only (behind a TLS proxy): cookies always carry the Secure flag and responses send HSTS."""
    from fastapi.staticfiles import StaticFiles

    from starlette.exceptions import HTTPException as StarletteHTTPException

    from assay.annotate.web import STATIC_DIR, NeedLogin, error_page, login_redirect, web_router

    db = database or Database(db_url, sqlite_sync=os.environ.get("ASSAY_ANNOTATE_SQLITE_SYNC", "NORMAL"))
    if migrate:
        db.migrate()
    app = FastAPI(title="Assay annotate", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.db = db
    if secure_cookies is None:
        secure_cookies = os.environ.get("ASSAY_ANNOTATE_SECURE_COOKIES") == "1"
    app.state.secure_cookies = secure_cookies

    @app.exception_handler(workflow.WorkflowError)
    def _workflow_error(request: Request, exc: workflow.WorkflowError):  # noqa: ANN202
        if request.url.path.startswith("/api") or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        return error_page(request, exc.status, str(exc))

    app.add_exception_handler(NeedLogin, login_redirect)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException):  # noqa: ANN202
        if request.url.path.startswith("/api") or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return error_page(request, exc.status_code, str(exc.detail))

    app.add_middleware(SecurityHeaders, hsts=secure_cookies)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(api_router())
    app.include_router(dialogue_task.router())
    app.include_router(web_router())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` with several workers (each worker builds its own app and engine)."""
    return create_app(os.environ.get("ASSAY_ANNOTATE_DB"))

"""The server-rendered web UI (Jinja2 templates, plain HTML forms, one small script for keyboard shortcuts; no build
step). Pages never change state on GET: claiming work, submitting, skipping and reviewing are POSTed forms carrying
the session's CSRF token, answered with a redirect (post/redirect/get), so a reload never submits twice.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from assay.annotate import dialogue_task, label_task, tasks, trajectory_task, workflow
from assay.annotate.app import (ACCOUNT_ACTIONS, ANY_ROLE, REVIEWERS, account_action, authorize, claim_next,
                                client_address, display_item, require_admin, require_caller, secure_cookies,
                                submit_answer)
from assay.annotate.markup import render_markdown
from assay.annotate.models import (REVIEW_ACCEPTED, REVIEW_PENDING, REVIEW_REJECTED, SLOT_LEASED, TASK_TYPES,
                                   Annotation, Assignment, Item, Membership, Project)
from assay.platform import auth
from assay.platform import users as accounts
from assay.platform.models import Session as LoginSession
from assay.platform.models import User

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["markdown"] = render_markdown
REVIEW_PAGE_SIZE = 50
REVIEW_STATUSES = (REVIEW_PENDING, REVIEW_ACCEPTED, REVIEW_REJECTED, "all")


class NeedLogin(Exception):
    """Raised by pages when nobody is logged in; the app answers with a redirect to the login page."""


def _caller_or_login(s: Session, request: Request, *, mutate: bool = False, csrf: str | None = None) -> auth.Caller:
    try:
        return require_caller(s, request, mutate=mutate, csrf=csrf)
    except HTTPException as e:
        if e.status_code == 401:
            raise NeedLogin() from None
        raise


def _authorize(s: Session, request: Request, project_id: int, roles: tuple[str, ...] = ANY_ROLE, *,
               mutate: bool = False, csrf: str | None = None) -> tuple[auth.Caller, Project, str]:
    try:
        return authorize(s, request, project_id, roles, mutate=mutate, csrf=csrf)
    except HTTPException as e:
        if e.status_code == 401:
            raise NeedLogin() from None
        raise


def login_redirect(request: Request, _exc: Exception | None = None) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def _render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return _render(request, "error.html", status=status, caller=None, status_code=status, message=message)


def _held(s: Session, project: Project, user_id: int) -> Assignment | None:
    return s.scalar(select(Assignment).where(Assignment.project_id == project.id, Assignment.user_id == user_id,
                                             Assignment.status == SLOT_LEASED).order_by(Assignment.leased_at).limit(1))


def _upload(form: Any, field: str, limit: int) -> bytes | None:
    """The bytes of an uploaded file field (read at most ``limit + 1`` bytes: enough to tell it is too big), None
    when the field is missing or empty."""
    f = form.get(field)
    if f is None or isinstance(f, str) or not getattr(f, "filename", None) and not getattr(f, "size", 0):
        return None
    data = f.file.read(limit + 1)
    return data or None


def _shown(project: Project, item: Item, assignment: Assignment, user_id: int) -> dict[str, Any]:
    """The held item as this annotator sees it (their own A/B orientation)."""
    swapped = tasks.sides_swapped(project.config, item.swapped, item.record_id, assignment.id, user_id)
    return display_item(project, item, swapped)


def _answer_from_form(project: Project, form: Any) -> dict[str, Any]:
    t = project.task_type
    if t == "image_edit":
        limit = int(project.config.get("max_upload_mb", 10) * 2**20)
        return {"instruction": form.get("instruction", ""), "after_source": form.get("after_source", ""),
                "after": _upload(form, "after_file", limit), "after_url": form.get("after_url", ""),
                "mask": _upload(form, "mask", limit)}
    if t == "clip_rating":
        return {"scores": {d: form.get(f"score_{d}") for d in project.config["dimensions"]},
                "physics_note": form.get("physics_note", "")}
    if t == trajectory_task.TASK:
        return trajectory_task.answer_from_form(form)
    if t == dialogue_task.TASK:
        return dialogue_task.answer_from_form(form)
    if t in label_task.TASKS:
        return label_task.answer_from_form(t, form)
    if t == "sft":
        return {"response": form.get("response", "")}
    if t == "preference":
        return {"choice": form.get("choice", ""), "rationale": form.get("rationale", "")}
    if t == "rating":
        return {"scores": {d: form.get(f"score_{d}") for d in project.config["dimensions"]},
                "comment": form.get("comment", "")}
    return {"critique": form.get("critique", "")}


def _seconds(form: Any) -> float | None:
    try:
        return float(form.get("seconds", ""))
    except ValueError:
        return None


def web_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def db_of(request: Request):  # noqa: ANN202
        return request.app.state.db

    # -- login ---------------------------------------------------------------------------------------------------
    @r.get("/login")
    def login_form(request: Request, next: str = "/", error: str | None = None) -> HTMLResponse:
        return _login_page(request, next, error)

    def _login_page(request: Request, next_url: str, error: str | None, status: int = 200,
                    retry_after: int | None = None) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        resp = _render(request, "login.html", status=status, login_csrf=token, next=_safe_next(next_url),
                       error=error, retry_after=retry_after, caller=None)
        resp.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies(request), max_age=3600)
        if retry_after:
            resp.headers["Retry-After"] = str(retry_after)
        return resp

    @r.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(_login, request, form)

    def _login(request: Request, form: Any) -> Response:
        next_url = _safe_next(str(form.get("next", "/")))
        cookie = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, str(form.get("csrf_token", ""))):
            return RedirectResponse(f"/login?error=expired&next={quote(next_url)}", status_code=303)
        try:
            done = auth.login(db_of(request), str(form.get("username", "")), str(form.get("password", ""))[:1024],
                              client_address(request))
        except auth.LoginThrottled as e:
            return _login_page(request, next_url, "throttled", status=429, retry_after=e.retry_after)
        if done is None:
            return RedirectResponse(f"/login?error=wrong&next={quote(next_url)}", status_code=303)
        resp = RedirectResponse(next_url, status_code=303)
        resp.set_cookie(auth.SESSION_COOKIE, done.token, httponly=True, samesite="lax",
                        secure=secure_cookies(request), max_age=auth.SESSION_SECONDS)
        resp.delete_cookie(auth.LOGIN_CSRF_COOKIE)
        return resp

    @r.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(_logout, request, form)

    def _logout(request: Request, form: Any) -> Response:
        with db_of(request).write() as s:
            c = _caller_or_login(s, request, mutate=True, csrf=str(form.get("csrf_token", "")))
            s.execute(delete(LoginSession).where(LoginSession.token_hash == c.token_hash))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(auth.SESSION_COOKIE)
        return resp

    # -- projects ------------------------------------------------------------------------------------------------
    @r.get("/")
    def home(request: Request) -> Response:
        with db_of(request).read() as s:
            c = _caller_or_login(s, request)
            if c.is_admin:
                rows = [(p, "admin") for p in s.scalars(select(Project).order_by(Project.id))]
            else:
                rows = list(s.execute(select(Project, Membership.role).join(
                    Membership, Membership.project_id == Project.id).where(Membership.user_id == c.user_id)
                    .order_by(Project.id)))
            mine = dict(s.execute(select(Annotation.project_id, func.count()).where(Annotation.user_id == c.user_id)
                                  .group_by(Annotation.project_id)).all())
            return _render(request, "projects.html", caller=c, projects=rows, mine=mine)

    @r.get("/projects/{project_id}")
    def project_page(project_id: int, request: Request) -> Response:
        with db_of(request).read() as s:
            c, p, role = _authorize(s, request, project_id)
            prog = workflow.progress(s, p) if role in REVIEWERS else None
            mine = s.scalar(select(func.count()).where(Annotation.project_id == p.id, Annotation.user_id == c.user_id))
            return _render(request, "project.html", caller=c, project=p, role=role, progress=prog, mine=mine,
                           held=_held(s, p, c.user_id))

    @r.post("/projects/{project_id}/start")
    async def start(project_id: int, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(_start, project_id, request, form)

    def _start(project_id: int, request: Request, form: Any) -> Response:
        with db_of(request).write() as s:
            c, p, _ = _authorize(s, request, project_id, mutate=True, csrf=str(form.get("csrf_token", "")))
            workflow.next_assignment(s, p, c.user_id)
        return RedirectResponse(f"/projects/{project_id}/annotate", status_code=303)

    @r.get("/projects/{project_id}/annotate")
    def annotate(project_id: int, request: Request, done: int | None = None) -> Response:
        with db_of(request).read() as s:
            c, p, role = _authorize(s, request, project_id)
            a = _held(s, p, c.user_id)
            item = _shown(p, s.get(Item, a.item_id), a, c.user_id) if a else None
            mine = s.scalar(select(func.count()).where(Annotation.project_id == p.id, Annotation.user_id == c.user_id))
            return _render(request, "annotate.html", caller=c, project=p, role=role, assignment=a, item=item,
                           mine=mine, error=None, values={}, just_done=done)

    @r.post("/projects/{project_id}/submit")
    async def submit(project_id: int, request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > tasks.MAX_FORM_BYTES:  # refuse before spooling a huge upload
            raise HTTPException(413, f"the submission is larger than {tasks.MAX_FORM_BYTES // 2**20} MiB")
        form = await request.form()
        return await run_in_threadpool(_submit, project_id, request, form)

    def _submit(project_id: int, request: Request, form: Any) -> Response:
        db = db_of(request)
        try:
            try:
                aid = int(str(form.get("assignment_id", "")))
            except ValueError:
                raise workflow.WorkflowError("missing assignment") from None
            with db.read() as s:  # the answer's shape depends on the project: read it first
                _c, p, _ = _authorize(s, request, project_id)
            c, p, done = submit_answer(db, request, project_id, aid, _answer_from_form(p, form), _seconds(form),
                                       csrf=str(form.get("csrf_token", "")))
            claim_next(db, c, p)
        except workflow.WorkflowError as e:
            with db.read() as s:
                c, p, role = _authorize(s, request, project_id)
                a = _held(s, p, c.user_id)
                item = _shown(p, s.get(Item, a.item_id), a, c.user_id) if a else None
                values = {k: v for k, v in form.items() if isinstance(v, str)}
                return _render(request, "annotate.html", status=e.status, caller=c, project=p, role=role,
                               assignment=a, item=item, mine=None, error=str(e), values=values, just_done=None)
        return RedirectResponse(f"/projects/{project_id}/annotate?done={done.id}", status_code=303)

    @r.post("/projects/{project_id}/skip")
    async def skip(project_id: int, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(_skip, project_id, request, form)

    def _skip(project_id: int, request: Request, form: Any) -> Response:
        with db_of(request).write() as s:
            c, p, _ = _authorize(s, request, project_id, mutate=True, csrf=str(form.get("csrf_token", "")))
            try:
                aid = int(str(form.get("assignment_id", "")))
            except ValueError:
                raise workflow.WorkflowError("missing assignment") from None
            skipped = workflow.held_assignment(s, p, c.user_id, aid).item_id
            workflow.release(s, p, c.user_id, aid)
            workflow.next_assignment(s, p, c.user_id, avoid_item=skipped)  # not the skipped item straight back
        return RedirectResponse(f"/projects/{project_id}/annotate", status_code=303)

    # -- review and dashboard ------------------------------------------------------------------------------------
    @r.get("/projects/{project_id}/review")
    def review_page(project_id: int, request: Request, status: str = REVIEW_PENDING, annotator: str = "",
                    page: int = 1) -> Response:
        """Annotations to review, 50 a page, filtered by review status (``all`` for any) and annotator."""
        if status not in REVIEW_STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(REVIEW_STATUSES)}")
        with db_of(request).read() as s:
            c, p, role = _authorize(s, request, project_id, REVIEWERS)
            where = [Annotation.project_id == p.id]
            if status != "all":
                where.append(Annotation.review_status == status)
            if annotator:
                where.append(User.username == annotator)
            total = s.scalar(select(func.count()).select_from(Annotation).join(User, User.id == Annotation.user_id)
                             .where(*where))
            pages = max(1, -(-total // REVIEW_PAGE_SIZE))
            page = min(max(1, page), pages)
            rows = s.execute(select(Annotation, Item, User.username).join(Item, Item.id == Annotation.item_id)
                             .join(User, User.id == Annotation.user_id).where(*where)
                             .order_by(Annotation.id).limit(REVIEW_PAGE_SIZE)
                             .offset((page - 1) * REVIEW_PAGE_SIZE)).all()
            shown = [(a, display_item(p, i, record_view=True), u, i) for a, i, u in rows]
            annotators = s.scalars(select(User.username).join(Annotation, Annotation.user_id == User.id)
                                   .where(Annotation.project_id == p.id).distinct().order_by(User.username)).all()
            here = {"status": status, "annotator": annotator}
            return _render(request, "review.html", caller=c, project=p, role=role, rows=shown, total=total,
                           page=page, pages=pages, statuses=REVIEW_STATUSES, annotators=annotators, filters=here,
                           page_url=lambda n: f"/projects/{p.id}/review?{urlencode({**here, 'page': n})}")

    @r.post("/projects/{project_id}/review/{annotation_id}")
    async def review(project_id: int, annotation_id: int, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(_review, project_id, annotation_id, request, form)

    def _review(project_id: int, annotation_id: int, request: Request, form: Any) -> Response:
        with db_of(request).write() as s:
            c, p, _ = _authorize(s, request, project_id, REVIEWERS, mutate=True, csrf=str(form.get("csrf_token", "")))
            workflow.review(s, p, c.user_id, annotation_id, str(form.get("decision", "")),
                            str(form.get("note", "")))
        back = _safe_next(str(form.get("back", "")))  # the review page (with its filters and page) it came from
        return RedirectResponse(back if back.startswith(f"/projects/{project_id}/review") else
                                f"/projects/{project_id}/review", status_code=303)

    @r.get("/projects/{project_id}/dashboard")
    def dashboard(project_id: int, request: Request) -> Response:
        from assay.annotate.quality import project_quality

        with db_of(request).read() as s:
            c, p, role = _authorize(s, request, project_id, REVIEWERS)
            return _render(request, "dashboard.html", caller=c, project=p, role=role,
                           progress=workflow.progress(s, p), q=project_quality(s, p))

    @r.get("/projects/{project_id}/export/{fmt}.jsonl")
    def export_file(project_id: int, fmt: str, request: Request) -> Response:
        from assay.annotate.export import ExportError, export_rows
        from assay.core.record import dumps

        with db_of(request).read() as s:
            c, p, _ = _authorize(s, request, project_id, REVIEWERS)
            try:
                body = b"".join(dumps(row) + b"\n" for row in export_rows(s, p, fmt))
            except ExportError as e:
                raise HTTPException(400, str(e)) from None
        return Response(body, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="{p.id}-{fmt}.jsonl"'})

    # -- admin ---------------------------------------------------------------------------------------------------
    @r.get("/admin")
    def admin(request: Request, error: str | None = None, ok: str | None = None) -> Response:
        with db_of(request).read() as s:
            c = _caller_or_login(s, request)
            require_admin(c)
            users = s.scalars(select(User).order_by(User.id)).all()
            projects = s.scalars(select(Project).order_by(Project.id)).all()
            return _render(request, "admin.html", caller=c, users=users, projects=projects, task_types=TASK_TYPES,
                           locked=auth.account_blocks(s, [u.username for u in users]), error=error, ok=ok)

    @r.post("/admin/{action}")
    async def admin_action(action: str, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(_admin_action, action, request, form)

    def _admin_action(action: str, request: Request, form: Any) -> Response:
        try:
            with db_of(request).write() as s:
                c = _caller_or_login(s, request, mutate=True, csrf=str(form.get("csrf_token", "")))
                require_admin(c)
                f = {k: str(v) for k, v in form.items()}
                if action == "users":
                    accounts.create_user(s, f.get("username", ""), f.get("password", ""), f.get("role", "annotator"))
                elif action == "projects":
                    workflow.create_project(s, f.get("name", ""), f.get("task_type", ""),
                                            guidelines=f.get("guidelines", ""), overlap=int(f.get("overlap") or 1),
                                            gold_rate=float(f.get("gold_rate") or 0),
                                            review=f.get("review") == "on")
                elif action == "members":
                    p = workflow.find_project(s, f.get("project", ""))
                    workflow.add_member(s, p, f.get("username", ""), f.get("role", "annotator"))
                elif action in ACCOUNT_ACTIONS:
                    account_action(s, f.get("username", ""), action, c.username, f.get("password"))
                else:
                    raise HTTPException(404)
        except (workflow.WorkflowError, ValueError) as e:
            return RedirectResponse(f"/admin?error={quote(str(e))}", status_code=303)
        return RedirectResponse(f"/admin?ok={quote(action)}", status_code=303)

    return r


def _safe_next(url: str) -> str:
    """Only same-site relative paths: no open redirect through ?next=."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/"

"""The knowledge layer's REST API (FastAPI), read-only, over a :class:`~assay.knowledge.service.KnowledgeService`.

=========================================  ======================================================================
``GET  /v1/search?q=&k=&domain=&status=``  hybrid search (``mode=hybrid|bm25|dense``, ``at=`` ISO time, repeat
                                           ``domain``/``status`` for several; ``status=any`` drops the filter)
``GET  /v1/patches/{id}[?version=]``       the full signed patch (latest version without ``version``); 404 if none
``POST /v1/verify``                        ``{"patch": {...}}`` verifies that copy offline (the client's own
                                           stored patch), ``{"patch_id", "version"?}`` the stored one
``GET  /v1/changes?since=&limit=``         the change feed after cursor ``since`` (``cursor`` + ``more`` to page)
=========================================  ======================================================================

Authentication reuses the annotation server's users and logins (``assay annotate``): ``POST /api/login`` there gives
a token sent here as ``Authorization: Bearer <token>`` (or the session cookie). Reads need a valid, active user,
unless the app is built with ``public_read=True``; what each reader sees depends on status and domain
(:mod:`assay.knowledge.access`: anonymous readers see accepted patches only, drafts need a role in their domain).
Writes are not served here: patches are published and reviewed with the ``assay knowledge`` CLI, where the
publisher's private key lives. Request size and rate are limited by :class:`assay.platform.limits.RequestLimits`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

from assay.knowledge.access import Reader
from assay.knowledge.service import MAX_QUERY_CHARS, TooLarge
from assay.platform import auth
from assay.platform.http import FastJSON, SecurityHeaders, request_token
from assay.platform.limits import DEFAULT_BURST, DEFAULT_MAX_BODY, DEFAULT_RATE, RequestLimits

#: statuses a search returns when the client names none
DEFAULT_STATUS = ("accepted",)
MAX_K = 100
MAX_CHANGES = 1000


class VerifyBody(BaseModel):
    """Either a patch document to verify as given, or the id (and version) of a stored one."""

    patch: dict[str, Any] | None = None
    patch_id: str | None = Field(default=None, max_length=200)
    version: int | None = Field(default=None, ge=1)


def caller_of(request: Request) -> auth.Caller | None:
    """The logged-in annotation-server user behind ``request``, or None."""
    token, via_cookie = request_token(request)
    if not token:
        return None
    with request.app.state.knowledge_db.read() as s:
        return auth.resolve(s, token, via_cookie)


def _reader(request: Request) -> Reader:
    """Dependency of every read: 401 unless the caller is logged in or the server is public for reads; the reader
    whose rights the read is served with."""
    caller = caller_of(request)
    if caller is None and not request.app.state.knowledge_public_read:
        raise HTTPException(401, "not logged in: send Authorization: Bearer <token> (assay annotate login)",
                            headers={"WWW-Authenticate": "Bearer"})
    return Reader.for_caller(request.app.state.knowledge.store, caller)


def knowledge_router() -> APIRouter:
    """The ``/v1`` routes. The app must carry ``state.knowledge`` (the service), ``state.knowledge_db`` (the
    :class:`~assay.platform.db.Database` holding users and sessions) and ``state.knowledge_public_read``."""
    r = APIRouter(prefix="/v1")

    def service_of(request: Request) -> Any:
        return request.app.state.knowledge

    @r.get("/search")
    def search(request: Request, reader: Reader = Depends(_reader),
               q: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS),
               k: int = Query(5, ge=1, le=MAX_K), mode: str = Query("hybrid", pattern="^(hybrid|bm25|dense)$"),
               domain: list[str] | None = Query(None), status: list[str] | None = Query(None),
               at: datetime | None = None) -> FastJSON:
        statuses: list[str] | None = list(status) if status else list(DEFAULT_STATUS)
        if statuses and "any" in statuses:
            statuses = None
        results = service_of(request).search(q, k, domains=domain or None, status=statuses, at=at, mode=mode,
                                             reader=reader)
        return FastJSON({"query": q, "results": results})

    @r.get("/patches/{patch_id}")
    def get_patch(request: Request, patch_id: str, version: int | None = Query(None, ge=1),
                  reader: Reader = Depends(_reader)) -> FastJSON:
        patch = service_of(request).get_patch(patch_id, version, reader=reader)
        if patch is None:
            raise HTTPException(404, f"no patch {patch_id}" + (f" version {version}" if version else ""))
        return FastJSON(patch)

    @r.post("/verify")
    def verify(body: VerifyBody, request: Request, reader: Reader = Depends(_reader)) -> FastJSON:
        if (body.patch is None) == (body.patch_id is None):
            raise HTTPException(422, "send either 'patch' (a patch document) or 'patch_id' (a stored patch)")
        service = service_of(request)
        if body.patch is not None:
            try:
                return FastJSON(service.verify_patch(body.patch, reader=reader))
            except TooLarge as e:
                raise HTTPException(413, str(e)) from None
        if service.get_patch(body.patch_id, body.version, reader=reader) is None:
            raise HTTPException(404, f"no patch {body.patch_id}")
        return FastJSON(service.verify_patch(body.patch_id, body.version, reader=reader))

    @r.get("/changes")
    def changes(request: Request, since: int = Query(0, ge=0),
                limit: int = Query(100, ge=1, le=MAX_CHANGES), reader: Reader = Depends(_reader)) -> FastJSON:
        return FastJSON(service_of(request).changes_since(since, limit, reader=reader))

    return r


def create_app(service: Any, *, public_read: bool = False, database: Any = None, lifespan: Any = None,
               extra_routes: Callable[[FastAPI], None] | None = None, max_body: int = DEFAULT_MAX_BODY,
               rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST) -> FastAPI:
    """A FastAPI app serving :func:`knowledge_router` for ``service``. ``database``: where users and sessions live
    (default: ``service.db``, the same database as the patches). ``lifespan`` and ``extra_routes``: what
    :mod:`assay.knowledge.server` adds for the MCP endpoint. ``max_body``, ``rate``, ``burst``: see
    :class:`~assay.platform.limits.RequestLimits` (they hold for every route, MCP included)."""
    app = FastAPI(title="Assay knowledge", docs_url="/v1/docs", openapi_url="/v1/openapi.json", redoc_url=None,
                  lifespan=lifespan)
    app.state.knowledge = service
    app.state.knowledge_db = database if database is not None else service.db
    app.state.knowledge_public_read = public_read
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLimits, max_body=max_body, rate=rate, burst=burst)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(knowledge_router())
    if extra_routes is not None:
        extra_routes(app)
    return app

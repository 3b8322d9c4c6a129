"""Run the knowledge service: REST (``/v1``) and MCP over streamable HTTP (``/mcp``) on one port, or MCP over stdio.

``assay knowledge serve`` calls :func:`serve`. The pieces are usable on their own:

* :func:`open_service` builds a :class:`~assay.knowledge.service.KnowledgeService` for a database (migrating it) and
  a :class:`~assay.knowledge.search.HybridIndex` (by default a folder next to the SQLite file, in memory for
  PostgreSQL);
* :func:`build_app` gives the ASGI app (FastAPI) with both faces, for uvicorn or an in-process test client.

The MCP endpoint sits behind the same check as the REST reads: a valid annotation-server login (``Authorization:
Bearer <token>``), unless ``public_read``. Over stdio there is no login: whoever can start the process can already
read the database file.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, AsyncIterator

from assay.platform import auth
from assay.platform.db import Database

log = logging.getLogger(__name__)

TRANSPORTS = ("http", "rest", "mcp-stdio")
DEFAULT_PORT = 8090


def default_index_path(db: Database) -> Path | None:
    """``<file>.knowledge-index/`` next to a SQLite database; None (in memory, rebuilt at start) otherwise."""
    if db.is_sqlite and db.url.startswith("sqlite:///") and ":memory:" not in db.url:
        return Path(db.url[len("sqlite:///"):]).with_suffix(".knowledge-index")
    return None


def load_public_keys(keys_dir: str | Path) -> dict[str, bytes]:
    """Trusted public keys from a folder (``*.pub``, ``*.pem``), keyed by key id."""
    from assay.knowledge import keys

    folder = Path(keys_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no keys folder {folder}")
    found: dict[str, bytes] = {}
    for path in sorted([*folder.glob("*.pub"), *folder.glob("*.pem")]):
        try:
            raw = keys.load_public(path)
        except keys.KeyFileError as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        found[keys.key_id(raw)] = raw
    return found


def load_roots(paths: Any) -> dict[str, bytes]:
    """Pinned root public keys from files (PEM, hex or base64; a private key file gives its public half)."""
    from assay.knowledge import keys

    found: dict[str, bytes] = {}
    for path in paths or ():
        raw = keys.load_public(keys.resolve_key_path(path))
        found[keys.key_id(raw)] = raw
    return found


def open_service(db: str | Database | None = None, *, index_path: str | Path | None = None, embedder: Any = "auto",
                 keys_dir: str | Path | None = None, public_keys: dict[str, bytes] | None = None,
                 roots: Any = None, trust_registered: bool = False, migrate: bool = True) -> Any:
    """A ready :class:`KnowledgeService`: database migrated, search index opened (and brought up to date with the
    store by the service). Trust is pinned: ``roots`` (root public key files, or a dict key id → raw bytes) make the
    stored certificates count; ``keys_dir``/``public_keys`` pin keys one by one; registered keys are trusted only
    with ``trust_registered``."""
    from assay.knowledge.search import HybridIndex
    from assay.knowledge.service import KnowledgeService

    database = db if isinstance(db, Database) else Database(db)
    if migrate:
        database.migrate()
    path = Path(index_path) if index_path is not None else default_index_path(database)
    index = HybridIndex(path, embedder=embedder)
    trusted = dict(public_keys or {})
    if keys_dir is not None:
        trusted.update(load_public_keys(keys_dir))
    pinned_roots = dict(roots) if isinstance(roots, dict) else load_roots(roots)
    return KnowledgeService(database, index=index, public_keys=trusted or None, roots=pinned_roots,
                            trust_registered=trust_registered)


def limit_torch_threads(threads: int = 1) -> None:
    """Give torch ``threads`` intra-op threads, when torch is installed. A server embeds one short query per request:
    with torch's default (one thread per core) the threads wait on each other, and on a busy machine one descheduled
    thread stalls the rest. We measured the MiniLM query embedding at 12 ms (p50) with one thread against 134 ms
    with two, with other jobs running on the same 2 cores."""
    try:
        import torch
    except ModuleNotFoundError:
        return
    torch.set_num_threads(threads)


class BearerGate:
    """ASGI wrapper letting a request through only with a valid annotation-server login (or when reads are public).
    Answers 401 with a JSON body otherwise; the login check runs in a worker thread (it is a database query)."""

    def __init__(self, app: Any, database: Database, public_read: bool) -> None:
        self.app, self.database, self.public_read = app, database, public_read

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.public_read and not await self._logged_in(scope):
            body = b'{"detail":"not logged in: send Authorization: Bearer <token> (assay annotate login)"}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    async def _logged_in(self, scope: Any) -> bool:
        import anyio.to_thread

        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if header[:7].lower() != "bearer ":
            return False
        token = header[7:].strip()

        def check() -> bool:
            with self.database.read() as s:
                return auth.resolve(s, token, via_cookie=False) is not None

        return await anyio.to_thread.run_sync(check)


def build_app(service: Any, *, public_read: bool = False, database: Database | None = None, mcp: bool = True,
              host: str = "127.0.0.1", **limits: Any) -> Any:
    """The ASGI app: REST under ``/v1``, and (``mcp=True``) MCP streamable HTTP at ``/mcp``. ``host``: where it
    will listen (a loopback host turns on the MCP transport's DNS-rebinding protection). ``limits``: ``max_body``,
    ``rate``, ``burst`` of :class:`assay.platform.limits.RequestLimits`, for both faces."""
    from assay.knowledge.api import create_app

    users = database if database is not None else service.db
    if not mcp:
        return create_app(service, public_read=public_read, database=users, **limits)
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp

    from assay.knowledge.mcp_server import build_mcp_server

    server = build_mcp_server(service, users)
    server.streamable_http_app(streamable_http_path="/mcp", host=host)  # creates the session manager
    manager = server.session_manager

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with manager.run():
            yield

    def add_mcp(app: Any) -> None:
        app.add_route("/mcp", BearerGate(StreamableHTTPASGIApp(manager), users, public_read),
                      methods=["GET", "POST", "DELETE"], include_in_schema=False)

    app = create_app(service, public_read=public_read, database=users, lifespan=lifespan, extra_routes=add_mcp,
                     **limits)
    app.state.mcp = server
    return app


def serve(db: str | Database | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          transport: str = "http", public_read: bool = False, index_path: str | Path | None = None, *,
          embedder: Any = "auto", keys_dir: str | Path | None = None, log_level: str = "info",
          torch_threads: int | None = 1, roots: Any = None, trust_registered: bool = False,
          **limits: Any) -> None:
    """Serve the knowledge base until interrupted. ``transport``: ``http`` (REST ``/v1`` + MCP ``/mcp``), ``rest``
    (REST only) or ``mcp-stdio`` (MCP on stdin/stdout, for a model host that starts the process).
    ``torch_threads``: see :func:`limit_torch_threads` (None keeps torch's default)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    if torch_threads and embedder not in ("none", "hashed", None):
        limit_torch_threads(torch_threads)
    service = open_service(db, index_path=index_path, embedder=embedder, keys_dir=keys_dir, roots=roots,
                           trust_registered=trust_registered)
    if not (service.roots or service.trusted_keys or trust_registered):
        log.warning("no root key pinned (--root): nothing will verify as valid")
    try:
        if transport == "mcp-stdio":
            from assay.knowledge.mcp_server import build_mcp_server

            build_mcp_server(service).run("stdio")
            return
        import uvicorn

        app = build_app(service, public_read=public_read, mcp=transport == "http", host=host, **limits)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        close = getattr(service, "close", None)
        if callable(close):
            close()

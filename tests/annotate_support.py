"""Fixtures and helpers for the annotation-platform tests: a fresh database per test on SQLite and on PostgreSQL
(127.0.0.1:5432, trust auth, database ``test``; a new schema per test so runs never collide), users, projects and
HTTP clients."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

PG_HOST = os.environ.get("ASSAY_TEST_PG_HOST", "127.0.0.1")
PG_DB = os.environ.get("ASSAY_TEST_PG_DB", "test")


def _pg_user() -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    for user in (os.environ.get("ASSAY_TEST_PG_USER"), "postgres", "root"):
        if not user:
            continue
        try:
            with psycopg.connect(host=PG_HOST, port=5432, dbname=PG_DB, user=user, connect_timeout=3):
                return user
        except psycopg.Error:
            continue
    return None


PG_USER = _pg_user()
requires_pg = pytest.mark.skipif(PG_USER is None, reason=f"no PostgreSQL at {PG_HOST}:5432/{PG_DB}")
BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql", marks=requires_pg)]


def cheap_password_hashing() -> None:
    """Argon2id with small cost parameters, so that tests creating many users stay fast (verification reads the
    parameters from each hash, so this is still real Argon2)."""
    from argon2 import PasswordHasher

    from assay.platform import auth

    auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


_SQLITE_TEMPLATE: dict[str, str] = {}


def make_database(backend: str, tmp_path, via_alembic: bool = False) -> tuple[Any, Any]:  # noqa: ANN001
    """(Database, cleanup) — an empty schema. SQLite: a copy of a file migrated once by Alembic; PostgreSQL: a new
    schema made by ``create_all`` (or by Alembic with ``via_alembic``; test_migrations_match_the_models proves the
    two agree)."""
    import shutil

    from assay.platform.db import Database

    if backend == "sqlite":
        path = tmp_path / "annotate.db"
        if via_alembic or "path" not in _SQLITE_TEMPLATE:
            db = Database(str(path))
            db.migrate()
            if not via_alembic:
                db.dispose()
                template = tmp_path.parent / f"annotate-template-{uuid.uuid4().hex[:8]}.db"
                shutil.copy(path, template)
                _SQLITE_TEMPLATE["path"] = str(template)
                db = Database(str(path))
        else:
            shutil.copy(_SQLITE_TEMPLATE["path"], path)
            db = Database(str(path))
        return db, db.dispose
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, dbname=PG_DB, user=PG_USER, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:5432/{PG_DB}?options=-csearch_path%3D{schema}"
    db = Database(url, pool_size=5)
    if via_alembic:
        db.migrate()
    else:
        from assay.platform.models import all_tables

        all_tables().create_all(db.write_engine)

    def cleanup() -> None:
        db.dispose()
        with psycopg.connect(host=PG_HOST, dbname=PG_DB, user=PG_USER, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return db, cleanup


@dataclass
class ApiUser:
    """An HTTP client logged in through the API (bearer token)."""

    client: Any
    username: str
    token: str
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers=self.headers, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers=self.headers, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.client.delete(url, headers=self.headers, **kw)


def api_login(client: Any, username: str, password: str) -> ApiUser:
    r = client.post("/api/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    return ApiUser(client, username, body["token"], body["csrf_token"])


def web_login(client: Any, username: str, password: str) -> str:
    """Log a TestClient in through the HTML form; returns the session's CSRF token."""
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    home = client.get("/")
    return re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)


def preference_records(n: int, prefix: str = "r") -> list[Any]:
    from assay.core.record import Record

    return [Record(f"{prefix}{i}", {"prompt": f"question {i}", "chosen": f"good answer {i}",
                                    "rejected": f"bad answer {i}"}, "preference",
                   meta={"source": "synthetic", "n": i}) for i in range(n)]


def sft_records(n: int, prefix: str = "s") -> list[Any]:
    from assay.core.record import Record

    return [Record(f"{prefix}{i}", {"prompt": f"Write a haiku about {i}."}, "conversation") for i in range(n)]


@contextlib.contextmanager
def annotate_server(db_path: Any) -> Iterator[str]:
    """``assay annotate serve`` on a free loopback port over ``db_path`` in its own process; yields its base URL."""
    from testutil import free_port, http_process

    base = f"http://127.0.0.1:{free_port()}"
    port = base.rsplit(":", 1)[1]
    with http_process([sys.executable, "-m", "assay.annotate.cli", "serve", "--db", str(db_path), "--port", port,
                       "--workers", "1"], base + "/healthz", env={**os.environ, "PYTHONUNBUFFERED": "1"}):
        yield base


@dataclass
class BrowserSession:
    page: Any  # a Playwright Page, logged in, on the projects list
    base: str  # the server's base URL
    errors: list[str]  # JavaScript errors the page raised (a test ends by asserting there were none)


@contextlib.contextmanager
def logged_in_page(db_path: Any, username: str, password: str, viewport: tuple[int, int] = (1200, 1000),
                   timeout_ms: int = 20_000) -> Iterator[BrowserSession]:
    """``assay annotate serve`` over ``db_path`` and headless Chromium logged in to it as ``username``."""
    from browser_support import chromium

    with annotate_server(db_path) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        page.set_default_timeout(timeout_ms)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        yield BrowserSession(page, base, errors)

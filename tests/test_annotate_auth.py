"""The login story of the annotation server (issue 14 §3), on SQLite and PostgreSQL: throttling with backoff and
lockout (refused before any password check), the audit log, Argon2id parameters and rehashing, offboarding
(deactivate/reactivate), sessions revoked on password change and deactivation, Secure cookies and HSTS."""

from __future__ import annotations

import re

import pytest
from annotate_support import api_login, web_login
from argon2 import PasswordHasher
from sqlalchemy import func, select

from assay.annotate import workflow
from assay.annotate.models import Assignment
from assay.platform import auth
from assay.platform.models import Session, User
from assay.platform.users import create_user, set_password

PW = "password-123"


class CountingHasher(PasswordHasher):
    """A real (cheap) Argon2id hasher that counts password checks."""

    checks = 0

    def verify(self, hash, password):  # noqa: ANN001, ANN201, A002
        CountingHasher.checks += 1
        return super().verify(hash, password)


@pytest.fixture
def counting_hasher():
    hasher = CountingHasher(time_cost=1, memory_cost=1024, parallelism=1)
    CountingHasher.checks = 0
    auth._hasher, auth._DUMMY_HASH = hasher, None
    yield hasher
    auth._hasher, auth._DUMMY_HASH = None, None


@pytest.fixture
def users(db, counting_hasher):
    from assay.core.record import Record

    with db.write() as s:
        create_user(s, "admin", PW, "admin")
        create_user(s, "alice", PW, "annotator")
        p = workflow.create_project(s, "prefs", "preference")
        workflow.add_member(s, p, "alice")
        workflow.add_items(s, p, [Record(f"r{i}", {"prompt": f"q{i}", "chosen": "x", "rejected": "y"}, "preference")
                                  for i in range(3)])
        return {"prefs": p.id}


def _client(db, **options):  # noqa: ANN001, ANN003, ANN202
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app

    return TestClient(create_app(database=db, **options), follow_redirects=False)


def _login(client, username: str, password: str):  # noqa: ANN001, ANN202
    return client.post("/api/login", json={"username": username, "password": password})


def test_31st_wrong_password_from_one_address_is_refused_without_checking_the_hash(db, users):
    with _client(db) as client:
        # credential stuffing: 30 names, one wrong password each, from one address
        for k in range(30):
            assert _login(client, f"user{k}", "wrong-password").status_code == 401
        assert CountingHasher.checks == 30
        r = _login(client, "alice", PW)  # the 31st attempt, even with the right password
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "too many failed logins" in r.json()["detail"]
        assert CountingHasher.checks == 30  # refused before any Argon2 work
    from assay.platform.models import AuthEvent

    with db.read() as s:
        failed = s.scalar(select(func.count()).where(AuthEvent.kind == "login_failed", AuthEvent.ip == "testclient"))
    assert failed == 30


def test_account_backs_off_after_five_failures_and_locks_after_twenty(db, users):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app

    app = create_app(database=db)
    one = TestClient(app, follow_redirects=False, client=("10.0.0.1", 50000))
    for _ in range(5):
        assert _login(one, "alice", "wrong-password").status_code == 401
    checks = CountingHasher.checks
    # from another address too: the account itself waits (1 s after the 5th failure, doubling after each one)
    other = TestClient(app, follow_redirects=False, client=("10.0.0.2", 50000))
    r = _login(other, "alice", PW)
    assert r.status_code == 429 and CountingHasher.checks == checks
    # the web form answers the same, with a page that says why
    page = other.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = other.post("/login", data={"username": "alice", "password": PW, "csrf_token": token, "next": "/"})
    assert r.status_code == 429 and "Too many failed logins" in r.text and CountingHasher.checks == checks
    # 20 failures lock the account for an hour; an admin unlocks it
    with db.write() as s:
        for _ in range(15):
            auth.record_failure(s, "alice", "10.0.0.3")
    admin = api_login(_client(db), "admin", PW)
    admin.client.app = app
    listed = {u["username"]: u for u in admin.get("/api/users").json()}
    assert listed["alice"]["locked_until"] > auth.now() + 3000 and listed["admin"]["locked_until"] is None
    assert admin.post("/api/users/alice/unlock").status_code == 200
    assert _login(other, "alice", PW).status_code == 200
    kinds = [e["kind"] for e in admin.get("/api/audit?username=alice").json()]
    assert kinds[0] == "unlocked" and "locked" in kinds and kinds.count("login_failed") == 20


def test_lockout_ends_by_itself_after_its_delay(db, users):
    long_ago = auth.now() - auth.ACCOUNT_RULE.lock_seconds - 1
    with db.write() as s:
        for _ in range(auth.ACCOUNT_RULE.lock_after):
            auth.record_failure(s, "alice", "10.0.0.4", long_ago)
    with _client(db) as client:
        assert _login(client, "alice", PW).status_code == 200
        # a success forgets the account's failures: the next typo costs nothing
        assert _login(client, "alice", "typo").status_code == 401
        assert _login(client, "alice", PW).status_code == 200


def test_old_hashes_verify_and_are_rehashed_with_owasp_parameters(db, users):
    auth._hasher = None  # the production hasher
    old = PasswordHasher()  # argon2-cffi's defaults, which the server used before: 64 MiB, t=3, p=4
    with db.write() as s:
        s.scalar(select(User).where(User.username == "alice")).password_hash = old.hash(PW)
    with _client(db) as client:
        assert _login(client, "alice", PW).status_code == 200
        with db.read() as s:
            new_hash = s.scalar(select(User.password_hash).where(User.username == "alice"))
        m, t, p = map(int, re.search(r"\$m=(\d+),t=(\d+),p=(\d+)\$", new_hash).groups())
        assert new_hash.startswith("$argon2id$") and (m, t, p) == (19456, 2, 1)
        assert m >= 19 * 1024 and t >= 2 and p >= 1  # OWASP's minimum for Argon2id
        assert _login(client, "alice", PW).status_code == 200  # the new hash verifies
        assert _login(client, "alice", "wrong-password").status_code == 401


def test_deactivated_users_live_session_stops_at_once_and_their_slot_returns(db, users):
    with _client(db) as client:
        alice = api_login(client, "alice", PW)
        cookie_csrf = web_login(client, "alice", PW)  # a browser session too
        assert cookie_csrf and client.get("/").status_code == 200
        held = alice.post(f"/api/projects/{users['prefs']}/next").json()["assignment"]
        admin = api_login(client, "admin", PW)
        r = admin.post("/api/users/alice/deactivate")
        assert r.status_code == 200 and r.json()["active"] is False
        assert alice.get("/api/me").status_code == 401
        assert client.get("/").status_code == 303  # the browser is sent to the login page
        assert _login(client, "alice", PW).status_code == 401
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(Session).join(User).where(User.username == "alice")) == 0
            assert s.get(Assignment, held["id"]).status == "open"
        assert admin.post("/api/users/admin/deactivate").status_code == 400  # not yourself
        assert admin.post("/api/users/alice/reactivate").status_code == 200
        assert api_login(client, "alice", PW).get("/api/me").json()["username"] == "alice"
        kinds = [e["kind"] for e in admin.get("/api/audit?username=alice").json()]
        assert kinds[:3] == ["reactivated", "login_failed", "deactivated"]  # her try while deactivated is logged


def test_password_change_revokes_existing_sessions(db, users):
    with _client(db) as client:
        alice = api_login(client, "alice", PW)
        admin = api_login(client, "admin", PW)
        assert admin.post("/api/users/alice/password", json={"password": "new-password-456"}).status_code == 200
        assert alice.get("/api/me").status_code == 401
        assert admin.get("/api/me").status_code == 200  # only alice's sessions
        alice = api_login(client, "alice", "new-password-456")
        with db.write() as s:  # the shell's set-password does the same
            set_password(s, "alice", "third-password-789", actor="cli")
        assert alice.get("/api/me").status_code == 401


@pytest.mark.parametrize("secure", [False, True])
def test_secure_cookies_and_hsts_when_behind_https(db, users, secure):
    with _client(db, secure_cookies=secure) as client:  # plain http, as a TLS-terminating proxy forwards it
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        # an http client does not send back a Secure cookie by itself (a browser behind the https proxy would)
        login_cookie = re.search(rf"{auth.LOGIN_CSRF_COOKIE}=([^;]+)", page.headers["set-cookie"]).group(1)
        client.cookies.clear()
        r = client.post("/login", data={"username": "alice", "password": PW, "csrf_token": token, "next": "/"},
                        headers={"cookie": f"{auth.LOGIN_CSRF_COOKIE}={login_cookie}"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        session_cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith(auth.SESSION_COOKIE)][0]
        assert ("; secure" in session_cookie.lower()) is secure
        assert ("; secure" in page.headers["set-cookie"].lower()) is secure
        assert ("strict-transport-security" in r.headers) is secure
        if secure:
            assert r.headers["strict-transport-security"].startswith("max-age=31536000")


def test_throttling_is_shared_by_the_workers_of_a_real_server(tmp_path):
    """``serve --workers 2``: failures counted by one worker refuse logins in the other (the state is in the
    database), and the refusal is fast (no Argon2 work)."""
    import json
    import os
    import statistics
    import sys
    import time
    import urllib.error
    import urllib.request

    from testutil import free_port, http_process

    from assay.platform.db import Database

    db_path = tmp_path / "team.db"
    d = Database(str(db_path))
    d.migrate()
    with d.write() as s:
        create_user(s, "alice", PW)
    d.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def login(username: str, password: str) -> tuple[int, float]:
        req = urllib.request.Request(base + "/api/login", json.dumps({"username": username, "password": password})
                                     .encode(), {"content-type": "application/json", "connection": "close"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, time.perf_counter() - t0
        except urllib.error.HTTPError as e:
            return e.code, time.perf_counter() - t0

    with http_process([sys.executable, "-m", "assay.annotate.cli", "serve", "--db", str(db_path), "--port",
                       str(port), "--workers", "2"], base + "/healthz", env={**os.environ}):
        wrong = [login(f"name{k}", "wrong-password") for k in range(30)]
        assert [st for st, _ in wrong] == [401] * 30
        refused = [login("alice", PW) for _ in range(6)]  # a new connection each: either worker may answer
        assert [st for st, _ in refused] == [429] * 6
        # a refusal does no Argon2 work: typically faster than a wrong-password answer (each paid for a 19 MiB hash)
        assert statistics.median(t for _, t in refused) < statistics.median(t for _, t in wrong)


def test_guessing_that_waits_out_every_backoff_still_reaches_the_lock(db, users):
    rule, t = auth.ACCOUNT_RULE, auth.now() - 20_000
    for n in range(1, rule.lock_after + 1):
        with db.write() as s:
            auth.record_failure(s, "alice", None, t)
        with db.read() as s:  # the guesser waits exactly as long as the server asks, then guesses again
            wait = auth.throttled_for(s, "alice", None, t)
        assert wait == pytest.approx(rule.blocked_for(n))
        t += wait + 0.01
    assert wait == rule.lock_seconds  # locked by the 20th failure
    assert t - wait - auth.now() + 20_000 > rule.window  # although the guessing took longer than one window
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(auth.AuthEvent).where(auth.AuthEvent.kind == "locked")) == 1

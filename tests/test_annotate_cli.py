"""``assay annotate`` commands: users, projects, import of pipeline output, export, stats (SQLite)."""

from __future__ import annotations

import json

from annotate_support import cheap_password_hashing
from typer.testing import CliRunner

from assay.annotate.cli import app


def test_cli_round_trip(tmp_path, monkeypatch):
    from assay.annotate import workflow
    from assay.platform.db import Database
    from assay.core.record import Record
    from assay.io.writers import ShardWriter

    cheap_password_hashing()
    db = str(tmp_path / "cli.db")
    run = CliRunner().invoke
    monkeypatch.setenv("ANN_PW", "a-long-password")
    assert run(app, ["migrate", "--db", db]).exit_code == 0
    r = run(app, ["create-user", "lead", "--role", "admin", "--password-env", "ANN_PW", "--db", db])
    assert r.exit_code == 0, r.output
    assert run(app, ["create-user", "ann", "--password-env", "ANN_PW", "--db", db]).exit_code == 0
    r = run(app, ["create-user", "ann", "--password-env", "ANN_PW", "--db", db])
    assert r.exit_code == 2 and "exists" in r.output
    (tmp_path / "guide.md").write_text("Rate honestly.")
    r = run(app, ["create-project", "rubric", "--task", "rating", "--dimensions", "helpfulness,safety",
                  "--scale", "1-7", "--guidelines", f"@{tmp_path / 'guide.md'}", "--db", db])
    assert r.exit_code == 0, r.output
    assert run(app, ["create-project", "bad", "--task", "nonsense", "--db", db]).exit_code == 2
    assert run(app, ["add-member", "rubric", "ann", "--db", db]).exit_code == 0
    w = ShardWriter(str(tmp_path / "out"), "part", "parquet")
    w.write_many([Record(f"rec{i}", {"prompt": f"q{i}", "response": f"answer {i}"}, "conversation")
                  for i in range(4)])
    w.close()
    r = run(app, ["import", "rubric", str(tmp_path / "out"), "--db", db])
    assert r.exit_code == 0 and "imported 4" in r.output, r.output
    # annotate two items through the workflow, then export and read the stats
    d = Database(db)
    with d.read() as s:
        p = workflow.find_project(s, "rubric")
        uid = s.scalar(workflow.select(workflow.User.id).where(workflow.User.username == "ann"))
    for score in (3, 6):
        with d.write() as s:
            a = workflow.next_assignment(s, p, uid)
            workflow.submit(s, p, uid, a.id, {"scores": {"helpfulness": score, "safety": 7}})
    out = tmp_path / "ratings.jsonl"
    r = run(app, ["export", "rubric", "--format", "ratings", "--output", str(out), "--db", db])
    assert r.exit_code == 0 and "2 rows" in r.output, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["score_helpfulness"] for x in rows] == [3, 6] and rows[0]["annotator"] == "ann"
    r = run(app, ["export", "rubric", "--format", "dpo", "--output", str(tmp_path / "x.jsonl"), "--db", db])
    assert r.exit_code == 2 and "needs a preference project" in r.output
    r = run(app, ["stats", "rubric", "--db", db])
    stats = json.loads(r.output)
    assert stats["progress"]["submitted"] == 2 and stats["annotators"][0]["annotations"] == 2


def _one_line_error(r) -> str:  # noqa: ANN001
    """The CLI's answer to bad input: exit status 2 and one line on stderr, no traceback."""
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    return lines[0]


def test_fresh_database_is_migrated_by_any_command_and_bad_input_is_one_line(tmp_path, monkeypatch):
    cheap_password_hashing()
    run = CliRunner().invoke
    monkeypatch.setenv("ANN_PW", "a-long-password")
    monkeypatch.chdir(tmp_path)
    # the Quick start's first command on a machine that never ran `migrate` (issue 15 §1: "no such table: users")
    r = run(app, ["create-user", "lead", "--role", "admin", "--password-env", "ANN_PW", "--db", "fresh.db"])
    assert r.exit_code == 0 and "user lead (admin)" in r.output, r.output
    assert "no project 'prefs'" in _one_line_error(run(app, ["add-member", "prefs", "lead", "--db", "other.db"]))
    line = _one_line_error(run(app, ["create-project", "p", "--task", "sft", "--guidelines", "@missing.md",
                                     "--db", "fresh.db"]))
    assert "No such file or directory" in line and "missing.md" in line
    assert "not valid JSON" in _one_line_error(run(app, ["create-project", "p", "--task", "rating", "--config",
                                                         "{nope", "--db", "fresh.db"]))
    assert "--scale" in _one_line_error(run(app, ["create-project", "p", "--task", "rating", "--scale", "one-five",
                                                  "--db", "fresh.db"]))
    assert "NOT_SET_PW" in _one_line_error(run(app, ["create-user", "x", "--password-env", "NOT_SET_PW",
                                                     "--db", "fresh.db"]))
    assert "no user 'ghost'" in _one_line_error(run(app, ["deactivate", "ghost", "--db", "fresh.db"]))
    assert "no project 'nope'" in _one_line_error(run(app, ["import", "nope", "x.jsonl", "--db", "fresh.db"]))
    assert "no project 'nope'" in _one_line_error(run(app, ["export", "nope", "-f", "dpo", "-o", "x.jsonl",
                                                            "--db", "fresh.db"]))
    assert "database error" in _one_line_error(run(app, ["stats", "p", "--db",
                                                         "postgresql://nobody@127.0.0.1:1/none"]))
    assert not (tmp_path / "x.jsonl").exists()


def test_offboarding_from_the_shell(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from assay.annotate.app import create_app
    from assay.platform.db import Database

    cheap_password_hashing()
    db = str(tmp_path / "team.db")
    run = CliRunner().invoke
    monkeypatch.setenv("ANN_PW", "a-long-password")
    monkeypatch.setenv("NEW_PW", "another-long-password")
    assert run(app, ["create-user", "alice", "--password-env", "ANN_PW", "--db", db]).exit_code == 0
    d = Database(db)
    with TestClient(create_app(database=d)) as client:
        token = client.post("/api/login", json={"username": "alice", "password": "a-long-password"}).json()["token"]
        me = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/me", headers=me).status_code == 200
        r = run(app, ["set-password", "alice", "--password-env", "NEW_PW", "--db", db])
        assert r.exit_code == 0 and "sessions ended" in r.output
        assert client.get("/api/me", headers=me).status_code == 401
        token = client.post("/api/login", json={"username": "alice", "password": "another-long-password"}).json()
        me = {"Authorization": f"Bearer {token['token']}"}
        assert run(app, ["deactivate", "alice", "--db", db]).exit_code == 0
        assert client.get("/api/me", headers=me).status_code == 401
        assert run(app, ["reactivate", "alice", "--db", db]).exit_code == 0
        assert client.post("/api/login", json={"username": "alice",
                                               "password": "another-long-password"}).status_code == 200
    r = run(app, ["audit", "--user", "alice", "--db", db])
    kinds = [json.loads(x)["kind"] for x in r.output.splitlines()]
    assert kinds == ["reactivated", "deactivated", "password_changed"] and r.exit_code == 0
    d.dispose()

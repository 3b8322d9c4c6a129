"""``assay annotate`` commands: users, projects, import of pipeline output, export, stats (SQLite)."""

from __future__ import annotations

import json

from annotate_support import cheap_password_hashing
from typer.testing import CliRunner

from assay.annotate.cli import app


def test_cli_round_trip(tmp_path, monkeypatch):
    from assay.annotate import workflow
    from assay.annotate.db import Database
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

"""``assay knowledge`` from the shell (SQLite): keygen, grant, propose, review, publish, show, offline verify (a
tampered file fails), history, changes, retract, and serve (a real server process answering REST on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from annotate_support import cheap_password_hashing
from testutil import free_port
from typer.testing import CliRunner

from assay.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _ok(result) -> str:  # noqa: ANN001
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_lifecycle_and_offline_verify(tmp_path, monkeypatch):
    cheap_password_hashing()
    db = str(tmp_path / "k.db")
    monkeypatch.setenv("ASSAY_ANNOTATE_DB", db)  # every command finds the database here
    monkeypatch.setenv("PW", "a-long-password")
    monkeypatch.setenv("KEY_PASS", "key passphrase")
    run = CliRunner().invoke
    _ok(run(app, ["annotate", "migrate"]))
    for user in ("alice", "rita", "sam", "paul"):
        _ok(run(app, ["annotate", "create-user", user, "--password-env", "PW"]))
    keys = tmp_path / "keys"
    out = _ok(run(app, ["knowledge", "keygen", "--user", "rita", "--purpose", "reviewer", "--out",
                        str(keys / "rita.key")]))
    assert "registered to rita" in out and (keys / "rita.key.pub").exists()
    _ok(run(app, ["knowledge", "keygen", "--user", "sam", "--out", str(keys / "sam.key")]))
    _ok(run(app, ["knowledge", "keygen", "--user", "paul", "--purpose", "publisher", "--out", str(keys / "paul.key"),
                  "--passphrase-env", "KEY_PASS"]))
    r = run(app, ["knowledge", "keygen", "--user", "ghost", "--out", str(keys / "ghost.key")])
    assert r.exit_code == 2 and "no active user 'ghost'" in r.output and not (keys / "ghost.key").exists()
    for user, role in (("rita", "reviewer"), ("sam", "reviewer"), ("paul", "publisher")):
        _ok(run(app, ["knowledge", "grant", user, "geology", role]))
    assert {(x["user"], x["role"]) for x in json.loads(_ok(run(app, ["knowledge", "roles"])))} == {
        ("rita", "reviewer"), ("sam", "reviewer"), ("paul", "publisher")}

    (tmp_path / "fact.md").write_text("Basalt is an extrusive igneous rock formed by rapid cooling of lava.")
    out = _ok(run(app, ["knowledge", "propose", "--author", "alice", "--title", "Basalt", "--content",
                        f"@{tmp_path / 'fact.md'}", "--domain", "geology", "--source",
                        "https://en.wikipedia.org/wiki/Basalt", "--source", "rec-7"]))
    patch_id = out.split()[0]
    assert len(patch_id) == 32

    # only reviewers of the domain review; an author never reviews their own patch
    r = run(app, ["knowledge", "review", patch_id, "--reviewer", "paul", "--key", str(keys / "paul.key"),
                  "--verdict", "accept", "--passphrase-env", "KEY_PASS"])
    assert r.exit_code == 2 and "not a reviewer of geology" in r.output
    _ok(run(app, ["knowledge", "review", patch_id, "--reviewer", "rita", "--key", str(keys / "rita.key"),
                  "--verdict", "accept", "--comment", "textbook definition"]))
    r = run(app, ["knowledge", "publish", patch_id, "--publisher", "paul", "--key", str(keys / "paul.key"),
                  "--passphrase-env", "KEY_PASS"])
    assert r.exit_code == 2 and "1 of 2 accepting" in r.output
    assert "approved" in _ok(run(app, ["knowledge", "review", patch_id, "--reviewer", "sam", "--key",
                                       str(keys / "sam.key"), "--verdict", "accept"]))
    # a reviewer key never publishes, even for a user who became a publisher
    _ok(run(app, ["knowledge", "grant", "rita", "geology", "publisher"]))
    r = run(app, ["knowledge", "publish", patch_id, "--publisher", "rita", "--key", str(keys / "rita.key")])
    assert r.exit_code == 2 and "only a registered publisher key can publish" in r.output
    r = run(app, ["knowledge", "publish", patch_id, "--publisher", "paul", "--key", str(keys / "paul.key")])
    assert r.exit_code == 2 and "paul.key" in r.output  # encrypted key without its passphrase: a clear error
    out = _ok(run(app, ["knowledge", "publish", patch_id, "--publisher", "paul", "--key", str(keys / "paul.key"),
                        "--passphrase-env", "KEY_PASS"]))
    assert "accepted, signed by key" in out

    patch_file = tmp_path / "basalt.json"
    _ok(run(app, ["knowledge", "show", patch_id, "--output", str(patch_file)]))
    verify = ["knowledge", "verify", str(patch_file), "--key", str(keys / "rita.key.pub"), "--key",
              str(keys / "sam.key.pub"), "--publisher-key", str(keys / "paul.key.pub")]
    monkeypatch.delenv("ASSAY_ANNOTATE_DB")  # offline: no database involved
    result = json.loads(_ok(run(app, verify)))
    assert result["valid"] and result["patch_id"] == patch_id
    text = patch_file.read_text()
    patch_file.write_text(text.replace("rapid cooling", "rapid coolinG"))  # one byte of content
    r = run(app, verify)
    assert r.exit_code == 1 and json.loads(r.output)["checks"]["content_hash"] is False
    patch_file.write_text(text.replace("textbook definition", "textbook definitioN"))  # one byte of a review
    r = run(app, verify)
    assert r.exit_code == 1 and json.loads(r.output)["checks"]["reviews"] is False
    patch_file.write_text(text)
    r = run(app, ["knowledge", "verify", str(patch_file), "--key", str(keys / "rita.key.pub"), "--key",
                  str(keys / "sam.key.pub"), "--publisher-key", str(keys / "rita.key.pub")])
    assert r.exit_code == 1 and "unknown key" in r.output
    monkeypatch.setenv("ASSAY_ANNOTATE_DB", db)

    hist = json.loads(_ok(run(app, ["knowledge", "history", patch_id])))
    assert [e["event"] for e in hist["events"]] == ["proposed", "review", "review", "accepted"]
    assert hist["events"][1]["user"] == "rita"
    feed = json.loads(_ok(run(app, ["knowledge", "changes", "--since", "2", "--limit", "1"])))
    assert [c["seq"] for c in feed["changes"]] == [3] and feed["more"] is True
    r = run(app, ["knowledge", "retract", patch_id, "--by", "sam", "--reason", "x", "--key", str(keys / "sam.key")])
    assert r.exit_code == 2 and "may not retract" in r.output
    assert "retracted" in _ok(run(app, ["knowledge", "retract", patch_id, "--by", "paul", "--reason",
                                        "duplicate of a broader patch", "--key", str(keys / "paul.key"),
                                        "--passphrase-env", "KEY_PASS"]))
    r = run(app, ["knowledge", "show", "0" * 32])
    assert r.exit_code == 2 and "no patch" in r.output


def test_cli_serve_answers_rest(tmp_path):
    """`assay knowledge serve` in its own process: the server comes up on loopback and serves the (empty) feed."""
    import httpx

    cheap_password_hashing()
    db = str(tmp_path / "serve.db")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ASSAY_ANNOTATE_DB": db}
    proc = subprocess.Popen([sys.executable, "-m", "assay.cli", "knowledge", "serve", "--transport", "rest",
                             "--port", str(port), "--public-read", "--embedder", "hashed", "--log-level", "warning"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/changes", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < deadline, "the server did not come up in 60 s"
                time.sleep(0.3)
        assert r.status_code == 200 and r.json() == {"changes": [], "cursor": 0, "more": False}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = CliRunner().invoke(app, ["knowledge", "serve", "--db", db, "--transport", "carrier-pigeon"])
    assert bad.exit_code == 2 and "transport must be one of" in bad.output

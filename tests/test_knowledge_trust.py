"""Trust set-up and the upgrade path: a knowledge base written before revision 0006 (unsigned events, uncertified keys)
keeps verifying once its root key certifies the keys and seals the log (`assay knowledge trust init`); and the Quick
start's shell ergonomics: `PID=$(assay knowledge propose …)`, keys found in $ASSAY_HOME/keys, offline verification
against a pinned root with an exported trust bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from annotate_support import BACKENDS, make_database
from sqlalchemy import text

from assay.knowledge import keys
from assay.knowledge.patch import Review, new_patch, sign_patch, sign_review, utcnow
from assay.platform.users import create_user

ASSAY = str(Path(sys.executable).parent / "assay")


def _legacy_knowledge_base(db):  # noqa: ANN001, ANN202
    """What a 0005 database holds: a published patch whose events are unsigned rows, keys registered, no certificate.
    Written with SQL, as the code of that revision wrote it."""
    with db.write() as s:
        uid = {u: create_user(s, u, "password-123").id for u in ("alice", "rita", "sam", "paul")}
    k = {u: keys.generate() for u in ("rita", "sam", "paul")}
    p = new_patch(title="Basalt", content="Basalt is an extrusive igneous rock.", domains=["geology"],
                  authors=["alice"])
    reviews = [sign_review(Review(patch_id=p.patch_id, version=1, content_hash=p.content_hash, reviewer=u,
                                  key_id="", verdict="accept", at=utcnow()), k[u]) for u in ("rita", "sam")]
    signed = sign_patch(p.model_copy(update={"reviews": reviews}), k["paul"], publisher="paul", quorum=2)
    doc = json.dumps
    with db.write_engine.begin() as c:
        for u, purpose in (("rita", "reviewer"), ("sam", "reviewer"), ("paul", "publisher")):
            c.execute(text("INSERT INTO knowledge_keys (key_id, user_id, purpose, public_key, created_at) "
                           "VALUES (:k, :u, :p, :raw, 0)"),
                      {"k": keys.key_id(k[u]), "u": uid[u], "p": purpose, "raw": keys.raw_public(k[u]).hex()})
        for u, role in (("rita", "reviewer"), ("sam", "reviewer"), ("paul", "publisher")):
            c.execute(text("INSERT INTO knowledge_roles (user_id, domain, role, granted_at) VALUES (:u, 'geology', "
                           ":r, 0)"), {"u": uid[u], "r": role})
        c.execute(text("INSERT INTO knowledge_patches (patch_id, version, author_id, document, content_hash, "
                       "created_at) VALUES (:p, 1, :a, :d, :h, 0)"),
                  {"p": p.patch_id, "a": uid["alice"], "d": doc(p.content_document()), "h": p.content_hash})
        for r in reviews:
            c.execute(text("INSERT INTO knowledge_reviews (patch_id, version, reviewer_id, kind, verdict, document, "
                           "created_at) VALUES (:p, 1, :u, 'review', 'accept', :d, 0)"),
                      {"p": p.patch_id, "u": uid[r.reviewer], "d": doc(r.model_dump(mode="json"))})
        c.execute(text("INSERT INTO knowledge_publications (patch_id, version, publisher_id, key_id, document, "
                       "published_at) VALUES (:p, 1, :u, :k, :d, 0)"),
                  {"p": p.patch_id, "u": uid["paul"], "k": signed.key_id,
                   "d": doc(signed.model_dump(mode="json", exclude={"status"}))})
        history = [("proposed", "proposed", "alice"), ("review", "under_review", "rita"), ("review", "approved", "sam"),
                   ("accepted", "accepted", "paul")]
        for seq, (event, status, user) in enumerate(history, start=1):
            c.execute(text("INSERT INTO knowledge_events (seq, patch_id, version, event, status, user_id, detail, at) "
                           "VALUES (:s, :p, 1, :e, :st, :u, '{}', :at)"),
                      {"s": seq, "p": p.patch_id, "e": event, "st": status, "u": uid[user], "at": 1.7e9 + seq})
    return p.patch_id, k


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_knowledge_base_from_before_0006_verifies_after_trust_init(backend, tmp_path):
    from typer.testing import CliRunner

    from assay.cli import app
    from assay.knowledge.server import open_service
    from assay.knowledge.store import KnowledgeStore

    db, cleanup = make_database(backend, tmp_path, via_alembic=True)
    try:
        from alembic import command

        from assay.platform.db import alembic_config

        command.downgrade(alembic_config(db.write_engine), "0005")
        pid, k = _legacy_knowledge_base(db)
        db.migrate()  # 0005 -> 0006
        root = keys.generate()
        root_key, root_pub = keys.save(root, tmp_path / "root.key")
        svc = open_service(db, index_path=None, embedder="none", roots=[root_pub], migrate=False)
        before = svc.verify_patch(pid)
        assert before["valid"] is False  # what must be done is named
        assert any("trust init" in e for e in before["errors"]), before["errors"]
        out = CliRunner().invoke(app, ["knowledge", "trust", "init", "--root-key", str(root_key), "--db", db.url])
        assert out.exit_code == 0, out.output
        assert "3 key(s) certified; log sealed at seq 4" in out.output
        after = svc.verify_patch(pid)
        assert after["valid"] is True and after["status"] == "accepted", after
        # new, signed events chain onto the unsigned ones and keep verifying
        KnowledgeStore(db).retract(pid, 1, "paul", "merged into a broader patch", k["paul"])
        retracted = svc.verify_patch(pid)
        assert retracted["checks"]["log"] is True and retracted["status"] == "retracted"
        assert svc.log_state().seq == 5 and svc.log_state().intact
    finally:
        cleanup()


def test_quick_start_in_a_shell(tmp_path, monkeypatch):
    """The issue's three shell papercuts: `PID=$(…)` gets the id alone, `keygen` and `--key NAME` agree on where
    keys live ($ASSAY_HOME/keys), and offline `verify` works from the root key plus an exported trust bundle."""
    from annotate_support import cheap_password_hashing
    from typer.testing import CliRunner

    from assay.cli import app

    cheap_password_hashing()
    env = {"ASSAY_HOME": str(tmp_path / "home"), "ASSAY_ANNOTATE_DB": str(tmp_path / "team.db"),
           "PW": "a-long-password"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> str:
        r = CliRunner().invoke(app, list(args))
        assert r.exit_code == 0, r.output
        return r.output

    run("annotate", "migrate")
    for u in ("alice", "rita", "sam", "paul"):
        run("annotate", "create-user", u, "--password-env", "PW")
    run("knowledge", "keygen", "--purpose", "root")
    for u, purpose in (("rita", "reviewer"), ("sam", "reviewer"), ("paul", "publisher")):
        run("knowledge", "keygen", "--user", u, "--purpose", purpose)
        run("knowledge", "grant", u, "geology", purpose)
    run("knowledge", "trust", "init", "--root-key", "root.key")
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", 'PID=$(assay knowledge propose --author alice --title Basalt --content '
                                           '"Basalt is an igneous rock." --domain geology); echo "PID=$PID"'],
        env={**os.environ, **env, "PATH": f"{Path(ASSAY).parent}:{os.environ['PATH']}"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0, shell.stderr
    pid = shell.stdout.strip().removeprefix("PID=")
    assert len(pid) == 32 and int(pid, 16) >= 0 and "proposed" in shell.stderr
    for u in ("rita", "sam"):
        run("knowledge", "review", pid, "--reviewer", u, "--key", f"{u}.key", "--verdict", "accept")
    run("knowledge", "publish", pid, "--publisher", "paul", "--key", "paul.key")
    run("knowledge", "show", pid, "-o", "basalt.json")
    run("knowledge", "trust", "export", "-o", "trust.json")
    assert sorted(p.name for p in (tmp_path / "home" / "keys").iterdir()) == [
        "paul.key", "paul.key.pub", "rita.key", "rita.key.pub", "root.key", "root.key.pub", "sam.key", "sam.key.pub"]
    assert not list(tmp_path.glob("*.key*"))  # nothing written to the working folder
    ok = CliRunner().invoke(app, ["knowledge", "verify", "basalt.json", "--root", "root.key.pub", "--trust",
                                  "trust.json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["valid"] is True, ok.output
    # without the trust bundle the reviewers' keys are unknown: verification fails, it does not guess
    bad = CliRunner().invoke(app, ["knowledge", "verify", "basalt.json", "--root", "root.key.pub"])
    assert bad.exit_code == 1 and "unknown key" in bad.output

"""``assay annotate …``: run the annotation server and manage it from the shell.

    assay annotate serve --db team.db --workers 2
    assay annotate create-user alice --role annotator          # asks for the password (or --password-env VAR)
    assay annotate deactivate alice                            # offboarding: her sessions end at once
    assay annotate create-project prefs --task preference --overlap 3 --gold-rate 0.1 --guidelines guide.md
    assay annotate create-project picks --task preference --sides assignment     # Pick-a-Pic image pairs
    assay annotate create-project edits --task image_edit                         # MagicBrush instructions + masks
    assay annotate create-project clips --task clip_rating --scale 1-5           # Movie Gen style clip rubric
    assay annotate create-project topics --task classify --labels sports,politics,science [--multi-label]
    assay annotate suggest topics                                                # zero-shot pre-annotations
    assay annotate add-member prefs alice
    assay annotate import prefs out/pairs/*.jsonl.gz [--gold]
    assay annotate export prefs --format dpo --output prefs.parquet
    assay annotate stats prefs

``--db`` takes a SQLite file (default ``assay-annotate.db`` or ``$ASSAY_ANNOTATE_DB``) or ``postgresql://…``. Every
command brings a fresh or older database up to the current schema first. Errors are one line on stderr (``error:
…``, exit status 2), never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="The annotation platform: server, users, projects, import and export.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

DB_OPTION = typer.Option(None, "--db", help="SQLite file or postgresql://… URL (default: $ASSAY_ANNOTATE_DB or "
                                            "assay-annotate.db).")


def _db(url: str | None, **options):  # noqa: ANN202, ANN003
    """The database, with its schema brought up to date (a fresh file gets the whole schema)."""
    from assay.platform.db import Database

    d = Database(url, **options)
    d.ensure_schema()
    return d


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _first_line(e: BaseException) -> str:
    lines = str(getattr(e, "orig", None) or e).strip().splitlines()
    return lines[0].strip() if lines else type(e).__name__


def _run(fn):  # noqa: ANN001, ANN202
    """Run a command's work; what a user can cause (bad input, a missing file, a database that is not there) ends
    in one line on stderr instead of a traceback."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from assay.annotate.export import ExportError
    from assay.annotate.workflow import WorkflowError
    from assay.platform.db import SchemaError

    try:
        return fn()
    except (WorkflowError, ExportError, SchemaError, CommandError) as e:
        _fail(str(e))
    except json.JSONDecodeError as e:
        _fail(f"not valid JSON: {e}")
    except OSError as e:
        _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    except SQLAlchemyError as e:
        _fail(f"database error: {_first_line(e)}")


def _password(password_env: str | None, prompt: str) -> str:
    if not password_env:
        return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    if password_env not in os.environ:
        _fail(f"environment variable {password_env} is not set")
    return os.environ[password_env]


@app.command()
def migrate(db: Optional[str] = DB_OPTION) -> None:
    """Create or upgrade the database schema."""
    from assay.platform.db import current_revision

    d = _run(lambda: _db(db))
    typer.echo(f"schema at revision {current_revision(d.write_engine)} ({d.url.split('@')[-1]})")


@app.command()
def serve(db: Optional[str] = DB_OPTION,
          host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8765, help="Port."),
          workers: int = typer.Option(1, "--workers", "-w", help="uvicorn worker processes."),
          migrate_first: bool = typer.Option(True, "--migrate/--no-migrate", help="Upgrade the schema first."),
          sqlite_sync: str = typer.Option("NORMAL", help="SQLite synchronous mode: NORMAL survives a killed server; "
                                                         "FULL also survives a power cut."),
          log_level: str = typer.Option("warning", help="uvicorn log level."),
          secure_cookies: bool = typer.Option(False, "--secure-cookies", "--behind-https",
                                              help="The app is reached over https only (e.g. behind a TLS proxy): "
                                                   "cookies always get the Secure flag, responses send HSTS."),
          forwarded_allow_ips: str = typer.Option("127.0.0.1", help="Proxies whose X-Forwarded-For/-Proto are "
                                                                   "trusted (comma-separated; the client address "
                                                                   "counts for login throttling).")) -> None:
    """Run the web app and API (http://HOST:PORT)."""
    import uvicorn

    from assay.platform.auth import hash_slots
    from assay.platform.db import Database

    def prepare() -> Database:
        d = Database(db, sqlite_sync=sqlite_sync)
        if migrate_first:
            d.ensure_schema()  # once, here, not racing in every worker
        return d
    d = _run(prepare)
    os.environ["ASSAY_ANNOTATE_DB"] = d.url
    os.environ["ASSAY_ANNOTATE_SQLITE_SYNC"] = sqlite_sync
    os.environ["ASSAY_ANNOTATE_SECURE_COOKIES"] = "1" if secure_cookies else "0"
    # the cores are shared by the workers: each verifies its share of passwords at a time
    os.environ.setdefault("ASSAY_ANNOTATE_HASH_SLOTS", str(max(1, hash_slots() // max(1, workers))))
    d.dispose()
    typer.echo(f"serving {d.url.split('@')[-1]} on http://{host}:{port} with {workers} worker(s)", err=True)
    uvicorn.run("assay.annotate.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False, proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips)


@app.command("create-user")
def create_user(username: str, role: str = typer.Option("annotator", help="admin, reviewer or annotator."),
                password_env: Optional[str] = typer.Option(None, help="Read the password from this environment "
                                                                      "variable instead of prompting."),
                db: Optional[str] = DB_OPTION) -> None:
    """Create a user (password asked twice, or taken from --password-env)."""
    from assay.platform import users as accounts

    password = _password(password_env, "Password")

    def go() -> None:
        with _db(db).write() as s:
            u = accounts.create_user(s, username, password, role)
            typer.echo(f"user {u.username} ({u.role}) id {u.id}")
    _run(go)


@app.command("set-password")
def set_password(username: str, password_env: Optional[str] = typer.Option(None, help="Read the password from this "
                                                                                       "environment variable."),
                 db: Optional[str] = DB_OPTION) -> None:
    """Change a user's password; the user's existing sessions end at once."""
    from assay.platform import users as accounts

    password = _password(password_env, "New password")

    def go() -> None:
        with _db(db).write() as s:
            accounts.set_password(s, username, password, actor="cli")
    _run(go)
    typer.echo(f"password of {username} changed; their sessions ended")


@app.command()
def deactivate(username: str, db: Optional[str] = DB_OPTION) -> None:
    """Offboard a user: they can no longer log in, their sessions end at once, the items they hold go back to the
    queue (their annotations stay)."""
    from assay.annotate import workflow

    def go() -> None:
        with _db(db).write() as s:
            workflow.set_active(s, username, False, actor="cli")
    _run(go)
    typer.echo(f"{username} deactivated; their sessions ended")


@app.command()
def reactivate(username: str, db: Optional[str] = DB_OPTION) -> None:
    """Let a deactivated user log in again."""
    from assay.annotate import workflow

    def go() -> None:
        with _db(db).write() as s:
            workflow.set_active(s, username, True, actor="cli")
    _run(go)
    typer.echo(f"{username} reactivated")


@app.command()
def unlock(username: str, db: Optional[str] = DB_OPTION) -> None:
    """End a login lockout (too many failed logins) before it runs out."""
    from assay.platform import auth
    from assay.platform import users as accounts

    def go() -> None:
        with _db(db).write() as s:
            accounts.find_user(s, username)
            auth.unlock(s, username, actor="cli")
    _run(go)
    typer.echo(f"{username} unlocked")


@app.command()
def audit(username: Optional[str] = typer.Option(None, "--user", help="Only events of this user (or by this admin)."),
          limit: int = typer.Option(50, help="How many events, newest first."),
          db: Optional[str] = DB_OPTION) -> None:
    """The security audit log: failed logins, lockouts, unlocks, deactivations, password changes (JSON lines)."""
    from assay.platform import auth

    def go() -> None:
        with _db(db).read() as s:
            for e in auth.recent_events(s, limit, username):
                typer.echo(json.dumps({"at": e.at, "kind": e.kind, "username": e.username, "ip": e.ip,
                                       "actor": e.actor}))
    _run(go)


@app.command("create-project")
def create_project(name: str,
                   task: str = typer.Option(..., "--task", help="sft, preference, rating, critique, image_edit, "
                                                                 "clip_rating, trajectory, dialogue, classify "
                                                                 "or spans."),
                   guidelines: Optional[str] = typer.Option(None, help="Guidelines text, or @FILE to read a file."),
                   overlap: int = typer.Option(1, help="Distinct annotators per item."),
                   gold_rate: float = typer.Option(0.0, help="Share of gold items mixed into each annotator's work."),
                   lease: int = typer.Option(1800, help="Seconds an item stays with an annotator before it returns "
                                                        "to the queue."),
                   review: bool = typer.Option(False, help="Annotations go through a review step."),
                   dimensions: Optional[str] = typer.Option(None, help="Rating rubric, comma-separated (default "
                                                                       "helpfulness,correctness,harmlessness)."),
                   scale: Optional[str] = typer.Option(None, help="Rating scale LOW-HIGH (default 1-5)."),
                   sides: Optional[str] = typer.Option(None, help="Preference A/B order: item (a coin flip per item, "
                                                                  "the default), assignment (a flip per annotator "
                                                                  "and item) or fixed."),
                   labels: Optional[str] = typer.Option(None, help="classify/spans: the labels, comma-separated "
                                                                   "(hotkeys 1-9 in order; --config for "
                                                                   "descriptions and own keys)."),
                   multi_label: bool = typer.Option(False, "--multi-label", help="classify: any number of labels "
                                                                                 "per text."),
                   config: Optional[str] = typer.Option(None, help="Extra task config as JSON."),
                   db: Optional[str] = DB_OPTION) -> None:
    """Create a project."""
    from assay.annotate import workflow

    text = guidelines or ""
    if text.startswith("@"):
        text = _run(lambda: Path(text[1:]).read_text(encoding="utf-8"))
    cfg = _run(lambda: json.loads(config)) if config else {}
    if not isinstance(cfg, dict):
        _fail("--config must be a JSON object")
    if dimensions:
        cfg["dimensions"] = [d.strip() for d in dimensions.split(",") if d.strip()]
    if scale:
        lo, _, hi = scale.partition("-")
        if not (lo.strip().isdigit() and hi.strip().isdigit()):
            _fail(f"--scale must look like 1-5, not {scale!r}")
        cfg["scale"] = [int(lo), int(hi)]
    if labels:
        cfg["labels"] = [x.strip() for x in labels.split(",") if x.strip()]
    if multi_label:
        cfg["multi_label"] = True
    if sides:
        if sides not in ("item", "assignment", "fixed"):
            _fail("--sides must be item, assignment or fixed")
        cfg["randomize_sides"] = {"item": True, "assignment": "assignment", "fixed": False}[sides]

    def go() -> None:
        with _db(db).write() as s:
            p = workflow.create_project(s, name, task, guidelines=text, config=cfg, overlap=overlap,
                                        gold_rate=gold_rate, lease_seconds=lease, review=review)
            typer.echo(f"project {p.name} ({p.task_type}, overlap {p.overlap}) id {p.id}")
    _run(go)


@app.command("add-member")
def add_member(project: str, username: str, role: str = typer.Option("annotator", help="annotator or reviewer."),
               db: Optional[str] = DB_OPTION) -> None:
    """Give a user access to a project."""
    from assay.annotate import workflow

    def go() -> None:
        with _db(db).write() as s:
            workflow.add_member(s, workflow.find_project(s, project), username, role)
    _run(go)
    typer.echo(f"{username} is {role} of {project}")


@app.command("import")
def import_(project: str, inputs: list[str] = typer.Argument(..., help="Pipeline output files, folders or globs."),
            gold: bool = typer.Option(False, help="These are gold items; answers in meta['gold']."),
            pair_by_caption: bool = typer.Option(False, "--pair-by-caption",
                                                 help="Preference: pair image-text records that share a caption "
                                                      "(several generations per prompt) into image pairs."),
            db: Optional[str] = DB_OPTION) -> None:
    """Import records (Assay JSONL/Parquet output, or plain JSONL) into a project."""
    from assay.annotate import workflow

    report = _run(lambda: workflow.import_records(_db(db), project, inputs, gold=gold, pair_images=pair_by_caption))
    typer.echo(f"imported {report.imported}, duplicates {report.duplicates}, skipped {sum(report.skipped.values())}"
               + (f" {report.skipped}" if report.skipped else "")
               + (f", input errors {report.input_errors}" if report.input_errors else ""))


@app.command()
def suggest(project: str,
            model: str = typer.Option("minilm", help="Embedding backend: minilm, minilm-onnx, or a "
                                                     "sentence-transformers folder (offline)."),
            overwrite: bool = typer.Option(False, help="Replace suggestions the items already have."),
            temperature: float = typer.Option(0.05, help="Softmax temperature over the cosine similarities."),
            db: Optional[str] = DB_OPTION) -> None:
    """Pre-annotate a classify project: zero-shot label scores (text vs. label descriptions, MiniLM embeddings)."""
    from assay.annotate.suggest import suggest as do_suggest

    res = _run(lambda: do_suggest(_db(db), project, model=model, overwrite=overwrite, temperature=temperature))
    typer.echo(f"suggested {res['suggested']} items, kept {res['kept']} that had suggestions")


@app.command()
def export(project: str,
           format: str = typer.Option(..., "--format", "-f", help="sft, dpo, ratings, critiques, edit, "
                                                                  "trajectory, dialogue, labels, spans or "
                                                                  "annotations."),
           output: Path = typer.Option(..., "--output", "-o", help="File: .jsonl, .jsonl.gz or .parquet."),
           accepted_only: bool = typer.Option(False, help="Only annotations a reviewer accepted."),
           include_gold: bool = typer.Option(False, help="Include gold items."),
           aggregate: str = typer.Option("majority", help="dpo: majority, dawid-skene, or none (a row per "
                                                           "annotation)."),
           min_votes: Optional[int] = typer.Option(None, help="dpo: only items with at least this many votes "
                                                             "(default: the project's overlap, i.e. complete items)."),
           layout: str = typer.Option("string", help="dpo: string (prompt/chosen/rejected as text) or "
                                                     "conversational (TRL's chat layout: lists of messages)."),
           db: Optional[str] = DB_OPTION) -> None:
    """Export annotations to a training format, with lineage."""
    from assay.annotate.export import export as do_export

    res = _run(lambda: do_export(_db(db), project, format, output, accepted_only=accepted_only,
                                 include_gold=include_gold, aggregate=aggregate, min_votes=min_votes, layout=layout))
    typer.echo(f"{res['rows']} rows -> {res['path']}" + (f" (left out: {res['left_out']})" if res["left_out"] else ""))


@app.command()
def stats(project: str, db: Optional[str] = DB_OPTION) -> None:
    """Print a project's progress and quality statistics as JSON."""
    from assay.annotate import workflow
    from assay.annotate.quality import project_quality

    def go() -> None:
        with _db(db).read() as s:
            p = workflow.find_project(s, project)
            out = {"progress": workflow.progress(s, p), **project_quality(s, p)}
            typer.echo(json.dumps(out, indent=1, default=str))
    _run(go)


if __name__ == "__main__":  # python -m assay.annotate.cli …
    app()

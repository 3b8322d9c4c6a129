"""``assay annotate …``: run the annotation server and manage it from the shell.

    assay annotate serve --db team.db --workers 2
    assay annotate create-user alice --role annotator          # asks for the password
    assay annotate create-project prefs --task preference --overlap 3 --gold-rate 0.1 --guidelines guide.md
    assay annotate create-project picks --task preference --sides assignment     # Pick-a-Pic image pairs
    assay annotate create-project edits --task image_edit                         # MagicBrush instructions + masks
    assay annotate create-project clips --task clip_rating --scale 1-5           # Movie Gen style clip rubric
    assay annotate add-member prefs alice
    assay annotate import prefs out/pairs/*.jsonl.gz [--gold]
    assay annotate export prefs --format dpo --output prefs.parquet
    assay annotate stats prefs

``--db`` takes a SQLite file (default ``assay-annotate.db`` or ``$ASSAY_ANNOTATE_DB``) or ``postgresql://…``.
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


def _db(url: str | None):  # noqa: ANN202
    from assay.annotate.db import Database

    return Database(url)


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _run(fn):  # noqa: ANN001, ANN202
    from assay.annotate.workflow import WorkflowError

    try:
        return fn()
    except WorkflowError as e:
        _fail(str(e))


@app.command()
def migrate(db: Optional[str] = DB_OPTION) -> None:
    """Create or upgrade the database schema."""
    from assay.annotate.db import current_revision

    d = _db(db)
    d.migrate()
    typer.echo(f"schema at revision {current_revision(d.write_engine)} ({d.url.split('@')[-1]})")


@app.command()
def serve(db: Optional[str] = DB_OPTION,
          host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8765, help="Port."),
          workers: int = typer.Option(1, "--workers", "-w", help="uvicorn worker processes."),
          migrate_first: bool = typer.Option(True, "--migrate/--no-migrate", help="Upgrade the schema first."),
          sqlite_sync: str = typer.Option("NORMAL", help="SQLite synchronous mode: NORMAL survives a killed server; "
                                                         "FULL also survives a power cut."),
          log_level: str = typer.Option("warning", help="uvicorn log level.")) -> None:
    """Run the web app and API (http://HOST:PORT)."""
    import uvicorn

    from assay.annotate.db import Database

    d = Database(db, sqlite_sync=sqlite_sync)
    if migrate_first:
        d.migrate()  # once, here, not racing in every worker
    os.environ["ASSAY_ANNOTATE_DB"] = d.url
    os.environ["ASSAY_ANNOTATE_SQLITE_SYNC"] = sqlite_sync
    d.dispose()
    typer.echo(f"serving {d.url.split('@')[-1]} on http://{host}:{port} with {workers} worker(s)", err=True)
    uvicorn.run("assay.annotate.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False)


@app.command("create-user")
def create_user(username: str, role: str = typer.Option("annotator", help="admin, reviewer or annotator."),
                password_env: Optional[str] = typer.Option(None, help="Read the password from this environment "
                                                                      "variable instead of prompting."),
                db: Optional[str] = DB_OPTION) -> None:
    """Create a user (password asked twice, or taken from --password-env)."""
    from assay.annotate import workflow

    password = os.environ.get(password_env, "") if password_env else typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    d = _db(db)

    def go() -> None:
        with d.write() as s:
            u = workflow.create_user(s, username, password, role)
            typer.echo(f"user {u.username} ({u.role}) id {u.id}")
    _run(go)


@app.command("set-password")
def set_password(username: str, password_env: Optional[str] = typer.Option(None), db: Optional[str] = DB_OPTION) -> None:
    """Change a user's password."""
    from assay.annotate import workflow

    password = os.environ.get(password_env, "") if password_env else typer.prompt(
        "New password", hide_input=True, confirmation_prompt=True)
    d = _db(db)

    def go() -> None:
        with d.write() as s:
            workflow.set_password(s, username, password)
    _run(go)
    typer.echo(f"password of {username} changed")


@app.command("create-project")
def create_project(name: str,
                   task: str = typer.Option(..., "--task", help="sft, preference, rating, critique, image_edit or "
                                                                 "clip_rating."),
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
                   config: Optional[str] = typer.Option(None, help="Extra task config as JSON."),
                   db: Optional[str] = DB_OPTION) -> None:
    """Create a project."""
    from assay.annotate import workflow

    text = guidelines or ""
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    cfg = json.loads(config) if config else {}
    if dimensions:
        cfg["dimensions"] = [d.strip() for d in dimensions.split(",") if d.strip()]
    if scale:
        lo, _, hi = scale.partition("-")
        cfg["scale"] = [int(lo), int(hi)]
    if sides:
        if sides not in ("item", "assignment", "fixed"):
            _fail("--sides must be item, assignment or fixed")
        cfg["randomize_sides"] = {"item": True, "assignment": "assignment", "fixed": False}[sides]
    d = _db(db)

    def go() -> None:
        with d.write() as s:
            p = workflow.create_project(s, name, task, guidelines=text, config=cfg, overlap=overlap,
                                        gold_rate=gold_rate, lease_seconds=lease, review=review)
            typer.echo(f"project {p.name} ({p.task_type}, overlap {p.overlap}) id {p.id}")
    _run(go)


@app.command("add-member")
def add_member(project: str, username: str, role: str = typer.Option("annotator", help="annotator or reviewer."),
               db: Optional[str] = DB_OPTION) -> None:
    """Give a user access to a project."""
    from assay.annotate import workflow

    d = _db(db)

    def go() -> None:
        with d.write() as s:
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

    d = _db(db)
    report = _run(lambda: workflow.import_records(d, project, inputs, gold=gold, pair_images=pair_by_caption))
    typer.echo(f"imported {report.imported}, duplicates {report.duplicates}, skipped {sum(report.skipped.values())}"
               + (f" {report.skipped}" if report.skipped else "")
               + (f", input errors {report.input_errors}" if report.input_errors else ""))


@app.command()
def export(project: str,
           format: str = typer.Option(..., "--format", "-f", help="sft, dpo, ratings, critiques, edit or "
                                                                  "annotations."),
           output: Path = typer.Option(..., "--output", "-o", help="File: .jsonl, .jsonl.gz or .parquet."),
           accepted_only: bool = typer.Option(False, help="Only annotations a reviewer accepted."),
           include_gold: bool = typer.Option(False, help="Include gold items."),
           aggregate: str = typer.Option("majority", help="dpo: majority, dawid-skene, or none (a row per "
                                                           "annotation)."),
           db: Optional[str] = DB_OPTION) -> None:
    """Export annotations to a training format, with lineage."""
    from assay.annotate.export import ExportError
    from assay.annotate.export import export as do_export

    try:
        res = _run(lambda: do_export(_db(db), project, format, output, accepted_only=accepted_only,
                                     include_gold=include_gold, aggregate=aggregate))
    except ExportError as e:
        _fail(str(e))
        return
    typer.echo(f"{res['rows']} rows -> {res['path']}" + (f" (left out: {res['left_out']})" if res["left_out"] else ""))


@app.command()
def stats(project: str, db: Optional[str] = DB_OPTION) -> None:
    """Print a project's progress and quality statistics as JSON."""
    from assay.annotate import workflow
    from assay.annotate.quality import project_quality

    d = _db(db)

    def go() -> None:
        with d.read() as s:
            p = workflow.find_project(s, project)
            out = {"progress": workflow.progress(s, p), **project_quality(s, p)}
            typer.echo(json.dumps(out, indent=1, default=str))
    _run(go)


if __name__ == "__main__":  # python -m assay.annotate.cli …
    app()

"""``assay superbrain``: aggregate expert dialogues into consensus and schools, distil them; the simulation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="SuperBrain: many experts' dialogues → consensus or school-labelled alternatives → SFT, "
                       "preference pairs and knowledge patches.", no_args_is_help=True)
console = Console(stderr=True)
out = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
    raise typer.Exit(2)


def _read_json_map(path: Optional[Path], what: str) -> dict:
    if path is None:
        return {}
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return {str(r.get("question_id") or r.get("record_id")): str(r["answer"]) for r in rows}
        return json.loads(path.read_text())
    except (OSError, ValueError, KeyError, AttributeError) as e:
        _fail(f"{path}: cannot read the {what}: {e}")
    return {}


@app.command()
def aggregate(
    transcripts: list[Path] = typer.Argument(..., help="JSONL files of the annotation app's dialogue export."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for decisions, reliability, schools, SFT, pairs."),
    gold: Optional[Path] = typer.Option(None, help="Known answers: JSONL {question_id, answer} or JSON {id: answer}."),
    synonyms: Optional[Path] = typer.Option(None, help="JSON {domain: {word: canonical word}} for normalisation."),
    embedder: str = typer.Option("minilm", help="minilm (the bundled all-MiniLM-L6-v2) or hashed (no model)."),
    same: float = typer.Option(0.8, help="Cosine similarity from which two answers are the same claim."),
    extract: bool = typer.Option(False, "--extract/--no-extract",
                                 help="LLM claim extraction (checked; else sentences)."),
    judge: bool = typer.Option(False, "--judge/--no-judge", help="LLM judge for answers in the grey similarity band."),
    backend: Optional[str] = typer.Option(None, help="Backend for --extract/--judge as JSON (default: local SmolLM2)."),
    db: Optional[str] = typer.Option(None, "--db", help="Annotation database: reputation priors and --propose."),
    propose_as: Optional[str] = typer.Option(None, "--propose-as", help="Propose knowledge patches as this user."),
) -> None:
    """Aggregate expert dialogues: reliability per expert and domain, consensus or schools per question, and the
    distilled SFT rows and preference pairs (optionally knowledge patches into the review workflow)."""
    from assay.core.errors import AssayError
    from assay.evolve.superbrain import distill, pipeline
    from assay.evolve.superbrain.signatures import read_rows

    missing = [str(p) for p in transcripts if not p.is_file()]
    if missing:
        _fail(f"no such file: {', '.join(missing)}")
    if propose_as and not db:
        _fail("--propose-as needs --db (the annotation database that holds the knowledge store)")
    try:
        rows = read_rows([str(p) for p in transcripts])
    except (OSError, ValueError) as e:
        _fail(f"cannot read the transcripts: {e}")
    if not rows:
        _fail("the transcript files hold no rows")
    gold_map = _read_json_map(gold, "gold answers")
    syn = _read_json_map(synonyms, "synonyms")
    llm = None
    try:
        if extract or judge:
            from assay.models.llm import BackendConfig, shared_backend

            llm = shared_backend(BackendConfig(**(json.loads(backend) if backend else {})))
        database = prior = None
        if db:
            from assay.evolve.superbrain.aggregate import reputation_prior
            from assay.platform.db import Database

            database = Database(db)
            domains = {str((r.get("domain") or "general")).lower() for r in rows}
            prior = reputation_prior(database, domains, {str(r.get("annotator")) for r in rows})
        with console.status("aggregating"):
            result = pipeline.run(rows, embed=pipeline.embedder_for(embedder), gold=gold_map, synonyms=syn, llm=llm,
                                  extract=extract, judge=judge, prior=prior, same=same)
            counts = pipeline.write(result, output)
            if propose_as:
                from assay.knowledge.store import KnowledgeStore

                patches = distill.propose_patches(KnowledgeStore(database), result.aggregation, result.clustering,
                                                  result.signatures, propose_as, result.stats)
                counts["patches proposed"] = len(patches)
    except (AssayError, ValueError) as e:
        _fail(str(e))
    t = Table(title=f"SuperBrain: {result.stats['transcripts']} transcripts → {output}")
    t.add_column("what")
    t.add_column("n", justify="right")
    for k in ("consensus", "contested", "uncertain", "gold"):
        t.add_row(f"questions {k}", str(result.stats.get(f"questions_{k}", 0)))
    for name, n in counts.items():
        t.add_row(name, str(n))
    out.print(t)
    for dom, schools in sorted(result.aggregation.schools.items()):
        for name, members in schools.items():
            out.print(f"{name}: {', '.join(members)}")


@app.command()
def simulate(
    seeds: int = typer.Option(3, help="Simulated worlds per setting."),
    experts: int = typer.Option(20, help="Experts."),
    questions: int = typer.Option(60, help="Questions per domain (gold included)."),
) -> None:
    """The proof by simulation: majority vote, reputation-weighted vote and Assay's method against the truth."""
    from assay.evolve.superbrain.simulate import SimConfig, table

    rows = table([SimConfig(experts=experts, questions=questions, reliability=r, seed=s)
                  for r in ("mixed", "equal") for s in range(seeds)])
    t = Table(title="SuperBrain simulation (mean over worlds)")
    for col in ("setting", "method", "factual accuracy", "schools presented", "false contests", "school ARI"):
        t.add_column(col, justify="left" if col in ("setting", "method") else "right")
    for r in rows:
        t.add_row(r["setting"], r["method"], f"{r['factual_accuracy']:.3f}", f"{r['schools_presented']:.3f}",
                  f"{r['false_contests']:.3f}", "-" if r["school_ari"] is None else f"{r['school_ari']:.3f}")
    out.print(t)

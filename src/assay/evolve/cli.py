"""``assay evolve …``: run the closed loop, report on it, measure collapse, check the sandbox."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from assay.core.errors import AssayError

app = typer.Typer(help="The human-machine loop: critique, execution feedback, judges, active learning, collapse.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console(stderr=True)


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)  # one line, whatever the width
    raise typer.Exit(2)


@app.command()
def loop(
    recipe: Path = typer.Argument(..., help="Loop recipe (YAML): anchor, synthesize, verify, route, mix, measure."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (resumed if it holds this loop)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", "-n", help="Run this many rounds (default: the recipe's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete what is in --output and start afresh."),
) -> None:
    """Synthesize → verify → route uncertain items to people → merge → measure, for N rounds; resumable."""
    from assay.evolve.loop import run_loop

    try:
        summary = run_loop(recipe, output, rounds, overwrite, log=lambda m: console.print(f"[dim]{m}[/]"))
    except AssayError as e:
        _fail(str(e))
        return
    _print_rounds(summary)
    console.print(f"output: [bold]{output}[/] · report: [bold]{output / 'report.html'}[/]")


def _print_rounds(summary: dict) -> None:
    t = Table(title=f"{summary['name']}: {len(summary['rounds'])} round(s)")
    for col in ("round", "synthesized", "verified", "routed", "labels", "human share", "distinct-2", "self-BLEU",
                "Vendi", "tail recall", "coverage"):
        t.add_column(col, justify="right", overflow="fold")  # a narrow terminal wraps figures, never elides them
    for r in summary["rounds"]:
        m = r.get("metrics") or {}

        def f(key: str) -> str:
            v = m.get(key)
            return "–" if v is None else f"{v:.3f}"

        t.add_row(str(r["round"]), str((r.get("synthesize") or {}).get("records", "–")),
                  str((r.get("verify") or {}).get("records", "–")), str((r.get("route") or {}).get("routed", "–")),
                  str((r.get("merge") or {}).get("labels", "–")),
                  f"{(r.get('merge') or {}).get('human_fraction', 0):.2f}", f("synthetic.distinct_2"),
                  f("synthetic.self_bleu"), f("synthetic.vendi"), f("tail_recall"), f("embedding_coverage"))
    if console.is_terminal:
        console.print(t)
        return
    # written to a file or a pipe (80 columns by default), the table gets the width it needs
    needed = console.measure(t, options=console.options.update_width(10_000)).maximum
    Console(file=console.file, width=max(console.width, needed)).print(t)


@app.command()
def report(output: Path = typer.Argument(..., help="An evolve loop's output folder.")) -> None:
    """Write report.html (per-round funnel, labels, collapse metrics with charts) for a loop's output folder."""
    from assay.evolve.report import write_report

    try:
        path = write_report(output)
    except AssayError as e:
        _fail(str(e))
        return
    console.print(f"report: [bold]{path}[/]")


@app.command()
def metrics(
    synthetic: list[str] = typer.Argument(..., help="Synthetic data files (JSONL, Parquet)."),
    anchor: list[str] = typer.Option(..., "--anchor", "-a", help="Human anchor data files (repeatable)."),
    text_key: Optional[str] = typer.Option(None, "--text-key", help="Text field of foreign JSON (default: whole object)."),
    embedder: str = typer.Option("minilm", "--embedder", help="minilm, hashed or none."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    bootstrap: int = typer.Option(100, "--bootstrap", "-b", help="Same-size anchor subsamples to compare with."),
    z: float = typer.Option(3.0, "--z", help="Collapse: bootstrap standard deviations beyond the anchor's mean…"),
    min_change: float = typer.Option(0.10, "--min-change", help="…and at least this relative change from it."),
    min_metrics: int = typer.Option(2, "--min-metrics", help="Flag collapse when this many metrics cross."),
    fail_on_collapse: bool = typer.Option(False, "--fail-on-collapse", help="Exit with status 1 when a metric "
                                                                            "flags collapse."),
) -> None:
    """Collapse metrics of a synthetic set against a human anchor set, compared with same-size anchor subsamples."""
    from assay.core.errors import ErrorLog
    from assay.evolve.collapse import CollapseThresholds, collapse_metrics
    from assay.evolve.loop import text_of
    from assay.io.sources import plan_shards, read_shard

    def texts(paths: list[str]) -> list[str]:
        errors = ErrorLog()
        out = []
        try:
            shards = plan_shards(paths, "auto", 0)
        except (FileNotFoundError, ValueError) as e:
            _fail(str(e))
        for shard in shards:
            out.extend(text_of(r) for r in read_shard(shard, errors, text_key=text_key))
        return out

    emb = None
    if embedder != "none":
        from assay.models.embeddings import get_backend

        emb = get_backend(embedder, dim=4096) if embedder == "hashed" else get_backend(embedder)
    result = collapse_metrics(texts(synthetic), texts(anchor), emb, n_boot=bootstrap,
                              thresholds=CollapseThresholds(z=z, min_change=min_change,
                                                                   min_metrics=min_metrics))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        _print_collapse(result)
    if fail_on_collapse and result["collapse"]:
        raise typer.Exit(1)


def _print_collapse(result: dict) -> None:
    t = Table(title="collapse metrics (whole sets)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in result.items():
        if not isinstance(v, dict):
            t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(t)
    sm = result["size_matched"]
    t = Table(title=f"against {sm['n_boot']} anchor subsamples of the same size ({sm['size']} texts)")
    for col in ("metric", "synthetic", "anchor mean", "anchor 95%", "z", "change", "collapsed"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in sm["metrics"].items():
        t.add_row(name, f"{m['synthetic']:.4f}", f"{m['anchor_mean']:.4f}",
                  f"[{m['anchor_lo']:.4f}, {m['anchor_hi']:.4f}]", f"{m['z']:+.1f}", f"{m['change']:+.1%}",
                  "[bold red]yes[/]" if m["collapsed"] else "no")
    console.print(t)
    if sm["flagged"] is None:
        console.print(f"collapse: not judged ({sm['note']})")
    else:
        console.print("collapse: [bold red]FLAGGED[/] by " + ", ".join(sm["collapsed_metrics"]) if sm["flagged"]
                      else "collapse: not flagged (every metric within the thresholds of same-size anchor subsamples)")


@app.command("sandbox-check")
def sandbox_check(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Run the sandbox escape attempts (network, writes, home, fork bomb, 4 GB, loop, 1 GB output, root powers, host
    environment with a canary secret, /proc/1/cmdline, /dev writes, memory outside the limit) and say how memory is
    limited here (cgroup v2 or RLIMIT_AS)."""
    from assay.evolve.escapes import ESCAPE_LIMITS, run_escape_suite
    from assay.evolve.sandbox import Sandbox, SandboxError

    sb = Sandbox(ESCAPE_LIMITS)
    try:
        results = run_escape_suite(sb)
    except SandboxError as e:
        _fail(str(e))
        return
    if as_json:
        sys.stdout.write(json.dumps({"sandbox": sb.describe(), "attacks": [r.to_dict() for r in results]},
                                    indent=2) + "\n")
    else:
        t = Table(title="sandbox escape attempts")
        for col in ("attack", "contained", "status", "s", "evidence"):
            t.add_column(col)
        for r in results:
            t.add_row(r.name, "[green]yes[/]" if r.contained else "[bold red]NO[/]", r.status, f"{r.seconds:.2f}",
                      r.evidence)
        console.print(t)
        console.print(f"memory limit: {sb.memory.note}")
    if not all(r.contained for r in results):
        raise typer.Exit(1)

"""``assay flywheel``: run the closed loop through all four stages, and show it.

    assay flywheel run recipes/flywheel.yaml -o out/flywheel      # resumable: rerun the same command after a kill
    assay flywheel report out/flywheel                            # out/flywheel/report.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="One closed loop through harvest, annotation, synthesis and evolution, measured by the lab.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Flywheel recipe (YAML), e.g. recipes/flywheel.yaml."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (resumed if it holds this flywheel)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", "-n", help="Run this many rounds (default: the recipe's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous flywheel run in --output."),
) -> None:
    """Run (or resume) the loop: harvest → route to people → retrain the classifier → synthesize → verify → people
    review → mix → knowledge patches → the lab's quality ladder, round after round."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from assay.core.errors import AssayError
    from assay.flywheel.loop import PHASES, Flywheel, WaitingForPeople
    from assay.flywheel.recipe import FlywheelRecipe

    try:
        rec, base = FlywheelRecipe.from_yaml(recipe)
    except AssayError as e:
        _fail(str(e))
        return
    total = (rounds or rec.rounds) * len(PHASES) + 2
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("flywheel", total=total)

        def log(msg: str) -> None:
            if msg.startswith(("round ", "reference: ")) and ": lab: place" not in msg:
                progress.advance(task)
                progress.update(task, description=escape(msg))
            console.print(f"[dim]{escape(msg)}[/]")

        try:
            summary = Flywheel(rec, output, base, log).run(rounds, overwrite)
        except WaitingForPeople as e:
            console.print(f"[bold yellow]waiting:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(3) from None
        except (AssayError, ValueError, RuntimeError) as e:
            _fail(str(e))
            return
    _print_rounds(summary)
    console.print(f"output: [bold]{escape(str(output))}[/] · report: [bold]{escape(str(output / 'report.html'))}[/]")


def _print_rounds(summary: dict) -> None:
    table = Table(title=f"flywheel {summary['name']}")
    for col in ("round", "harvested", "labels", "accuracy", "synthetic", "mix", "Q mix [95% CI]", "patches"):
        table.add_column(col, justify="right")
    for r in summary["rounds"]:
        tr = r.get("train") or {}
        acc = tr.get("accuracy")
        q = (r.get("lab_placements") or {}).get("mix") or {}
        q_txt = "—"
        if q.get("placed") and q.get("Q") is not None:
            lo, hi = q.get("Q_ci") or [None, None]
            q_txt = f"{q['Q']:.3g} [{lo if lo is None else f'{lo:.3g}'}, {hi if hi is None else f'{hi:.3g}'}]"
        table.add_row(str(r["round"]), str((r.get("harvest") or {}).get("records", "—")),
                      str((r.get("label") or {}).get("items", 0) + (r.get("review") or {}).get("items", 0)),
                      "—" if acc is None else f"{acc:.3f}", str((r.get("verify") or {}).get("records", "—")),
                      str((r.get("mix") or {}).get("records", "—")), q_txt,
                      str((r.get("knowledge") or {}).get("patches", 0)))
    Console().print(table)


@app.command()
def report(
    output: Path = typer.Argument(..., help="A flywheel output folder."),
) -> None:
    """Write OUTPUT/report.html: the rounds, the worth of each stage, and any output record's lineage."""
    from assay.core.errors import AssayError
    from assay.flywheel.report import write_report

    if not output.is_dir():
        _fail(f"{output} is not a folder")
    try:
        path = write_report(output, refresh=True)
    except AssayError as e:
        _fail(str(e))
        return
    console.print(f"report: [bold]{escape(str(path))}[/]")


if __name__ == "__main__":
    app()

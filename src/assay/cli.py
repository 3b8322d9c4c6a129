"""The ``assay`` command line."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from assay.core.errors import AssayError, ErrorLog
from assay.core.record import Record

app = typer.Typer(help="Assay: a data engine for foundation models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console(stderr=True)  # progress, summaries, errors
out = Console()  # what a command is asked to print (lists, records)


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
    raise typer.Exit(2)


def version() -> str:
    """The installed distribution's version (the source tree's ``assay.__version__`` when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("assay")
    except PackageNotFoundError:
        from assay import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        out.print(f"assay {version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                        help="Print Assay's version and exit.")) -> None:
    """Assay: a data engine for foundation models."""


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    input: list[str] = typer.Option([], "--input", "-i", help="Input files, folders or globs (repeatable)."),
    output: str = typer.Option(..., "--output", "-o", help="Output folder (local path or fsspec URI)."),
    workers: int = typer.Option(max(1, (os.cpu_count() or 1)), "--workers", "-w", help="Worker processes."),
    executor: str = typer.Option("local", "--executor", "-e", help="local or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)."),
    ray_env: list[str] = typer.Option([], "--ray-env", help="Environment variable of this shell to pass to the Ray "
                                      "tasks, e.g. AWS_ACCESS_KEY_ID (repeatable; comma-separated names too)."),
    ray_reduce: Optional[str] = typer.Option(None, "--ray-reduce-resources", help="What the Ray task of a global "
                                             "step's reduce needs, e.g. 'big_memory=1' (a custom resource of one node: "
                                             "pins the reduce there), 'num_cpus=4', 'memory=32G'; comma-separated."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="Where global steps (dedup) keep their state "
                                            "(local path or fsspec URI every worker sees; default OUT/.assay/state)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --output."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html when done."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Read only the first N input records (to tune a "
                                        "recipe on a small part first)."),
    sample: Optional[float] = typer.Option(None, "--sample", help="Read a FRACTION of the input records, chosen by "
                                           "a hash of their id (the same records on every rerun)."),
    seed: int = typer.Option(0, "--seed", help="Seed of --sample."),
    analyze: bool = typer.Option(False, "--analyze", help="Filters and dedup only flag (action: flag): nothing is "
                                 "dropped, and the data card shows what each step would drop."),
) -> None:
    """Run RECIPE over the input; resumes an interrupted run in the same --output folder."""
    from assay.core.recipe import Recipe
    from assay.run.executor import make_executor
    from assay.run.progress import DEFAULT_INTERVAL, progress_display
    from assay.run.tuning import Tuning

    if workers < 1:
        _fail(f"--workers must be at least 1 (got {workers})")
    try:
        interval = float(os.environ.get("ASSAY_PROGRESS_SECONDS", DEFAULT_INTERVAL))
    except ValueError:
        interval = DEFAULT_INTERVAL
    try:
        tuning = Tuning(limit=limit, sample=sample, seed=seed, analyze=analyze)
        r = Recipe.from_yaml(recipe)
        names = [n.strip() for v in ray_env for n in v.split(",") if n.strip()]
        if ray_reduce and executor != "ray":
            raise AssayError("--ray-reduce-resources is for the Ray executor (-e ray)")
        ex = make_executor(executor, workers, ray_address, names, reduce_resources=ray_reduce)
        with progress_display(console, interval, ex.records_read) as progress:
            stats = ex.run(r, input, output, overwrite=overwrite, progress=progress, state_dir=state_dir,
                           tuning=tuning, notify=lambda note: console.print(f"note: {escape(note)}", soft_wrap=True))
    except AssayError as e:
        _fail(str(e))
        return
    _print_summary(stats)
    if stats.get("tuning"):
        from assay.run.tuning import describe

        console.print(describe(stats["tuning"]), soft_wrap=True)
    console.print(f"output: [bold]{escape(output)}[/] ({stats['output']['records']:,} records in "
                  f"{len(stats['output']['files'])} files in data/; rejected/: {stats['output']['rejected']:,}; "
                  f"stats.json)")
    if report:
        from assay.run.report import write_report

        path = write_report(output)
        console.print(f"report: [bold]{escape(path)}[/]")


def _print_summary(stats: dict) -> None:
    t = Table(title=f"{stats['recipe']} — {stats['input']['records_read']:,} records read in {stats['seconds']} s")
    for col in ("step", "in", "out", "dropped", "top drop reasons", "s"):
        t.add_column(col, justify="right" if col in ("in", "out", "dropped", "s") else "left")
    for s in stats["steps"]:
        reasons = ", ".join(f"{k} {v}" for k, v in list(s["drops"].items())[:3])
        t.add_row(s["name"], f"{s['records_in']:,}", f"{s['records_out']:,}", f"{s['dropped']:,}", reasons,
                  f"{s['seconds']:.2f}")
    console.print(t)
    if stats["errors"]:
        console.print("skipped input (see errors.jsonl): " + ", ".join(f"{k} {v}" for k, v in stats["errors"].items()))


@app.command()
def steps(name: Optional[str] = typer.Argument(None, help="Show one step's parameters.")) -> None:
    """List the registered steps and their parameters."""
    from assay.core.step import REGISTRY

    names = REGISTRY.names()
    if name:
        try:
            cls = REGISTRY.get(name)
        except KeyError as e:
            _fail(e.args[0])
            return
        out.print(f"[bold]{cls.name}[/] v{cls.version} — {escape(cls.describe())}")
        t = Table()
        for col in ("parameter", "type", "default", "description"):
            t.add_column(col)
        for pname, field in cls.Params.model_fields.items():
            ann = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            t.add_row(pname, escape(ann), escape(default), escape(field.description or ""))
        out.print(t)
        return
    t = Table(title=f"{len(names)} steps")
    for col in ("step", "kind", "module", "description"):
        t.add_column(col)
    from assay.core.step import Filter, GlobalStep

    for n in names:
        cls = REGISTRY.get(n)
        kind = "global" if issubclass(cls, GlobalStep) else "filter" if issubclass(cls, Filter) else "step"
        t.add_row(n, kind, cls.__module__.removeprefix("assay."), escape(cls.describe()))
    out.print(t)
    for mod, why in REGISTRY.unavailable.items():
        console.print(f"[yellow]not loaded:[/] {escape(mod)}: {escape(str(why))}")


def _is_folder(path: str) -> bool:
    """A local folder or a folder (prefix) on object storage."""
    from assay.io.folder import Folder

    if "://" not in path:
        return os.path.isdir(path)
    try:
        folder = Folder(path)
        return bool(folder.fs.isdir(folder.root))
    except (AssayError, OSError):
        return False


@app.command()
def inspect(
    path: str = typer.Argument(..., help="A data file (JSONL, Parquet, WARC) or a run folder."),
    n: int = typer.Option(5, "-n", help="How many records to show."),
    full: bool = typer.Option(False, "--full", help="Show whole records as JSON."),
    rejected: bool = typer.Option(False, "--rejected", help="Show a run folder's rejected records instead."),
    step: Optional[str] = typer.Option(None, "--step", help="With --rejected: only those dropped by this step."),
    reason: Optional[str] = typer.Option(None, "--reason", help="With --rejected: only those dropped for this "
                                         "reason."),
) -> None:
    """Peek at the first records of a file or run folder (or at its rejected records, by step and reason)."""
    if n < 1:
        _fail(f"-n must be at least 1 (got {n})")
    if (step or reason) and not rejected:
        _fail("--step and --reason choose among rejected records: add --rejected")
    errors = ErrorLog()
    if rejected:
        _inspect_rejected(path, n, full, step, reason, errors)
    else:
        _inspect_records(path, n, full, errors)
    if errors:
        console.print(f"[yellow]skipped while reading:[/] {dict(errors.counts)}")


def _inspect_records(path: str, n: int, full: bool, errors: ErrorLog) -> None:
    from assay.io.sources import plan_shards, read_shard

    p = path
    if _is_folder(p):
        from assay.run.executor import output_files

        files = output_files(p)
        if not files:
            _fail(f"no output files in {p}")
        p = files[0]
    try:
        shards = plan_shards([p], "auto", 0)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    shown = 0
    for shard in shards:
        for r in read_shard(shard, errors, text_key="text"):
            _show_record(r, full)
            shown += 1
            if shown >= n:
                break
        if shown >= n:
            break


def _show_record(r: Record, full: bool) -> None:
    if full:
        sys.stdout.write(r.to_json().decode() + "\n")
        return
    out.rule(f"{r.id} · {r.modality}")
    if r.drop:
        out.print(f"dropped by {r.drop[0]}: {r.drop[1]}", markup=False)
    out.print(f"meta: {dict(list(r.meta.items())[:8])}", markup=False)
    if r.signals:
        out.print(f"signals: {r.signals}", markup=False)
    if r.lineage:
        out.print("lineage: " + " → ".join(f"{e.step}@{e.version}" for e in r.lineage))
    out.print(r.text[:600] + ("…" if len(r.text) > 600 else ""), markup=False, highlight=False)


def _inspect_rejected(path: str, n: int, full: bool, step: Optional[str], reason: Optional[str],
                      errors: ErrorLog) -> None:
    """The rejected records of the run folder ``path`` dropped by ``step`` for ``reason`` (either may be None)."""
    from collections import Counter

    from assay.io.sources import plan_shards, read_shard
    from assay.run.layout import rejected_files

    if not _is_folder(path):
        _fail(f"--rejected needs a run folder; {path} is not one")
    files = rejected_files(path)
    if not files:
        _fail(f"no rejected records in {path}")
    seen: Counter = Counter()
    shown = 0
    for shard in plan_shards(files, "auto", 0):
        for r in read_shard(shard, errors, text_key="text"):
            if r.drop is None:
                continue
            seen[r.drop] += 1
            if (step is None or r.drop[0] == step) and (reason is None or r.drop[1] == reason):
                _show_record(r, full)
                shown += 1
                if shown >= n:
                    return
    if not shown:
        wanted = " and ".join(f"{k} {v!r}" for k, v in (("step", step), ("reason", reason)) if v is not None)
        pairs = ", ".join(f"{s}/{why} ({c})" for (s, why), c in sorted(seen.items()))
        _fail(f"no rejected record with {wanted} in {path}; the run's step/reason pairs: {pairs or 'none'}")


@app.command()
def report(run_dir: str = typer.Argument(..., help="A run's output folder.")) -> None:
    """Write a self-contained HTML data card (report.html) for a finished run."""
    from assay.run.report import write_report

    try:
        path = write_report(run_dir)
    except AssayError as e:
        _fail(str(e))
        return
    console.print(f"report: [bold]{escape(path)}[/]")


@app.command()
def pack(
    run_dir: str = typer.Argument(..., help="A finished run's output folder (its kept records are packed)."),
    out_dir: str = typer.Argument(..., help="The folder to write the token files and pack.json into."),
    tokenizer: str = typer.Option(..., "--tokenizer", "-t",
                                  help="smollm2 | minilm | a tokenizer.json (or its folder) | a .gguf file."),
    fmt: str = typer.Option("hf", "--format", "-f", help="hf (Parquet rows of seq-len tokens) | megatron (.bin/.idx)."),
    seq_len: int = typer.Option(2048, "--seq-len", help="hf: tokens per row."),
    tail: str = typer.Option("drop", "--tail", help="hf: the last partial row: drop | pad (masked)."),
    position_ids: bool = typer.Option(False, "--position-ids", help="hf: add positions restarting at each document."),
    eos: Optional[str] = typer.Option(None, "--eos", help="The end-of-document token (default: the tokenizer's)."),
    workers: int = typer.Option(1, "-w", "--workers", help="Tokenizing processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier pack in OUT_DIR."),
) -> None:
    """Tokenize a run's kept records into training files (Megatron-LM .bin/.idx or packed Parquet)."""
    from assay.lab.pack import PackOptions
    from assay.lab.pack import pack as run_pack
    from assay.run.progress import progress_display

    opts = PackOptions(tokenizer=tokenizer, format=fmt, seq_len=seq_len, eos=eos, tail=tail,
                       position_ids=position_ids, workers=max(1, workers), overwrite=overwrite)
    try:
        with progress_display(console) as progress:
            stats = run_pack(run_dir, out_dir, opts, progress=progress)
    except AssayError as e:
        _fail(str(e))
        return
    skipped = ", ".join(f"{k} {v}" for k, v in stats["skipped"].items()) or "none"
    console.print(f"packed {stats['documents']:,} documents, {stats['tokens']:,} tokens "
                  f"({stats['tokens_per_second'] or 0:,.0f}/s) into {stats['sequences']:,} sequences; "
                  f"padding {stats['padding_tokens']:,}, dropped {stats['dropped_tokens']:,} tokens; "
                  f"skipped: {skipped}", markup=False)
    console.print(f"output: {out_dir} (stats: {os.path.join(out_dir, 'pack.json')})", markup=False)


@app.command()
def push(
    source: str = typer.Argument(..., help="A finished run folder (assay run) or an annotation export file/folder."),
    repo_id: str = typer.Argument(..., help="The dataset repo: namespace/name (or name, under the token's user)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private (an existing repo keeps its "
                                                          "visibility)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="HF_TOKEN", show_envvar=True,
                                        help="A Hub token with write access (default: HF_TOKEN, then `hf auth "
                                             "login`'s)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", envvar="HF_ENDPOINT", show_envvar=True,
                                           help="The Hub's URL (default https://huggingface.co)."),
    include_rejected: bool = typer.Option(False, "--include-rejected",
                                          help="Also push rejected/, as the repo's 'rejected' config."),
    revision: Optional[str] = typer.Option(None, "--revision", help="An existing branch to commit to (default main)."),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="The commit message."),
    license: Optional[str] = typer.Option(None, "--license", help="The card's license (a Hub license id, e.g. "
                                                                  "apache-2.0, cc-by-4.0)."),
    force: bool = typer.Option(False, "--force", help="Push a run that has not finished."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the files that would go up and the card; send "
                                                          "nothing (no token needed)."),
) -> None:
    """Publish a run or an annotation export as a Hugging Face Hub dataset, with a dataset card."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from assay.run.push import plan
    from assay.run.push import push as do_push

    if dry_run:
        try:
            upload = plan(source, include_rejected=include_rejected, license=license, force=force)
        except AssayError as e:
            _fail(str(e))
            return
        out.print(f"would push {upload.kind} ({upload.records:,} records) to {repo_id}:", markup=False)
        for local, path_in_repo in upload.files:
            out.print(f"  {path_in_repo}  {local.stat().st_size:,} bytes", markup=False, highlight=False)
        readme = upload.card(repo_id)
        out.print(f"  README.md  {len(readme.encode()):,} bytes:\n", markup=False, highlight=False)
        out.print(readme, markup=False, highlight=False, soft_wrap=True)
        return
    bar = Progress(TextColumn("uploading"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                   console=console, transient=True, disable=not console.is_terminal)
    task = bar.add_task("upload", total=None)
    try:
        with bar:
            res = do_push(source, repo_id, token=token, endpoint=endpoint, private=private,
                          include_rejected=include_rejected, revision=revision, message=message, license=license,
                          force=force, progress=lambda done, total: bar.update(task, completed=done, total=total))
    except AssayError as e:
        _fail(str(e))
        return
    removed = f", removed {res.deleted} files of an earlier push" if res.deleted else ""
    console.print(f"pushed {res.kind} ({res.records:,} records, {res.files} files{removed}) to {res.repo_id}: "
                  f"{res.commit_url}", markup=False, soft_wrap=True)


# sub-commands owned by the stage packages; each module exposes a Typer app
_SUBAPPS = {
    "quality": ("assay.harvest.quality_cli", "Train and apply model-based quality classifiers."),
    "annotate": ("assay.annotate.cli", "The annotation web app: users, projects, tasks, agreement, exports."),
    "evolve": ("assay.evolve.cli", "The human-machine loop: critique, execution feedback, judges, active learning, "
                                   "collapse."),
    "lab": ("assay.lab.cli", "Scaling-law fits and tiny-LM ablations that put a number on data quality."),
    "knowledge": ("assay.knowledge.cli", "Signed, versioned knowledge patches: publish, review, search, serve over REST "
                                         "and MCP; the expert network and its rewards."),
    "flywheel": ("assay.flywheel.cli", "One closed loop through all four stages, round by round, measured by the lab; "
                                       "its report with every record's lineage."),
    "trajectories": ("assay.trajectories.cli", "Robot trajectories: LeRobot dataset summaries and co-training "
                                               "mixes (curation: assay run recipes/robot-demos.yaml)."),
    "superbrain": ("assay.evolve.superbrain.cli", "Many experts, one mind: expert dialogues aggregated into consensus "
                                                  "or school-labelled alternatives, distilled into SFT, pairs, patches."),
}
for _name, (_module, _help) in _SUBAPPS.items():
    try:
        _sub = importlib.import_module(_module).app
    except ModuleNotFoundError as _e:
        if _e.name and _module.startswith(_e.name):
            continue
        raise
    app.add_typer(_sub, name=_name, help=_help)
    if _module == "assay.knowledge.cli":  # the expert network (assay.experts) builds on annotate and knowledge;
        importlib.import_module("assay.experts.cli").register(_sub)  # its commands sit under `assay knowledge`


def main() -> None:
    app()


if __name__ == "__main__":
    main()

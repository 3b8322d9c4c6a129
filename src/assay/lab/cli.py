"""``assay lab``: fit scaling laws, run tiny-LM ablations, estimate data quality Q, simulate collapse, report.

Every command writes JSON results (with a ``kind``) and PNG figures into ``--out``; ``assay lab report`` turns a
folder of them into one HTML page. Heavy imports (torch, scipy, matplotlib) happen inside the commands.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Optional

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Scaling-law fits and tiny-LM ablations that put a number on data quality.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)  # one line, whatever the terminal width
    raise typer.Exit(2)


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(path)
    return path


def _write_png(path: Path, png: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def _named(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` or a bare path (named after the file or folder)."""
    if "=" in spec:
        name, path = spec.split("=", 1)
        if name and "/" not in name:
            return name, path
    return Path(spec.rstrip("/")).name.split(".")[0] or spec, spec


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        _fail(f"expected comma-separated numbers, got {text!r}")
        return []


def _say(msg: str) -> None:
    console.print(msg, highlight=False)


# ---------------------------------------------------------------------------------------------------------------
# fit


@app.command()
def fit(
    runs_csv: Path = typer.Argument(..., help="CSV of runs: columns N, D, loss (and Q for quality, U for "
                                              "data-constrained: unique tokens)."),
    law: str = typer.Option("chinchilla", "--law", "-l", help="chinchilla, quality or data-constrained."),
    bootstrap: int = typer.Option(200, "--bootstrap", "-b", help="Bootstrap refits for the confidence intervals."),
    budget: list[float] = typer.Option([], "--budget", help="FLOP budget(s) for compute-optimal N and D "
                                                            "(repeatable; e.g. 1e21)."),
    out: Path = typer.Option(Path("lab"), "--out", "-o", help="Folder for fit-<law>.json and the figure."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Fit a scaling law to RUNS_CSV: constants with 95% bootstrap CIs, compute-optimal N and D, D_eff."""
    from assay.lab import plots
    from assay.lab.fit import LAWS, FitError, Runs, fit_law

    if law not in LAWS:
        _fail(f"unknown law {law!r}; choose one of {', '.join(LAWS)}")
    try:
        runs = Runs.from_csv(runs_csv)
        if runs.skipped:
            _say(f"skipped {runs.skipped} unusable rows of {runs_csv}")
        start = time.perf_counter()
        result = fit_law(runs, law, bootstrap=bootstrap, seed=seed)
    except (FitError, OSError) as e:
        _fail(str(e))
        return
    _say(result.summary())
    data: dict[str, Any] = {"kind": "fit", "source": str(runs_csv), "fit": result.to_dict(),
                            "seconds": round(time.perf_counter() - start, 3), "runs": _csv_rows(runs_csv)}
    if law == "quality":
        data["effective_data"] = result.effective_data_table(sorted(set(runs.Q.tolist())) if runs.Q is not None
                                                             else [1.0])
        for row in data["effective_data"]:
            _say(f"  Q={row['Q']:g}: D_eff/D = {row['D_eff_over_D']:.4g} [{row['lo']:.4g}, {row['hi']:.4g}]")
    if law == "data-constrained":
        data["epochs"] = result.epochs_table()
        for row in data["epochs"]:
            _say(f"  {row['epochs']:g} epochs: D'/U_D = {row['D_eff_over_U']:.4g} "
                 f"[{row['lo']:.4g}, {row['hi']:.4g}]")
    if budget:
        try:
            data["compute_optimal"] = result.compute_optimal(budget)
        except FitError as e:
            _say(f"no compute-optimal allocation: {e}")
        for row in data.get("compute_optimal", []):
            _say(f"  C={row['C']:.3g}: N_opt={row['N_opt']:.4g} [{row['N_lo']:.4g}, {row['N_hi']:.4g}]  "
                 f"D_opt={row['D_opt']:.4g} [{row['D_lo']:.4g}, {row['D_hi']:.4g}]")
    path = _write_json(out / f"fit-{law}.json", data)
    _write_png(out / f"fit-{law}.png", plots.law_fit(data))
    _say(f"wrote {path}")


def _csv_rows(path: Path) -> list[dict[str, float]]:
    """The runs as plain dicts with canonical keys (for figures)."""
    from assay.lab.fit import COLUMN_ALIASES

    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        lines = (line for line in f if line.strip() and not line.lstrip().startswith("#"))
        for row in csv.DictReader(lines):
            out: dict[str, float] = {}
            for key, value in row.items():
                if key is None:
                    continue
                k = key.strip().lower()
                for quantity, aliases in COLUMN_ALIASES.items():
                    if k == quantity.lower() or k in aliases:
                        try:
                            out[quantity] = float(value)
                        except (TypeError, ValueError):
                            pass
            if "loss" in out and "D" in out:
                rows.append(out)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# shared set-up of tiny-LM experiments


def _read(spec: str, max_docs: Optional[int]) -> tuple[str, list[str]]:
    from assay.lab.data import read_texts

    name, path = _named(spec)
    try:
        texts = read_texts(path, name=name, max_docs=max_docs)
    except (FileNotFoundError, ValueError) as e:
        _fail(f"{spec}: {e}")
    if texts.skipped:
        _say(f"{name}: skipped {dict(texts.skipped)}")
    if not texts.docs:
        _fail(f"{spec}: no text documents")
    _say(f"{name}: {len(texts.docs):,} documents, {texts.chars:,} characters")
    return name, texts.docs


def _without(docs: list[str], heldout: list[str], name: str) -> list[str]:
    """Drop exact copies of held-out documents from a training set (they would leak the test)."""
    import xxhash

    held = {xxhash.xxh3_64_intdigest(d.strip().encode("utf-8", "replace")) for d in heldout}
    kept = [d for d in docs if xxhash.xxh3_64_intdigest(d.strip().encode("utf-8", "replace")) not in held]
    if len(kept) < len(docs):
        _say(f"{name}: removed {len(docs) - len(kept)} documents identical to held-out ones")
    return kept


def _harness(tokenizer_docs: list[str], eval_docs: list[str], model: str, vocab: int, eval_tokens: int,
             tokenizer: Optional[Path], threads: int, lr: float, batch_size: int, device: str) -> Any:
    from assay.lab.harness import Harness
    from assay.lab.tokenizer import LabTokenizer

    tok = LabTokenizer.load(tokenizer) if tokenizer else None
    try:
        h = Harness.build(tokenizer_docs, eval_docs, preset=model, vocab_size=vocab, eval_tokens=eval_tokens,
                          tokenizer=tok, threads=threads, lr=lr, batch_size=batch_size, device=device)
    except ValueError as e:
        _fail(str(e))
    d = h.describe()
    _say(f"model {model}: {d['params']:,} parameters ({d['params_non_embedding']:,} non-embedding), vocabulary "
         f"{d['vocab_size']}, held-out set {d['eval_tokens']:,} tokens")
    return h


_MODEL = typer.Option("micro", "--model", "-m", help="Model preset: nano, micro, tiny, small, base.")
_VOCAB = typer.Option(512, "--vocab", help="BPE vocabulary size (when the tokenizer is trained here).")
_EVAL_TOKENS = typer.Option(32_768, "--eval-tokens", help="Size of the fixed held-out set, in tokens.")
_TOKENIZER = typer.Option(None, "--tokenizer", help="Reuse a tokenizer.json (otherwise trained here).")
_THREADS = typer.Option(1, "--threads", help="torch threads per run (1 is fastest on a busy machine).")
_LR = typer.Option(2e-3, "--lr", help="Peak learning rate.")
_BATCH = typer.Option(4, "--batch-size", help="Sequences per step.")
_DEVICE = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda.")
_MAX_DOCS = typer.Option(None, "--max-docs", help="Read at most this many documents per dataset.")


# ---------------------------------------------------------------------------------------------------------------
# ablate


@app.command()
def ablate(
    data: list[str] = typer.Option(..., "--data", "-d", help="Dataset NAME=PATH (repeatable; the first is the "
                                                             "baseline). JSONL(.gz)/Parquet/.txt files or folders."),
    eval_data: Optional[str] = typer.Option(None, "--eval", help="Held-out texts (default: 10% of the first "
                                                                 "dataset's documents, removed from its training)."),
    tokens: float = typer.Option(128_000, "--tokens", "-t", help="Training tokens per run (same for every dataset)."),
    seeds: int = typer.Option(3, "--seeds", "-s", help="Seeds per dataset (>= 3 for a confidence interval)."),
    out: Path = typer.Option(Path("lab"), "--out", "-o", help="Folder for ablation.json and figures."),
    model: str = _MODEL, vocab: int = _VOCAB, eval_tokens: int = _EVAL_TOKENS, tokenizer: Optional[Path] = _TOKENIZER,
    threads: int = _THREADS, lr: float = _LR, batch_size: int = _BATCH, device: str = _DEVICE,
    max_docs: Optional[int] = _MAX_DOCS,
) -> None:
    """Train the same tiny LM on each dataset (same token budget, same seeds) and compare held-out losses."""
    from assay.lab import plots
    from assay.lab.ablate import run_ablation
    from assay.lab.data import split_docs
    from assay.lab.harness import sample_for_tokenizer

    if seeds < 1:
        _fail("--seeds must be at least 1")
    datasets = dict(_read(spec, max_docs) for spec in data)
    if len(datasets) != len(data):
        _fail("dataset names must be unique (use NAME=PATH)")
    first = next(iter(datasets))
    if eval_data:
        _, heldout = _read(eval_data, max_docs)
        eval_source = eval_data
    else:
        datasets[first], heldout = split_docs(datasets[first], 0.1)
        eval_source = f"10% of {first} (by document hash)"
        if not heldout or not datasets[first]:
            _fail(f"{first} is too small to hold out 10% of its documents; pass --eval")
    datasets = {name: _without(docs, heldout, name) for name, docs in datasets.items()}
    h = _harness(sample_for_tokenizer(list(datasets.values())), heldout, model, vocab, eval_tokens, tokenizer,
                 threads, lr, batch_size, device)
    seqs = {name: h.sequences(docs) for name, docs in datasets.items()}
    for name, s in seqs.items():
        if len(s) == 0:
            _fail(f"{name}: shorter than one context window after tokenization")
    result = run_ablation(h, seqs, int(tokens), list(range(seeds)), progress=_say)
    table = Table(title=f"held-out loss after {int(tokens):,} tokens ({seeds} seeds, 95% CI)")
    for col in ("dataset", "loss", "95% CI", "vs baseline", "95% CI"):
        table.add_column(col)
    diffs = {c["name"]: c["diff"] for c in result.comparisons}
    for row in result.datasets:
        loss, diff = row["loss"], diffs.get(row["name"])
        table.add_row(row["name"], f"{loss['mean']:.4f}", f"[{loss['lo']:.4f}, {loss['hi']:.4f}]",
                      "" if diff is None else f"{diff['mean']:+.4f}",
                      "" if diff is None else f"[{diff['lo']:+.4f}, {diff['hi']:+.4f}]")
    console.print(table)
    for note in result.notes:
        _say(note)
    payload = {"kind": "ablation", "eval_source": eval_source, **result.to_dict()}
    path = _write_json(out / "ablation.json", payload)
    _write_png(out / "ablation.png", plots.ablation(payload))
    h.save_tokenizer(out)
    _say(f"wrote {path} ({result.seconds:.0f} s)")


# ---------------------------------------------------------------------------------------------------------------
# ladder


@app.command()
def ladder(
    clean: str = typer.Option(..., "--clean", "-c", help="The clean reference corpus (defines Q = 1)."),
    candidate: list[str] = typer.Option([], "--candidate", help="Dataset NAME=PATH to place on the law "
                                                                "(repeatable)."),
    eval_data: Optional[str] = typer.Option(None, "--eval", help="Held-out texts (default: 10% of the clean "
                                                                 "corpus by document hash)."),
    tokens: str = typer.Option("32000,64000,128000", "--tokens", "-t", help="Data sizes D of the ladder."),
    qualities: str = typer.Option("1,0.9,0.75,0.5", "--qualities", "-q", help="Qualities Q of the ladder."),
    seeds: int = typer.Option(3, "--seeds", "-s", help="Seeds per (D, Q) and per candidate."),
    place_tokens: Optional[float] = typer.Option(None, "--place-tokens", help="Budget for candidates "
                                                                              "(default: the largest D)."),
    swap: float = typer.Option(0.5, "--swap", help="Fraction of tokens swapped in a corrupted sequence."),
    bootstrap: int = typer.Option(200, "--bootstrap", "-b", help="Bootstrap refits of the law."),
    out: Path = typer.Option(Path("lab"), "--out", "-o", help="Folder for ladder.json, runs.csv and figures."),
    model: str = _MODEL, vocab: int = _VOCAB, eval_tokens: int = _EVAL_TOKENS, tokenizer: Optional[Path] = _TOKENIZER,
    threads: int = _THREADS, lr: float = _LR, batch_size: int = _BATCH, device: str = _DEVICE,
    max_docs: Optional[int] = _MAX_DOCS,
) -> None:
    """Token-swap corruption ladder on a clean corpus, the quality law fitted to it, candidates placed on it."""
    start = time.perf_counter()
    from assay.lab import plots
    from assay.lab.data import split_docs
    from assay.lab.harness import sample_for_tokenizer
    from assay.lab.quality_ladder import place_candidates, run_ladder

    Ds = [int(x) for x in _floats(tokens)]
    Qs = _floats(qualities)
    if any(not 0 < q <= 1 for q in Qs):
        _fail("qualities must be in (0, 1]")
    clean_name, clean_docs = _read(clean, max_docs)
    if eval_data:
        _, heldout = _read(eval_data, max_docs)
        clean_docs = _without(clean_docs, heldout, clean_name)
    else:
        clean_docs, heldout = split_docs(clean_docs, 0.1)
        if not heldout or not clean_docs:
            _fail(f"{clean_name} is too small to hold out 10% of its documents; pass --eval")
    cands = dict(_read(spec, max_docs) for spec in candidate)
    cands = {name: _without(docs, heldout, name) for name, docs in cands.items()}
    h = _harness(sample_for_tokenizer([clean_docs]), heldout, model, vocab, eval_tokens, tokenizer, threads, lr,
                 batch_size, device)
    clean_seqs = h.sequences(clean_docs)
    unique = len(clean_seqs) * h.model.context
    if max(Ds) > unique:
        _say(f"[yellow]note:[/] the clean corpus has {unique:,} training tokens; D above that repeats it")
    result = run_ladder(h, clean_seqs, Ds, Qs, list(range(seeds)), swap=swap, bootstrap=bootstrap, progress=_say)
    if result.fit is None:
        _fail("the ladder needs at least two data sizes and two qualities to fit the law")
        return
    _say(result.fit.summary())
    placement_start = time.perf_counter()
    if cands:
        D = int(place_tokens or max(Ds))
        result.placements = place_candidates(h, result.fit, {n: h.sequences(d) for n, d in cands.items()}, D,
                                             list(range(seeds)), progress=_say, ladder_runs=result.runs)
        for p in result.placements:
            _say(f"{p.name}: loss {p.loss} → Q = {p.Q:.3g} [{p.Q_ci[0]:.3g}, {p.Q_ci[1]:.3g}], "
                 f"D_eff = {p.D_eff:,.0f} clean tokens [{p.D_eff_ci[0]:,.0f}, {p.D_eff_ci[1]:,.0f}] "
                 f"of D = {p.D:,} (read off the {p.method}){'' if p.epochs <= 1 else f'; {p.epochs:.2f} epochs!'}")
    placement_seconds = time.perf_counter() - placement_start
    payload = {"kind": "ladder", "clean": clean, **result.to_dict(), "placement_seconds": placement_seconds}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["N", "D", "Q", "seed", "loss", "seconds", "epochs"])
        w.writeheader()
        w.writerows(result.runs)
    _write_png(out / "ladder-fit.png", plots.law_fit(payload))
    _write_png(out / "ladder-effective-data.png", plots.effective_data(payload))
    h.save_tokenizer(out)
    # the whole command: reading, tokenizer, ladder runs and fit, candidates, figures (result.seconds is the ladder)
    payload["total_seconds"] = time.perf_counter() - start
    path = _write_json(out / "ladder.json", payload)
    _say(f"wrote {path} and {out / 'runs.csv'} in {payload['total_seconds']:.1f} s (ladder runs and fit "
         f"{result.seconds:.1f} s, candidates {placement_seconds:.1f} s)")


# ---------------------------------------------------------------------------------------------------------------
# collapse


@app.command()
def collapse(
    generations: int = typer.Option(500, "--generations", "-g", help="Generations of the Gaussian model."),
    samples: int = typer.Option(100, "--samples", "-M", help="Samples per generation (M)."),
    chains: int = typer.Option(200, "--chains", help="Independent Gaussian chains."),
    lm_data: Optional[str] = typer.Option(None, "--lm-data", help="Real texts for the tiny-LM recursive run "
                                                                 "(omit to run only the Gaussian model)."),
    lm_generations: int = typer.Option(5, "--lm-generations", help="Generations of the tiny-LM run."),
    lm_tokens: int = typer.Option(32_000, "--lm-tokens", help="Real training tokens of the tiny-LM run."),
    epochs: float = typer.Option(2.0, "--epochs", help="Passes over each generation's pool (tiny LM)."),
    out: Path = typer.Option(Path("lab"), "--out", "-o", help="Folder for collapse.json and figures."),
    seed: int = typer.Option(0, "--seed"),
    model: str = _MODEL, vocab: int = _VOCAB, eval_tokens: int = _EVAL_TOKENS, threads: int = _THREADS,
    lr: float = _LR, batch_size: int = _BATCH, device: str = _DEVICE, max_docs: Optional[int] = _MAX_DOCS,
) -> None:
    """Model collapse: the Gaussian toy model and (with --lm-data) tiny-LM recursive training, replace vs accumulate."""
    from assay.lab import plots
    from assay.lab.collapse import MODES, gaussian_collapse, lm_collapse
    from assay.lab.data import split_docs

    payload: dict[str, Any] = {"kind": "collapse", "gaussian": [], "lm": []}
    every = max(1, generations // 500)
    for mode in MODES:
        g = gaussian_collapse(mode, generations, samples, chains, seed=seed)
        payload["gaussian"].append(g.to_dict(every))
        s = g.summary()
        _say(f"gaussian {mode}: median σ/σ₀ after {generations} generations = "
             f"{s['median_sigma_final_over_sigma0']:.3f}; chains within 10% of σ₀: "
             f"{s['chains_within_10pct_at_end']:.0%}")
    if lm_data:
        name, docs = _read(lm_data, max_docs)
        train, heldout = split_docs(docs, 0.1)
        h = _harness(train, heldout, model, vocab, eval_tokens, None, threads, lr, batch_size, device)
        real = h.sequences(train)[: max(1, lm_tokens // h.model.context)]
        for mode in MODES:
            r = lm_collapse(h, real, lm_generations, mode, epochs=epochs, seed=seed, progress=_say)
            payload["lm"].append(r.to_dict())
    path = _write_json(out / "collapse.json", payload)
    _write_png(out / "collapse-gaussian.png", plots.gaussian_collapse(payload["gaussian"]))
    if payload["lm"]:
        _write_png(out / "collapse-lm.png", plots.lm_collapse(payload["lm"]))
    _say(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------------------
# report


@app.command()
def report(
    folder: Path = typer.Argument(Path("lab"), help="Folder with lab results (JSON written by the commands)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default FOLDER/lab-report.html)."),
) -> None:
    """Write one HTML page with every fit, ladder, ablation and collapse result found in FOLDER."""
    from assay.lab.report import find_results, write_report

    if not folder.is_dir():
        _fail(f"{folder} is not a folder")
    n = len(find_results(folder))
    path = write_report(folder, out)
    _say(f"wrote {path} ({n} results)")


# ---------------------------------------------------------------------------------------------------------------
# datawall


def _range_flag(help_text: str) -> Any:
    return typer.Option(None, help=help_text + " One number, or LO,MEDIAN,HI (a 90% interval).")


@app.command()
def datawall(
    inputs: Optional[Path] = typer.Option(None, "--inputs", "-i", help="YAML file of inputs (keys as in "
                                                                       "docs/lab.md); flags override it."),
    law: list[Path] = typer.Option([], "--law", help="A lab fit JSON: a quality-law fit (fit-quality.json or "
                                                     "ladder.json) sets γ/β, a data-constrained fit sets R_D* "
                                                     "(repeatable; default: the lab's γ/β = 0.98 [0.91, 1.02])."),
    method: Optional[str] = typer.Option(None, "--method", help="Dataset projection: compute (largest run's "
                                                                "compute, Chinchilla-optimal; default), historical "
                                                                "(dataset-size trend) or both."),
    base_year: Optional[float] = typer.Option(None, "--base-year", help="Year the starting values describe "
                                                                        "(default 2024)."),
    stock: Optional[str] = _range_flag("Effective stock of human text in the base year, tokens (default "
                                       "100e12,300e12,1000e12)."),
    stock_growth: Optional[str] = _range_flag("Yearly growth factor of the stock (default 1.03,1.07,1.11)."),
    compute: Optional[str] = _range_flag("Largest run's training compute in the base year, FLOP (default "
                                         "2e25,5e25,1e26)."),
    compute_growth: Optional[str] = _range_flag("Yearly growth factor of that compute (default 4,4.5,5 as an "
                                                "80% interval)."),
    tokens_per_param: Optional[str] = _range_flag("Tokens per parameter of a compute-optimal run (default 20)."),
    dataset: Optional[str] = _range_flag("Largest training dataset in the base year, tokens (historical "
                                         "projection; default 12e12,15e12,18e12)."),
    dataset_growth: Optional[str] = _range_flag("Its yearly growth factor (default 2.5,2.9,3.7)."),
    overtrained: Optional[str] = _range_flag("Overtraining factor of the 'overtrained' scenario (default 5)."),
    quality_gain: Optional[str] = _range_flag("Quality scenario: factor by which processing raises the stock's "
                                              "Q (default 1.34,1.52,1.69: the lab's extraction vs raw crawl)."),
    epochs: Optional[str] = _range_flag("Repetition scenario: epochs over the stock (default 4)."),
    synthetic_share: Optional[str] = _range_flag("Synthetic scenario: share of every run that is synthetic "
                                                 "(default 0.1,0.3,0.5)."),
    synthetic_quality: Optional[str] = _range_flag("Synthetic scenario: its quality Q (default 0.3,0.5,0.8)."),
    samples: int = typer.Option(20_000, "--samples", "-n", help="Monte Carlo samples."),
    seed: int = typer.Option(0, "--seed", help="Monte Carlo seed (same seed, same inputs: same result)."),
    out: Path = typer.Option(Path("lab"), "--out", "-o", help="Folder for datawall.json and datawall.png."),
) -> None:
    """The Data Wall: the year the largest training run uses up the stock of human text (Epoch AI's model), with
    what quality, repetition and synthetic data change; Monte Carlo over the inputs' ranges."""
    from assay.lab import datawall as dw

    flags = {"method": method, "base_year": base_year, "stock": stock, "stock_growth": stock_growth,
             "compute": compute, "compute_growth": compute_growth, "tokens_per_param": tokens_per_param,
             "dataset": dataset, "dataset_growth": dataset_growth, "overtrain_scenario": overtrained,
             "quality_gain": quality_gain, "epochs": epochs, "synthetic_share": synthetic_share,
             "synthetic_quality": synthetic_quality}
    try:
        values = dw.WallInputs()
        if inputs is not None:
            values = values.with_values(dw.load_inputs(inputs), str(inputs))
        for path in law:
            values = values.with_values(dw.law_values(path), f"--law {path}")
        values = values.with_values({k: v for k, v in flags.items() if v is not None}, "flags")
        start = time.perf_counter()
        result = dw.project(values, samples=samples, seed=seed)
    except dw.WallError as e:
        _fail(str(e))
        return
    table = Table(title=f"year the stock of human text is used up ({samples:,} samples, {values.method} "
                        f"projection)")
    for col in ("scenario", "stock ×", "median", "80%", "90%", "P<2030"):
        table.add_column(col, no_wrap=True)
    for r in result.scenarios:
        table.add_row(r["name"], f"{r['stock_multiplier']['median']:.3g}", dw.format_year(r["median"]),
                      f"{dw.format_year(r['p10'])}–{dw.format_year(r['p90'])}",
                      f"{dw.format_year(r['p05'])}–{dw.format_year(r['p95'])}", f"{r['p_before_2030']:.0%}")
    console.print(table)
    pub = dw.PUBLISHED_2024
    base = result.scenario("baseline")
    _say(f"Epoch AI (Villalobos et al. 2024) published: median {pub['median']}, 80% interval "
         f"{pub['interval_80'][0]}–{pub['interval_80'][1]}, {pub['overtrained_5x_median']} if overtrained 5x; "
         f"here: median {dw.format_year(base['median'])}, overtrained "
         f"{dw.format_year(result.scenario('overtrained')['median'])}")
    payload = {**result.to_dict(), "seconds": round(time.perf_counter() - start, 3)}
    path = _write_json(out / "datawall.json", payload)
    try:
        png = dw.figure(payload)
    except ModuleNotFoundError as e:
        (out / "datawall.png").unlink(missing_ok=True)
        _say(f"wrote {path}; no figure: {e.name} is not installed (pip install 'assay[ml]')")
        return
    _write_png(out / "datawall.png", png)
    _say(f"wrote {path} and {out / 'datawall.png'}")

"""``assay quality``: train a quality classifier, score files with it, show what a model file holds.

Inputs are anything ``assay run`` reads (JSONL, .jsonl.gz/.zst, Parquet; files, folders or globs): Assay record
files, or foreign rows with a text field (``--text-field``). Unreadable lines and rows without text are skipped and
counted, never fatal.

    assay quality train --positive ref.jsonl --negative crawl.jsonl.gz -o dclm-like.npz
    assay quality train --labels graded.jsonl --label-field score -o edu.npz      # FineWeb-Edu style 0..5
    assay quality score --model edu.npz pages.jsonl scored.jsonl.gz
    assay quality info edu.npz
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson
import typer
from rich.console import Console

app = typer.Typer(help="Train and apply model-based quality classifiers (DCLM / FineWeb-Edu style).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)

#: where a label is looked for when --label-field is not given, in this order
LABEL_FIELDS = ("label", "score", "int_score", "quality")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _records(paths: list[str], text_field: str, errors: Any) -> Iterator[Any]:
    from assay.io.sources import plan_shards, read_shard

    for shard in plan_shards(paths, shard_bytes=0):
        yield from read_shard(shard, errors, text_key=text_field)


def _label_of(record: Any, field: str | None) -> Any:
    fields = (field,) if field else LABEL_FIELDS
    for f in fields:
        for place in (record.meta, record.signals):
            if f in place and place[f] is not None:
                return place[f]
    return None


def read_texts(paths: list[str], text_field: str = "text", min_chars: int = 1, limit: int | None = None,
               seed: int = 0, label_field: str | None = None, with_labels: bool = False,
               ) -> tuple[list[str], list[Any], dict[str, int]]:
    """Texts (and labels) from ``paths``; ``limit`` keeps a seeded random sample. Returns ``(texts, labels,
    skipped)`` where ``skipped`` counts what was left out and why."""
    from assay.core.errors import ErrorLog

    errors = ErrorLog()
    texts: list[str] = []
    labels: list[Any] = []
    skipped: dict[str, int] = {}
    for r in _records(paths, text_field, errors):
        text = r.text
        if len(text.strip()) < min_chars:
            skipped["short_or_empty"] = skipped.get("short_or_empty", 0) + 1
            continue
        if with_labels:
            label = _label_of(r, label_field)
            if label is None:
                skipped["no_label"] = skipped.get("no_label", 0) + 1
                continue
            labels.append(label)
        texts.append(text)
    for kind, n in errors.counts.items():
        skipped[kind] = skipped.get(kind, 0) + n
    if limit is not None and len(texts) > limit:
        keep = sorted(random.Random(seed).sample(range(len(texts)), limit))
        skipped["over_limit"] = len(texts) - limit
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep] if with_labels else labels
    return texts, labels, skipped


def _print_metrics(model: Any) -> None:
    m = model.info.get("metrics", {})
    t = model.info.get("training", {})
    backend = model.backend_spec.get("label") or model.backend_spec["kind"]
    console.print(f"task [bold]{model.task}[/], backend [bold]{backend}[/] ({len(model.coef)}-d), "
                  f"trained on {t.get('n_train')} texts, held out {t.get('n_eval')} ({t.get('held_out')}), "
                  f"labels {t.get('label_counts')}")
    if model.task == "binary" and m:
        console.print(f"held-out accuracy [bold]{m['accuracy']:.3f}[/] "
                      f"(majority baseline {m['majority_baseline']:.3f}), balanced {m['balanced_accuracy']:.3f}, "
                      f"AUC {m.get('auc', float('nan')):.3f}")
    elif m:
        extra = f", F1 at >=3 {m['f1_at_3']:.3f}" if "f1_at_3" in m else ""
        console.print(f"held-out MAE [bold]{m['mae']:.3f}[/] (predicting the mean: {m['mae_baseline']:.3f}), "
                      f"RMSE {m['rmse']:.3f}, Spearman {m.get('spearman', float('nan')):.3f}{extra}")


@app.command()
def train(
    output: Path = typer.Option(..., "--output", "-o", help="Model file to write (.npz)."),
    positive: list[str] = typer.Option([], "--positive", "-p", help="Reference ('good') texts: files, folders or "
                                       "globs (repeatable)."),
    negative: list[str] = typer.Option([], "--negative", "-n", help="Random/raw texts (repeatable)."),
    labels: list[str] = typer.Option([], "--labels", "-l", help="Texts with a label or 0..5 score (repeatable); "
                                     "instead of --positive/--negative."),
    backend: str = typer.Option("minilm", "--backend", "-b", help="minilm (sentence embeddings), hashed (light, "
                                "no torch) or a sentence-transformers folder."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in foreign JSON rows."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help=f"Field holding the label (default: "
                                              f"first of {', '.join(LABEL_FIELDS)})."),
    task: str = typer.Option("auto", "--task", help="auto, binary or regression."),
    positive_label: Optional[str] = typer.Option(None, "--positive-label", help="The good class of word labels."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share held out to measure the model."),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", help="Sample at most this many texts per side "
                                           "(per --labels set)."),
    min_chars: int = typer.Option(20, "--min-chars", help="Ignore texts shorter than this."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(64, "--batch-size", help="Embedding batch size."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    dim: int = typer.Option(1 << 18, "--dim", help="Buckets of the hashed backend."),
) -> None:
    """Train a quality classifier: --positive/--negative (DCLM) or --labels (FineWeb-Edu); writes one file."""
    from assay.models.embeddings import get_backend
    from assay.models.quality_classifier import train_quality_model

    if task not in ("auto", "binary", "regression"):
        _fail(f"--task must be auto, binary or regression, not {task!r}")
    if bool(labels) == bool(positive or negative):
        _fail("give either --labels, or both --positive and --negative")
    if not labels and not (positive and negative):
        _fail("--positive and --negative go together")
    try:
        skipped: dict[str, Any] = {}
        if labels:
            texts, ys, skipped["labels"] = read_texts(labels, text_field, min_chars, max_docs, seed, label_field,
                                                      with_labels=True)
            sources = {"labels": labels}
        else:
            pos, _, skipped["positive"] = read_texts(positive, text_field, min_chars, max_docs, seed)
            neg, _, skipped["negative"] = read_texts(negative, text_field, min_chars, max_docs, seed)
            console.print(f"{len(pos):,} positive and {len(neg):,} negative texts")
            texts, ys = pos + neg, [1] * len(pos) + [0] * len(neg)
            sources = {"positive": positive, "negative": negative}
        for side, counts in skipped.items():
            if counts:
                console.print(f"[yellow]skipped ({side}):[/] {counts}")
        options: dict[str, Any] = {"batch_size": batch_size}
        if backend.lower() in ("hashed", "light", "ngrams"):
            options["dim"] = dim
        else:
            options["device"] = device
        model = train_quality_model(texts, ys, backend=get_backend(backend, **options),
                                    task=task,  # type: ignore[arg-type]
                                    positive_label=positive_label, test_fraction=test_fraction, seed=seed,
                                    sources={**sources, "skipped": skipped})
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
        return
    path = model.save(output)
    _print_metrics(model)
    console.print(f"model: [bold]{path}[/]")


@app.command()
def score(
    input: str = typer.Argument(..., help="Input file, folder or glob (JSONL or Parquet; records or foreign rows)."),
    output: str = typer.Argument(..., help="Output file: Assay records as .jsonl, .jsonl.gz or .jsonl.zst."),
    model: Path = typer.Option(..., "--model", "-m", help="Model file from `assay quality train`."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in foreign JSON rows."),
    signal: str = typer.Option("quality.score", "--signal", help="Signal name to write the score to."),
    batch_size: int = typer.Option(64, "--batch-size", help="Records scored per batch."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Score INPUT into OUTPUT: Assay records with the score in signals (ad hoc; recipes use quality_score)."""
    import numpy as np

    from assay.core.errors import ErrorLog
    from assay.core.step import StepContext
    from assay.harvest.quality import QualityScore
    from assay.io.files import compression_of
    from assay.io.jsonl import JsonlWriter

    if output.endswith(".parquet"):
        _fail("OUTPUT must be JSONL (.jsonl, .jsonl.gz or .jsonl.zst)")
    step = QualityScore(model=str(model), signal=signal, batch_size=batch_size, device=device)
    ctx = StepContext()
    try:
        step.setup(ctx)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    errors = ErrorLog()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    scores: list[float] = []
    written = 0
    writer = JsonlWriter(open(tmp, "wb"), compression_of(output))
    try:
        batch: list[Any] = []
        for r in _records([input], text_field, errors):
            batch.append(r)
            if len(batch) >= max(batch_size, 256):
                written += _score_and_write(step, ctx, batch, writer, signal, scores)
                batch = []
        if batch:
            written += _score_and_write(step, ctx, batch, writer, signal, scores)
        writer.close()
    except (ValueError, FileNotFoundError) as e:
        writer.close()
        tmp.unlink(missing_ok=True)
        _fail(str(e))
    tmp.replace(out)
    unscored = step.stats.counters.get("skipped:no_text", 0)
    if scores:
        s = np.asarray(scores)
        q = np.quantile(s, [0.1, 0.5, 0.9])
        console.print(f"scored {len(s):,} records: mean {s.mean():.3f}, p10 {q[0]:.3f}, median {q[1]:.3f}, "
                      f"p90 {q[2]:.3f}" + (f"; {(s >= 0.5).mean():.1%} at >= 0.5"
                                            if step.model.task == "binary" else ""))
    if unscored or errors:
        console.print(f"[yellow]not scored:[/] {unscored} records without text; skipped while reading: "
                      f"{dict(errors.counts)}")
    console.print(f"output: [bold]{out}[/] ({written:,} records)")


def _score_and_write(step: Any, ctx: Any, batch: list[Any], writer: Any, signal: str, scores: list[float]) -> int:
    for r in step.process_batch(batch, ctx):
        if signal in r.signals:
            scores.append(r.signals[signal])
        writer.write(r)
    return len(batch)


@app.command()
def info(model: Path = typer.Argument(..., help="Model file."),
         as_json: bool = typer.Option(False, "--json", help="Print the whole header as JSON.")) -> None:
    """Show a model's backend, labels, training statistics and held-out metrics."""
    from assay.models.quality_classifier import QualityModel

    try:
        m = QualityModel.load(model)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
        return
    if as_json:
        sys.stdout.write(orjson.dumps(m.header(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    _print_metrics(m)
    console.print(f"created {m.info.get('created')} by Assay {m.info.get('assay_version')}; "
                  f"sources {m.info.get('sources', {}).get('positive') or m.info.get('sources', {}).get('labels')}")

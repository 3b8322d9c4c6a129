"""`assay pack`: a finished run's kept records as training token files.

The Megatron files are read back by megatron-core's own ``IndexedDataset`` (in a subprocess: it imports torch and
megatron) and compared byte for byte with what datatrove's ``MegatronDocumentTokenizer`` (in .venv-peers) writes for
the same documents with the same tokenizer. The Parquet layout is loaded with ``datasets.load_dataset`` and decoded
back to the documents with SmolLM2's vocabulary (byte-level BPE: lossless).
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from assay.cli import app
from assay.lab.tokenizer import LabTokenizer

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".venv-peers" / "bin"
WORDS = ("the data engine cleans web text and code before training; "
         "naïve café façade Ünïcode 日本語のテキスト 中文 ✓ 🚀 ~~~ def f(x): return x**2 {'a': [1, 2]}").split()


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _documents(n: int = 240) -> list[str]:
    rng = random.Random(7)
    docs = []
    for i in range(n):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) for _ in range(rng.randint(1, 6))]
        doc = "\n".join(lines)
        if i % 50 == 3:  # special-token text typed into a document is text, not a document end
            doc += " <|endoftext|> <|eos|> </s>"
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real run (`assay run`, no steps) over the documents plus one empty one, then a damaged shard added to its
    data/ (an invalid UTF-8 line, a lone surrogate, a non-text record): pack must count those, not crash."""
    tmp = tmp_path_factory.mktemp("pack")
    docs = _documents()
    src = tmp / "docs.jsonl"
    lines = [json.dumps({"text": d}) for d in docs[:100]] + [json.dumps({"text": ""})] + \
            [json.dumps({"text": d}) for d in docs[100:]]
    src.write_text("\n".join(lines) + "\n")
    recipe = tmp / "recipe.yaml"
    recipe.write_text("name: plain\noutput: {format: jsonl.gz, max_records_per_file: 60}\nsteps: []\n")
    run = tmp / "run"
    _invoke("run", str(recipe), "-i", str(src), "-o", str(run), "-w", "1")
    damaged = (b'{"id": "x1", "content": "caf\xe9 latin-1"}\n'
               b'{"id": "x2", "content": "half a pair \\ud800"}\n'
               b'{"id": "x3", "content": {"messages": []}, "modality": "conversation"}\n')
    with gzip.open(run / "data" / "train-99999-0000.jsonl.gz", "wb") as f:
        f.write(damaged)
    tokenizer = LabTokenizer.train(docs, vocab_size=600)
    tok_path = tmp / "tokenizer.json"
    tokenizer.save(tok_path)
    return {"run": run, "docs": docs, "tokenizer": tok_path, "lab": tokenizer, "tmp": tmp}


def test_megatron_files_load_in_megatron_core_and_equal_datatrove(corpus: dict) -> None:
    out = corpus["tmp"] / "megatron"
    _invoke("pack", str(corpus["run"]), str(out), "-t", str(corpus["tokenizer"]), "-f", "megatron")
    stats = json.loads((out / "pack.json").read_text())
    docs, lab = corpus["docs"], corpus["lab"]
    assert stats["documents"] == len(docs)
    assert stats["tokenizer"]["eos_token"] == "<|eos|>"

    # megatron-core's reader
    script = (
        "import json, sys\n"
        "from megatron.core.datasets.indexed_dataset import IndexedDataset\n"
        "ds = IndexedDataset(sys.argv[1], multimodal=False, mmap=True)\n"
        "print(json.dumps({'docs': [ds[i].tolist() for i in range(len(ds))], 'dtype': ds.index.dtype.__name__,\n"
        "                  'document_indices': ds.document_indices.tolist()}))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(out / "train_text_document")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, "megatron-core (in the dev extra) reading the files:\n" + proc.stderr[-2000:]
    read = json.loads(proc.stdout.strip().splitlines()[-1])
    assert read["dtype"] == "uint16"  # a 600-token vocabulary fits
    assert read["document_indices"] == list(range(len(docs) + 1))
    assert sum(map(len, read["docs"])) == stats["tokens"]
    for doc, ids in zip(docs, read["docs"], strict=True):
        assert ids[-1] == lab.eos_id and lab.eos_id not in ids[:-1]
        assert lab.tokenizer.decode(ids[:-1], skip_special_tokens=False) == doc
        if "<|" not in doc:
            assert ids[:-1] == lab.tokenizer.encode(doc, add_special_tokens=False).ids

    # datatrove's Megatron writer, same documents, same tokenizer: the same bytes. (Its tokenizer turns special
    # tokens typed in a document into the special token; Assay keeps them text, so only documents without any.)
    plain = [d for d in docs if "<|eos|>" not in d]
    out_plain = corpus["tmp"] / "megatron-plain"
    run_plain = corpus["tmp"] / "run-plain"
    (run_plain / "data").mkdir(parents=True)
    with gzip.open(run_plain / "data" / "train-00000-0000.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in plain)
    _invoke("pack", str(run_plain), str(out_plain), "-t", str(corpus["tokenizer"]), "-f", "megatron")
    peer_out = corpus["tmp"] / "datatrove"
    (corpus["tmp"] / "plain.json").write_text(json.dumps(plain))
    script = (
        "import json, sys\n"
        "from datatrove.data import Document\n"
        "from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer\n"
        "docs = [Document(text=t, id=str(i)) for i, t in enumerate(json.load(open(sys.argv[1])))]\n"
        "MegatronDocumentTokenizer(sys.argv[2], tokenizer_name_or_path=sys.argv[3], eos_token='<|eos|>')"
        ".run(iter(docs))\n")
    proc = subprocess.run([str(PEERS / "python"), "-c", script, str(corpus["tmp"] / "plain.json"), str(peer_out),
                           str(corpus["tokenizer"])], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for ext in ("bin", "idx"):
        theirs = (peer_out / f"00000_tokens.{ext}").read_bytes()
        assert (out_plain / f"train_text_document.{ext}").read_bytes() == theirs


def test_parquet_rows_load_with_datasets_and_decode_to_the_documents(corpus: dict) -> None:
    from datasets import load_dataset
    from llama_cpp import Llama

    from assay.models.llm.local import default_model_path

    out = corpus["tmp"] / "hf"
    _invoke("pack", str(corpus["run"]), str(out), "-t", "smollm2", "--seq-len", "128", "--tail", "pad",
            "--position-ids")
    stats = json.loads((out / "pack.json").read_text())
    assert stats["skipped"] == {"empty": 1, "not_text": 1, "unreadable:bad_json": 1, "unreadable:invalid_utf8": 1}
    rows = load_dataset("parquet", data_dir=str(out), split="train")
    assert len(rows) == stats["sequences"] > 1
    assert all(len(r["input_ids"]) == 128 for r in rows)
    ids = np.concatenate([np.asarray(r["input_ids"]) for r in rows])
    mask = np.concatenate([np.asarray(r["attention_mask"]) for r in rows]).astype(bool)
    assert (~mask).sum() == stats["padding_tokens"] > 0 and mask[:-stats["padding_tokens"]].all()
    stream = ids[mask]
    assert len(stream) == stats["tokens"]
    eos = stats["tokenizer"]["eos_id"]
    ends = np.flatnonzero(stream == eos)
    assert len(ends) == len(corpus["docs"]) and ends[-1] == len(stream) - 1  # '<|endoftext|>' text stayed text

    vocab = Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)
    starts = np.concatenate([[0], ends[:-1] + 1])
    decoded = [vocab.detokenize(stream[s:e].tolist()).decode() for s, e in zip(starts, ends)]
    assert decoded == corpus["docs"]
    count = sum(len(vocab.tokenize(d.encode(), add_bos=False, special=False)) + 1 for d in corpus["docs"])
    assert stats["tokens"] == count

    # positions restart at each document's first token and at each row's start
    pos = np.concatenate([np.asarray(r["position_ids"]) for r in rows])[mask]
    doc_first = set(starts.tolist()) | set(range(0, len(stream), 128))
    assert set(np.flatnonzero(pos == 0).tolist()) == doc_first


def test_workers_give_the_same_files_and_bad_arguments_fail_in_one_line(corpus: dict) -> None:
    outs = []
    for w in ("1", "2"):
        out = corpus["tmp"] / f"w{w}"
        _invoke("pack", str(corpus["run"]), str(out), "-t", "smollm2", "--seq-len", "64", "-w", w)
        outs.append(out)
    tables = [pq.read_table(o / "data" / "train-00000.parquet") for o in outs]
    assert tables[0].num_rows > 0 and tables[0].equals(tables[1])
    stats = [json.loads((o / "pack.json").read_text()) for o in outs]
    assert stats[0]["dropped_tokens"] == stats[0]["tokens"] - 64 * stats[0]["sequences"] > 0
    for key in ("documents", "tokens", "sequences", "skipped"):
        assert stats[0][key] == stats[1][key]

    runner = CliRunner()
    cases = [
        (["-t", "gpt2"], "unknown tokenizer 'gpt2'"),
        (["-t", str(corpus["tokenizer"]), "--eos", "<|nope|>"], "is not a token"),
        (["-t", "smollm2", "-f", "nanotron"], "unknown format 'nanotron'"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["pack", str(corpus["run"]), str(corpus["tmp"] / "bad"), *extra])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["pack", str(corpus["run"]), str(outs[0]), "-t", "smollm2"])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = runner.invoke(app, ["pack", str(corpus["tmp"]), str(corpus["tmp"] / "bad"), "-t", "smollm2"])
    assert result.exit_code == 2 and "no kept records" in result.output
    only_bad = corpus["tmp"] / "run-bad"
    (only_bad / "data").mkdir(parents=True)
    (only_bad / "data" / "train-00000-0000.jsonl").write_bytes(b'{"text": ""}\n{"text": "caf\xe9"}\n')
    result = runner.invoke(app, ["pack", str(only_bad), str(corpus["tmp"] / "bad2"), "-t", "smollm2"])
    assert result.exit_code == 2 and "no record of" in result.output and "empty" in result.output


def test_minilm_documents_are_not_cut_at_the_model_length(corpus: dict) -> None:
    """Regression: MiniLM's tokenizer.json truncates (and pads) to 128 tokens; packing keeps whole documents."""
    from tokenizers import Tokenizer

    from assay.models.embeddings import packaged_minilm_path

    out = corpus["tmp"] / "minilm"
    _invoke("pack", str(corpus["run"]), str(out), "-t", "minilm", "-f", "megatron")
    stats = json.loads((out / "pack.json").read_text())
    assert stats["tokenizer"]["eos_token"] == "[SEP]"
    reference = Tokenizer.from_file(str(packaged_minilm_path() / "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    lengths = [len(reference.encode(d, add_special_tokens=False).ids) + 1 for d in corpus["docs"]]
    assert max(lengths) > 200 and stats["tokens"] == sum(lengths)
    idx = (out / "train_text_document.idx").read_bytes()
    n = int.from_bytes(idx[18:26], "little")
    assert np.frombuffer(idx, dtype=np.int32, count=n, offset=34).tolist() == lengths


def test_text_that_is_not_unicode_is_counted_not_fatal(corpus: dict) -> None:
    """A lone surrogate (Parquet or a custom reader can hand one over) makes `tokenizers` raise TypeError for the
    whole batch; pack skips that one document."""
    from assay.lab.pack import _tokenize_batch, load_tokenizer

    tok = load_tokenizer(str(corpus["tokenizer"]))
    result = _tokenize_batch(["first document", "half a pair \ud800", "third"], tok)
    assert result[1] == "invalid_unicode"
    assert tok.decode(result[0][:-1]) == "first document" and tok.decode(result[2][:-1]) == "third"
    assert result[0][-1] == result[2][-1] == tok.eos_id

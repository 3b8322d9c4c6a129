"""`assay pack -f megatron` vs datatrove's MegatronDocumentTokenizer: tokens/s on the same run, same tokenizer.

    .venv/bin/python benchmarks/pack.py [--workers 1] [--vocab 16384]

Input: the real texts of tests/peers/filters_corpus.py (Debian's Python and PostgreSQL manuals, extracted with
resiliparse, cached in benchmarks/_data), made into an Assay run folder by `assay run` with no steps (not timed).
Tokenizer: a byte-level BPE the lab trains on those texts (assay.lab.tokenizer, saved as tokenizer.json: both tools
load it). Both tools write Megatron .bin/.idx with the same number of processes; the time is the wall time of each
tool's process (start-up, reading, tokenizing, writing). With one worker both write one file pair: the script says
whether the bytes are equal. Then `assay pack -t smollm2` (the GGUF vocabulary through llama.cpp) and `-f hf` for
reference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSAY = ROOT / ".venv" / "bin" / "assay"
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
sys.path.insert(0, str(ROOT / "tests" / "peers"))


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=16384)
    args = ap.parse_args()

    import filters_corpus

    from assay.lab.tokenizer import LabTokenizer

    docs = filters_corpus.real_texts("resiliparse", every=1, cache=True)
    work = Path(tempfile.mkdtemp(prefix="assay-pack-bench-"))
    src = work / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs))
    recipe = work / "recipe.yaml"
    recipe.write_text("name: plain\noutput: {format: jsonl.gz, max_records_per_file: 200}\nsteps: []\n")
    run = work / "run"
    timed([str(ASSAY), "run", str(recipe), "-i", str(src), "-o", str(run), "-w", "2"])
    tok = LabTokenizer.train((d["text"] for d in docs), vocab_size=args.vocab)
    tok_path = work / "tokenizer.json"
    tok.save(tok_path)
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"input: {len(docs)} documents, {mb:.1f} MB of text; tokenizer: byte-level BPE, {tok.vocab_size} tokens; "
          f"workers: {args.workers}")

    w = str(args.workers)
    mine = work / "assay-megatron"
    t_mine = timed([str(ASSAY), "pack", str(run), str(mine), "-t", str(tok_path), "-f", "megatron", "-w", w])
    stats = json.loads((mine / "pack.json").read_text())
    peer = work / "datatrove"
    t_peer = timed([str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / "datatrove_tokenize.py"),
                    str(run / "data"), str(tok_path), "<|eos|>", str(peer), w])
    tokens = stats["tokens"]
    print(f"assay pack -f megatron : {t_mine:6.1f} s  {tokens / t_mine:10,.0f} tokens/s  ({tokens:,} tokens; "
          f"{stats['tokens_per_second']:,.0f}/s inside the pack loop)")
    print(f"datatrove Megatron step: {t_peer:6.1f} s  {tokens / t_peer:10,.0f} tokens/s")
    print(f"ratio (datatrove time / assay time): {t_peer / t_mine:.2f}")
    if args.workers == 1:
        same = all((mine / f"train_text_document.{e}").read_bytes()
                   == (peer / "tokens" / f"00000_tokens.{e}").read_bytes() for e in ("bin", "idx"))
        print(f"identical .bin/.idx bytes: {same}")
    for extra in (["-f", "megatron", "-t", "smollm2"], ["-f", "hf", "-t", str(tok_path), "--seq-len", "2048"]):
        out = work / f"assay-{extra[1]}-{Path(extra[3]).stem}"
        t = timed([str(ASSAY), "pack", str(run), str(out), *extra, "-w", w])
        s = json.loads((out / "pack.json").read_text())
        print(f"assay pack {' '.join(extra[:2])} -t {Path(extra[3]).name}: {t:6.1f} s  "
              f"{s['tokens'] / t:10,.0f} tokens/s  (waste {s['waste_fraction']:.4%})")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()

"""Throughput of Assay's LLM backends, side by side with the engine they wrap, in the same run.

1. Local: tokens/s of ``LlamaCppBackend.generate`` (with and without the response cache) vs calling
   ``llama_cpp.Llama.create_completion`` directly with the same prompts and sampling arguments on the same loaded
   model. The runs alternate (direct, Assay, Assay+cache, direct, ...) so that load changes on a shared machine hit
   all of them alike; the best round of each is reported. Goal: overhead <= 10%.
2. HTTP: requests/s of ``OpenAIBackend`` at concurrency 1, 8 and 32 against Assay's OpenAI-compatible server on
   loopback, serving the same GGUF model (one model, so requests queue at the server), and serving an echo engine
   with a fixed 50 ms latency (what concurrency buys against a remote API).
3. With ``--transformers``: tokens/s of the same GGUF loaded by transformers on CPU torch (needs ``pip install
   gguf``), greedy, vs llama.cpp greedy on the same prompts; this is the measurement behind choosing llama.cpp.

Usage: python benchmarks/synth_throughput.py [--prompts 12] [--max-tokens 64] [--rounds 3] [--transformers]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from assay.models.llm.base import LLMRequest, SamplingParams
from assay.models.llm.cache import CachedBackend, ResponseCache
from assay.models.llm.http import OpenAIBackend
from assay.models.llm.local import LlamaCppBackend, default_threads, llama_sampling_kwargs

TOPICS = ["the sea", "gravity", "bread", "volcanoes", "chess", "rainbows", "trains", "bees", "jazz", "glaciers",
          "clocks", "mushrooms", "kites", "copper", "owls", "tides"]


def prompts(n: int) -> list[str]:
    return [f"Come up with a series of tasks about {TOPICS[i % len(TOPICS)]}:\n1. Explain how it works.\n"
            f"2. Write a short poem about it.\n3." for i in range(n)]


def bench_local(n: int, max_tokens: int, rounds: int, threads: int) -> None:
    backend = LlamaCppBackend(n_ctx=1024, n_threads=threads)
    llm = backend.llm  # the very same loaded model for both sides
    reqs = [LLMRequest.completion(p, SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=i))
            for i, p in enumerate(prompts(n))]
    backend.generate(reqs[:2])  # warm-up

    def direct() -> tuple[float, int, list[str]]:
        t = time.perf_counter()
        texts, tokens = [], 0
        for r in reqs:
            out = llm.create_completion(r.prompt, **llama_sampling_kwargs(r))
            texts.append(out["choices"][0]["text"])
            tokens += out["usage"]["completion_tokens"]
        return time.perf_counter() - t, tokens, texts

    def assay(cache_dir: Path | None) -> tuple[float, int, list[str]]:
        b = CachedBackend(backend, ResponseCache(cache_dir / "c.sqlite")) if cache_dir else backend
        t = time.perf_counter()
        out = b.generate(reqs)
        elapsed = time.perf_counter() - t
        return elapsed, sum(c.completion_tokens for c in out), [c.text for c in out]

    results: dict[str, list[float]] = {"direct": [], "assay": [], "assay+cache": []}
    for _ in range(rounds):
        sec, tok, ref = direct()
        results["direct"].append(tok / sec)
        sec, tok2, texts = assay(None)
        assert texts == ref and tok2 == tok, "same prompts, params and seeds must give the same text"
        results["assay"].append(tok2 / sec)
        with tempfile.TemporaryDirectory() as d:  # every request a cache miss: measures the cache's write cost
            sec, tok3, texts = assay(Path(d))
        assert texts == ref
        results["assay+cache"].append(tok3 / sec)
    best = {k: max(v) for k, v in results.items()}
    print(f"local backend: {n} prompts x {max_tokens} max new tokens, {threads} thread(s), {rounds} rounds "
          f"({tok} generated tokens per round)")
    for name, values in results.items():
        print(f"  {name:12s} best {best[name]:7.1f} tok/s   median {statistics.median(values):7.1f} tok/s")
    for name in ("assay", "assay+cache"):
        ratio = best[name] / best["direct"]
        print(f"  {name} / direct = {ratio:.3f}  (overhead {100 * (1 - ratio):+.1f}%)")
    backend.close()


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "assay.models.llm.server", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def bench_http(n: int, max_tokens: int, threads: int) -> None:
    for label, args, count in (("local GGUF", ("--engine", "local", "--threads", str(threads)), n),
                               ("echo, 50 ms latency", ("--engine", "echo", "--latency", "0.05"), 64)):
        proc, url = start_server(*args)
        try:
            print(f"HTTP backend -> loopback server ({label}), {count} requests, max_tokens {max_tokens}:")
            base = None
            for concurrency in (1, 8, 32):
                backend = OpenAIBackend("bench", base_url=url, concurrency=concurrency, api_key="x")
                reqs = [LLMRequest.completion(p, SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=i))
                        for i, p in enumerate(prompts(count))]
                backend.generate(reqs[:1])  # connect, warm up
                t = time.perf_counter()
                out = backend.generate(reqs)
                rps = len(reqs) / (time.perf_counter() - t)
                backend.close()
                failed = sum(not c.ok for c in out)
                base = base or rps
                print(f"  concurrency {concurrency:3d}: {rps:8.2f} req/s  ({rps / base:5.2f}x of concurrency 1"
                      f"{f', {failed} failed' if failed else ''})")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def bench_transformers(n: int, max_tokens: int, threads: int) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        print(f"transformers comparison skipped: {e}")
        return
    backend = LlamaCppBackend(n_ctx=1024, n_threads=threads)
    path = backend.path
    torch.set_num_threads(threads)
    t = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ImportError, ValueError, OSError) as e:
        print(f"transformers comparison skipped: cannot load the GGUF ({type(e).__name__}: {e})")
        return
    load_tf = time.perf_counter() - t
    t = time.perf_counter()
    backend.llm
    load_llama = time.perf_counter() - t
    ps = prompts(n)
    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    backend.generate([LLMRequest.completion(ps[0], greedy)])
    t = time.perf_counter()
    out = backend.generate([LLMRequest.completion(p, greedy) for p in ps])
    llama_tps = sum(c.completion_tokens for c in out) / (time.perf_counter() - t)
    generated = 0
    t = time.perf_counter()
    with torch.inference_mode():
        for p in ps:
            ids = tok(p, return_tensors="pt")
            res = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
            generated += res.shape[1] - ids["input_ids"].shape[1]
    tf_tps = generated / (time.perf_counter() - t)
    print(f"engine choice ({threads} thread(s), greedy, {n} prompts x {max_tokens} tokens):")
    print(f"  llama.cpp (Q4_1 GGUF)           load {load_llama:5.2f} s   {llama_tps:7.1f} tok/s")
    print(f"  transformers (GGUF dequantized) load {load_tf:5.2f} s   {tf_tps:7.1f} tok/s")
    print(f"  llama.cpp / transformers = {llama_tps / tf_tps:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--transformers", action="store_true", help="also measure transformers + gguf on CPU")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    if not args.skip_local:
        bench_local(args.prompts, args.max_tokens, args.rounds, args.threads)
    if not args.skip_http:
        bench_http(args.prompts, min(args.max_tokens, 16), args.threads)
    if args.transformers:
        bench_transformers(args.prompts, args.max_tokens, args.threads)


if __name__ == "__main__":
    main()

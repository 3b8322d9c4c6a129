"""The full quality ladder on real text: what is a token of raw crawl worth next to Assay's extraction?

    .venv/bin/python benchmarks/lab_quality_ladder.py [--tokens 48000,96000,192000] [--model micro] [--out DIR]

Corpus: the Python 3.11 documentation as Debian installs it (python3-doc). Each page exists twice: its reST source
(``_sources/**.rst.txt``, the text as authored; with its markup stripped it is the clean reference, Q = 1) and its
rendered HTML. Pages are split 10/90 by a hash of their path; the held-out set is the clean text of the held-out
pages, so no candidate contains them.

1. Ladder: a tiny GPT trained on the clean reST of the training pages, corrupted by token swap to
   Q ∈ {1, .9, .75, .5}, at three data sizes, three seeds each; the quality law is fitted to the 36 runs.
2. Candidates, trained at the largest data size, three seeds each, and placed on the ladder:
   * ``raw-crawl``: every text node of the training pages' HTML (menus, sidebars, footers...), as a WET file has it;
   * ``assay-extract``: the same pages through Assay's ``extract`` step (trafilatura, FineWeb's settings);
   * ``news-articles``: the 181 article bodies of ../shared/data/web-articles (another domain);
   * ``hidden-q0.75``: the clean corpus corrupted at Q = 0.75 with a seed the ladder never used: a control whose
     true Q is known.
Prints the ladder cells, the fitted constants with CIs, each candidate's Q and effective clean tokens, and the
runtime; writes ladder.json and the HTML report into --out. There is no peer tool for this measurement; the
control row is the check (its Q interval should contain 0.75).
"""

from __future__ import annotations

import argparse
import html.parser
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DOCS = Path("/usr/share/doc/python3.11/html")
ARTICLES = ROOT.parent / "shared" / "data" / "web-articles" / "ground-truth.json"


class _AllText(html.parser.HTMLParser):
    """Every text node outside <script>/<style>: what a naive crawl text dump (WET-like) contains."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ANN001
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


_ROLE = re.compile(r":[\w:.-]+:`(?:[^`<]*<)?([^`>]*)>?`")
_LITERAL = re.compile(r"``([^`]*)``")
_DIRECTIVE = re.compile(r"^\s*\.\. [\w:-]+::.*$|^\s*\.\. _[^:]*:.*$|^\s*:[\w-]+:.*$")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`__?")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_UNDERLINE = re.compile(r"^\s*([=\-~^*#+\"'`])\1{2,}\s*$")


def rest_to_text(source: str) -> str:
    """The authored text of a reST page without its markup: roles and literals keep their text, directive and
    option lines and section underlines go. (Extraction from HTML can only recover plain text, so the reference
    the candidates are judged against must be plain text too.)"""
    out = []
    for line in source.splitlines():
        if _DIRECTIVE.match(line) or _UNDERLINE.match(line):
            continue
        line = _STRONG.sub(r"\1", _LINK.sub(r"\1", _LITERAL.sub(r"\1", _ROLE.sub(r"\1", line))))
        out.append(line.replace("::", ":"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def raw_text(page: str) -> str:
    p = _AllText()
    p.feed(page)
    return "\n".join(p.parts)


def pages() -> list[tuple[str, str, str]]:
    """(relative path, reST source, HTML) for every page that has both."""
    out = []
    for src in sorted((DOCS / "_sources").rglob("*.txt")):
        rel = src.relative_to(DOCS / "_sources").as_posix()
        rel = rel[: -len(".rst.txt")] if rel.endswith(".rst.txt") else rel[: -len(".txt")]
        page = DOCS / f"{rel}.html"
        if page.exists():
            out.append((rel, rest_to_text(src.read_text(encoding="utf-8", errors="replace")),
                        page.read_text(encoding="utf-8", errors="replace")))
    return out


def assay_extract(htmls: list[tuple[str, str]]) -> list[str]:
    from assay.core.record import Record
    from assay.core.step import StepContext
    from assay.harvest.extract import Extract

    step = Extract(engine="trafilatura")
    ctx = StepContext()
    step.setup(ctx)
    batch = [Record(f"py-{i}", h, "html", {"url": f"https://docs.python.org/3.11/{rel}.html"})
             for i, (rel, h) in enumerate(htmls)]
    (out,) = list(step.process([batch], ctx))
    return [r.content for r in out if r.drop is None and isinstance(r.content, str)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="48000,96000,192000")
    ap.add_argument("--qualities", default="1,0.9,0.75,0.5")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default="micro")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--pages", type=int, default=160, help="training pages used (clean and candidates alike)")
    ap.add_argument("--out", default="/tmp/assay-lab-ladder")
    args = ap.parse_args()
    if not DOCS.exists():
        sys.exit(f"{DOCS} not found: apt-get install python3-doc")

    import orjson

    from assay.lab.corruption import token_swap
    from assay.lab.data import split_docs
    from assay.lab.harness import Harness
    from assay.lab.quality_ladder import place_candidates, run_ladder
    from assay.lab.report import write_report

    t0 = time.perf_counter()
    Ds = [int(float(x)) for x in args.tokens.split(",")]
    Qs = [float(x) for x in args.qualities.split(",")]
    seeds = list(range(args.seeds))
    all_pages = pages()
    train_rel, held_rel = split_docs([rel for rel, _, _ in all_pages], 0.1)
    train_set, held_set = set(train_rel[: args.pages]), set(held_rel)
    clean = [src for rel, src, _ in all_pages if rel in train_set]
    heldout = [src for rel, src, _ in all_pages if rel in held_set]
    htmls = [(rel, page) for rel, _, page in all_pages if rel in train_set]
    print(f"python docs: {len(all_pages)} pages; {len(clean)} training pages used, {len(heldout)} held out")

    t = time.perf_counter()
    candidates_text = {"raw-crawl": [raw_text(h) for _, h in htmls], "assay-extract": assay_extract(htmls)}
    if ARTICLES.exists():
        gt = json.loads(ARTICLES.read_text(encoding="utf-8"))
        candidates_text["news-articles"] = [v["articleBody"] for _, v in sorted(gt.items()) if v.get("articleBody")]
    print(f"candidates prepared in {time.perf_counter() - t:.1f} s: "
          + ", ".join(f"{k} {sum(map(len, v)):,} chars" for k, v in candidates_text.items()))

    h = Harness.build(clean, heldout, preset=args.model, vocab_size=args.vocab, eval_tokens=args.eval_tokens,
                      eval_points=3)
    d = h.describe()
    print(f"model {args.model}: {d['params']:,} parameters ({d['params_non_embedding']:,} non-embedding), "
          f"vocabulary {d['vocab_size']}, held-out {d['eval_tokens']:,} tokens, recipe {d['train']}")
    clean_seqs = h.sequences(clean)
    print(f"clean training corpus: {len(clean_seqs) * h.model.context:,} tokens")

    ladder = run_ladder(h, clean_seqs, Ds, Qs, seeds, bootstrap=args.bootstrap,
                        progress=lambda m: print("  " + m, flush=True))
    print("\nheld-out loss (mean over seeds, 95% t-interval):")
    print(f"{'D':>9} " + " ".join(f"{'Q=' + format(q, 'g'):>24}" for q in Qs))
    for D in Ds:
        cells = [ladder.cell(D, q) for q in Qs]
        print(f"{D:>9,} " + " ".join(f"{c['mean']:.4f} [{c['lo']:.4f},{c['hi']:.4f}]" for c in cells))
    print()
    print(ladder.fit.summary())
    gb = ladder.fit.interval(lambda law: law.gamma / law.beta)
    print(f"gamma/beta = {gb[0]:.3f} [{gb[1]:.3f}, {gb[2]:.3f}]")
    for note in ladder.notes:
        print("note:", note)

    cand_seqs = {name: h.sequences(docs) for name, docs in candidates_text.items()}
    hidden, _ = token_swap(clean_seqs, 0.75, h.tokenizer.vocab_size, seed=987_654, first_id=1)
    cand_seqs["hidden-q0.75"] = hidden
    D = max(Ds)
    ladder.placements = place_candidates(h, ladder.fit, cand_seqs, D, seeds, ladder_runs=ladder.runs,
                                         progress=lambda m: print("  " + m, flush=True))
    print(f"\ncandidates at D = {D:,} tokens ({args.seeds} seeds):")
    print(f"{'dataset':>15} {'loss [95% CI]':>24} {'Q [95% CI]':>24} {'D_eff clean tokens [95% CI]':>36} "
          f"{'via':>6} {'Q (law)':>8} {'epochs':>6}")
    for p in ladder.placements:
        print(f"{p.name:>15} {p.loss.mean:.4f} [{p.loss.lo:.4f},{p.loss.hi:.4f}] "
              f"{p.Q:>7.3f} [{p.Q_ci[0]:.3f},{p.Q_ci[1]:.3f}]   "
              f"{p.D_eff:>10,.0f} [{p.D_eff_ci[0]:,.0f},{p.D_eff_ci[1]:,.0f}] {p.method:>6} {p.Q_law:>8.3f} "
              f"{p.epochs:>6.2f}")
    total = time.perf_counter() - t0
    print(f"\nruntime: ladder {ladder.seconds:.0f} s ({len(ladder.runs)} runs), total {total:.0f} s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"kind": "ladder", "clean": "python-docs reST (_sources)", **ladder.to_dict()}
    (out / "ladder.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))
    print(f"report: {write_report(out)}")


if __name__ == "__main__":
    main()

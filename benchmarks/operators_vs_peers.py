"""Assay's text operators (issue 20 §3) against the peers' implementations on the same real text, with agreement
figures: Debian's Python and PostgreSQL manuals (tests/peers/filters_corpus.py; `make system-deps`), made into
mojibake and planted with near-duplicates and profanity where a check needs them.

    .venv/bin/python benchmarks/operators_vs_peers.py [--every 4] [--dj-python /tmp/dj-venv/bin/python]

Peers: ftfy (in Assay's venv), the ``simhash`` package (dev extra), and Data-Juicer 1.6.1's own ops run in a separate
virtualenv (``py-data-juicer`` pins clash with Assay's; make one with
``python3 -m venv /tmp/dj-venv && /tmp/dj-venv/bin/pip install py-data-juicer==1.6.1 aiohttp ftfy==6.3.1
simhash-pybind``). Without ``--dj-python`` the Data-Juicer rows are left out. This script also runs as
Data-Juicer's side (``--peer REQUEST.json``), importing only Data-Juicer there.
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


# -- Data-Juicer's side (runs in its own venv) ---------------------------------------------------------------------
def peer(request: dict) -> dict:
    import numpy as np

    texts = request["texts"]
    out: dict = {}
    from data_juicer.ops.mapper.fix_unicode_mapper import FixUnicodeMapper
    from data_juicer.ops.mapper.punctuation_normalization_mapper import PunctuationNormalizationMapper
    from data_juicer.ops.mapper.whitespace_normalization_mapper import WhitespaceNormalizationMapper

    out["fix_unicode"] = FixUnicodeMapper(normalization="NFC").process_batched({"text": list(request["broken"])})["text"]
    out["punctuation"] = PunctuationNormalizationMapper().process_batched({"text": list(texts)})["text"]
    out["whitespace"] = WhitespaceNormalizationMapper().process_batched({"text": list(texts)})["text"]

    from data_juicer.ops.filter.flagged_words_filter import FlaggedWordFilter
    from data_juicer.utils.constant import Fields, StatsKeys

    flt = FlaggedWordFilter(lang="en", flagged_words_dir=request["flagged_dir"])
    docs = request["flagged_texts"]
    samples = {"text": docs, Fields.stats: [{} for _ in docs]}
    flt.compute_stats_batched(samples)
    out["flagged_ratio"] = [s[StatsKeys.flagged_words_ratio] for s in samples[Fields.stats]]
    out["flagged_keep"] = list(map(bool, flt.process_batched(samples)))

    import simhash
    from data_juicer.ops.deduplicator.document_simhash_deduplicator import DocumentSimhashDeduplicator

    dd = DocumentSimhashDeduplicator(tokenization="space", window_size=request["window"], num_blocks=6,
                                     hamming_distance=4)
    sims = request["simhash_texts"]
    fps = [int(dd.compute_hash({"text": t})["__dj__simhash"]) for t in sims]
    matches = simhash.find_all(np.array(fps, dtype=np.uint64), 6, 4)
    by_fp: dict[int, list[int]] = {}
    for i, f in enumerate(fps):
        by_fp.setdefault(f, []).append(i)
    pairs = set()
    for ids in by_fp.values():
        pairs |= {(a, b) for a in ids for b in ids if a < b}
    for x, y in matches:
        for a in by_fp[int(x)]:
            for b in by_fp[int(y)]:
                pairs.add((min(a, b), max(a, b)))
    out["simhash_pairs"] = sorted(pairs)
    try:
        from data_juicer.ops.filter.token_num_filter import TokenNumFilter

        tf = TokenNumFilter(hf_tokenizer=request["minilm"], min_num=0)
        batch = {"text": list(texts), Fields.stats: [{} for _ in texts]}
        tf.compute_stats_batched(batch)
        out["token_counts"] = [s[StatsKeys.num_token] for s in batch[Fields.stats]]
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        out["token_counts_error"] = f"{type(e).__name__}: {e}"
    return out


# -- Assay's side ---------------------------------------------------------------------------------------------------
def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=4, help="every n-th page of each manual")
    ap.add_argument("--dj-python", default=None, help="python of a venv with py-data-juicer 1.6.1")
    ap.add_argument("--peer", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        json.dump(peer(json.load(open(args.peer))), sys.stdout)
        return

    import numpy as np

    sys.path.insert(0, str(ROOT / "tests" / "peers"))
    import filters_corpus
    import ftfy
    import ftfy.bad_codecs  # noqa: F401

    from assay.core.record import Record
    from assay.core.step import REGISTRY
    from assay.harvest.dedup.shingles import shingle_texts
    from assay.harvest.dedup.simhash import near_pairs, simhash_from_shingles
    from assay.harvest.filters.flagged_words import available_languages, load_word_list
    from assay.harvest.normalize import NormalizeText, normalize_whitespace

    t0 = time.time()
    docs = [d["text"] for d in filters_corpus.real_texts(every=args.every)]
    print(f"{len(docs)} pages of the Python and PostgreSQL manuals (every {args.every}th), "
          f"{sum(map(len, docs)) / 1e6:.1f} M characters; read in {time.time() - t0:.1f} s\n")
    broken = [t.encode("utf-8").decode("sloppy-windows-1252") for t in docs]
    nonascii = [i for i, t in enumerate(docs) if not t.isascii()]

    # 1. normalisation ---------------------------------------------------------------------------------------------
    fix = NormalizeText(unicode="NFC", whitespace=False)
    t = time.time()
    ours_fixed = [fix.normalize(b)[0] for b in broken]
    secs = time.time() - t
    same_as_ftfy = sum(o == ftfy.fix_text(b) for o, b in zip(ours_fixed, broken)) / len(docs)
    repaired = sum(ours_fixed[i] == ftfy.fix_text(docs[i]) for i in nonascii) / max(1, len(nonascii))
    print("normalize_text")
    print(f"  mojibake repair = ftfy.fix_text on the mojibake: {pct(same_as_ftfy)} of {len(docs)} pages "
          f"({secs:.1f} s)")
    print(f"  mojibake pages repaired to what ftfy makes of the original: {pct(repaired)} of {len(nonascii)} "
          f"pages with non-ASCII text")
    punct = NormalizeText(fix_mojibake=False, unicode=None, punctuation=True, whitespace=False)
    ours_punct = [punct.normalize(x)[0] for x in docs]
    ours_ws = [normalize_whitespace(x) for x in docs]

    # 2. flagged words ---------------------------------------------------------------------------------------------
    bad = sorted(w for w in load_word_list("en") if " " not in w and w.isalpha())
    rng = np.random.default_rng(0)
    flagged_texts = []
    for i, text in enumerate(docs):
        words = text.split(" ")
        rate = [0, 0.02, 0.04, 0.05, 0.1][i % 5]  # around Data-Juicer's 0.045 threshold
        for j in np.flatnonzero(rng.random(len(words)) < rate):
            words[j] = bad[int(rng.integers(len(bad)))].upper() + ","
        flagged_texts.append(" ".join(words))
    fw = REGISTRY.get("flagged_words")()
    recs = [Record(str(i), x) for i, x in enumerate(flagged_texts)]
    fw.process_batch(recs, None)
    ours_ratio = [r.signals["flagged_words.ratio"] for r in recs]
    ours_keep = [r.drop is None for r in recs]
    print(f"\nflagged_words: {sum(not k for k in ours_keep)} of {len(recs)} pages (with planted words) dropped at "
          f"ratio > 0.045")

    # 3. simhash ---------------------------------------------------------------------------------------------------
    from simhash import Simhash, SimhashIndex

    import re

    planted = []  # one word in 150 replaced, every space and line break kept
    for text in [d for d in docs if len(d.split()) > 300][:60]:
        parts = re.split(r"(\s+)", text)
        for i in range(0, len(parts), 300):
            if parts[i].strip():
                parts[i] = "zebra"
        planted.append("".join(parts))
    sim_texts = docs + planted
    t = time.time()
    sh = shingle_texts(sim_texts, 3)
    fps = simhash_from_shingles(sh)
    secs = time.time() - t
    t = time.time()
    ref = [Simhash([format(int(h), "016x") for h in sh.hashes[sh.starts[i]:sh.starts[i + 1]]],
                   hashfunc=lambda b: bytes(8) if b == b"test" else bytes.fromhex(b.decode())).value
           for i in range(len(sim_texts))]
    ref_secs = time.time() - t
    uniq, first = np.unique(fps, return_index=True)
    a, b, checked = near_pairs(uniq, 4, 6)
    ours_pairs = {tuple(sorted((int(first[x]), int(first[y])))) for x, y in zip(a, b)}
    index = SimhashIndex([(str(i), Simhash(int(v))) for i, v in zip(first, uniq)], k=4)
    ref_pairs = {tuple(sorted((int(i), int(j)))) for i, v in zip(first, uniq)
                 for j in index.get_near_dups(Simhash(int(v))) if int(j) != i}
    print(f"\nsimhash_dedup ({len(sim_texts)} texts: the pages and {len(planted)} planted near-copies)")
    print(f"  fingerprints equal to the simhash package's (same shingles): "
          f"{pct(sum(int(x) == y for x, y in zip(fps.tolist(), ref)) / len(ref))}; "
          f"ours {secs:.2f} s, the package {ref_secs:.2f} s")
    print(f"  near pairs (<= 4 bits) vs SimhashIndex(k=4): ours {len(ours_pairs)}, simhash {len(ref_pairs)}, "
          f"common {len(ours_pairs & ref_pairs)} ({checked} candidates checked)")
    window = 6
    sh6 = shingle_texts(sim_texts, window)
    fp6 = simhash_from_shingles(sh6)
    u6, f6 = np.unique(fp6, return_index=True)
    a6, b6, _ = near_pairs(u6, 4, 6)
    ours6 = {tuple(sorted((int(f6[x]), int(f6[y])))) for x, y in zip(a6, b6)}
    by_fp: dict[int, list[int]] = {}
    for i, f in enumerate(fp6.tolist()):
        by_fp.setdefault(f, []).append(i)
    for ids in by_fp.values():
        ours6 |= {(x, y) for x in ids for y in ids if x < y}

    # 4. token counts (MiniLM WordPiece vs transformers' tokenize, what Data-Juicer counts) ---------------------
    from transformers import AutoTokenizer

    from assay.harvest.filters.tokens import TokenCounter
    from assay.models.embeddings import packaged_minilm_path

    hf = AutoTokenizer.from_pretrained(str(packaged_minilm_path()))
    counter = TokenCounter("minilm")
    ours_tok = counter.count(docs)
    hf_tok = [len(hf.tokenize(x)) for x in docs]
    print(f"\ntoken_count (minilm): equal to transformers' len(tokenizer.tokenize(text)) on "
          f"{pct(sum(x == y for x, y in zip(ours_tok, hf_tok)) / len(docs))} of {len(docs)} pages")
    smol = TokenCounter("smollm2")
    t = time.time()
    smol_counts = smol.count(docs)
    secs = time.time() - t
    print(f"  smollm2: {sum(smol_counts)} tokens, {sum(map(len, docs)) / sum(smol_counts):.2f} characters a token, "
          f"{sum(map(len, docs)) / 1e6 / secs:.1f} M characters/s; round trip exact on "
          f"{pct(sum(smol.detokenize(smol.tokenize(x)) == x for x in docs) / len(docs))}")

    # 5. select_top vs DataComp's percentile rule --------------------------------------------------------------
    scores = np.array(ours_tok, dtype=float)
    recs = [Record(str(i), "x") for i in range(len(scores))]
    for r, s in zip(recs, scores):
        r.signals["s"] = float(s)
    with tempfile.TemporaryDirectory() as tmp:
        from assay.core.step import StepContext

        sel = REGISTRY.get("select_top")(signal="s", keep_fraction=0.3)
        out = [r for batch in sel.process([recs], StepContext(run_dir=Path(tmp))) for r in batch]
    kept = np.array([r.drop is None for r in out])
    datacomp = scores >= np.percentile(scores, 70)
    print(f"\nselect_top (top 30% by token count): {int(kept.sum())} kept; same decision as DataComp's "
          f"score >= percentile(70) on {pct(float(np.mean(kept == datacomp)))} of {len(scores)}")

    # 6. Data-Juicer ---------------------------------------------------------------------------------------------
    if not args.dj_python:
        print("\n(no --dj-python: the Data-Juicer comparisons are left out)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        fdir = Path(tmp) / "fw"
        fdir.mkdir()
        (fdir / "flagged_words.json").write_text(json.dumps({lang: sorted(load_word_list(lang))
                                                              for lang in available_languages()}))
        req = {"texts": docs, "broken": broken, "flagged_texts": flagged_texts, "flagged_dir": str(fdir),
               "simhash_texts": sim_texts, "window": window, "minilm": str(packaged_minilm_path())}
        rq = Path(tmp) / "req.json"
        rq.write_text(json.dumps(req))
        t = time.time()
        res = subprocess.run([args.dj_python, __file__, "--peer", str(rq)], capture_output=True, text=True,
                             timeout=3600)
        if res.returncode:
            print(res.stderr[-3000:])
            raise SystemExit("the Data-Juicer side failed")
        dj = json.loads(res.stdout)
    print(f"\nData-Juicer 1.6.1 ({time.time() - t:.0f} s)")
    print(f"  fix_unicode_mapper (NFC) = normalize_text(unicode: NFC, whitespace: false) on the mojibake: "
          f"{pct(sum(x == y for x, y in zip(ours_fixed, dj['fix_unicode'])) / len(docs))}")
    print(f"  punctuation_normalization_mapper = normalize_text(punctuation only): "
          f"{pct(sum(x == y for x, y in zip(ours_punct, dj['punctuation'])) / len(docs))} of pages identical")
    same_ws = sum(x == y for x, y in zip(ours_ws, dj["whitespace"])) / len(docs)
    same_words = sum(x.split() == y.split() for x, y in zip(ours_ws, dj["whitespace"])) / len(docs)
    print(f"  whitespace_normalization_mapper: identical text {pct(same_ws)}, identical words {pct(same_words)} "
          f"(Assay also strips trailing spaces and extra blank lines)")
    diffs = [abs(x - y) for x, y in zip(ours_ratio, dj["flagged_ratio"])]
    agree = sum(x == y for x, y in zip(ours_keep, dj["flagged_keep"])) / len(docs)
    print(f"  flagged_words_filter (same word lists): ratio equal on {pct(sum(d < 1e-12 for d in diffs) / len(docs))}"
          f" of pages (max difference {max(diffs):.2g}); same keep/drop on {pct(agree)}")
    djp = {tuple(p) for p in dj["simhash_pairs"]}
    jac = len(ours6 & djp) / max(1, len(ours6 | djp))
    print(f"  document_simhash_deduplicator (space tokens, window 6, 6 blocks, distance 4) vs simhash_dedup "
          f"(ngram 6): pairs ours {len(ours6)}, Data-Juicer {len(djp)}, common {len(ours6 & djp)} "
          f"(Jaccard {jac:.2f}; the features differ: Data-Juicer hashes raw space-split words with punctuation)")
    planted_idx = set(range(len(docs), len(sim_texts)))
    for name, pairs in (("ours", ours6), ("Data-Juicer", djp)):
        found = {j for p in pairs for j in p if j in planted_idx}
        print(f"    planted near-copies found by {name}: {len(found)} of {len(planted)}")
    if "token_counts" in dj:
        print(f"  token_num_filter (MiniLM tokenizer): equal counts on "
              f"{pct(sum(x == y for x, y in zip(ours_tok, dj['token_counts'])) / len(docs))}")
    else:
        print(f"  token_num_filter: {dj['token_counts_error'][:200]}")


if __name__ == "__main__":
    main()

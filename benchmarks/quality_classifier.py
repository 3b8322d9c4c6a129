"""Quality classifier benchmark: held-out accuracy and scoring speed of both embedding backends, next to peers.

The task (real text, no synthetic data): tell an article's body from the rest of its page. For each of the 181 news
and blog pages of /work/shared/data/web-articles, positives are windows of the hand-checked article body
(``ground-truth.json``) and negatives are windows of the page's other visible text (navigation, teasers, footers,
cookie banners, comment prompts) = every line of the whole-page text (Resiliparse, main_content=False) that is not
part of the article. Both sides are cut into windows of exactly the same number of words with all whitespace
flattened, so length and line layout give nothing away: only the words do. The held-out set is a fixed quarter of
the *sites* (by domain), so no site contributes to both sides of the split.

Peers, trained and timed in the same run on the same split:
* hashed backend  vs  fastText (the DCLM quality classifier's tool; word bigrams; with DCLM's settings and with
  fastText's small-data advice) when ``fasttext`` is installed, and scikit-learn's HashingVectorizer +
  LogisticRegression (the reference implementation of hashed n-grams);
* MiniLM backend  vs  sentence-transformers ``encode`` + scikit-learn LogisticRegression on the same model
  (the ratio is our overhead).

Run:  .venv/bin/python benchmarks/quality_classifier.py [--words 64] [--per-page 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import urlparse

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "web-articles"
_SPACE = re.compile(r"\s+")


def _flat(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def page_text(html: str) -> str:
    """All visible text of a page, one block per line (no list bullets, no alt texts: they would be giveaways)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse(html), main_content=False, list_bullets=False, alt_texts=False)


def boilerplate(page: str, article: str) -> str:
    """The lines of ``page`` that are not part of ``article`` (a line of 20+ characters found in the article is
    article text; shorter lines are kept only if they are not a whole article line)."""
    body = _flat(article)
    body_lines = {_flat(line) for line in article.splitlines()}
    kept = []
    for line in page.splitlines():
        line = _flat(line)
        if not line or line in body_lines or (len(line) >= 20 and line in body):
            continue
        kept.append(line)
    return " ".join(kept)


def windows(text: str, words: int, limit: int) -> list[str]:
    """Up to ``limit`` non-overlapping windows of exactly ``words`` words, spread evenly over ``text``, each cut at
    ``8 * words`` characters (Chinese and Japanese put no spaces between words: a "word" can be a whole line)."""
    tokens = text.split()
    n = len(tokens) // words
    if n == 0:
        return []
    picks = sorted({round(i * (n - 1) / max(1, limit - 1)) for i in range(min(limit, n))})
    return [" ".join(tokens[k * words:(k + 1) * words])[: 8 * words] for k in picks]


def site_of(url: str) -> str:
    host = urlparse(url).hostname or url
    parts = host.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 2 else host


def build_corpus(words: int = 64, per_page: int = 2, root: Path = SHARED) -> list[dict]:
    """Rows ``{"text", "label", "site", "page"}``: label 1 = article window, 0 = rest-of-page window."""
    truth = json.loads((root / "ground-truth.json").read_text())
    rows = []
    for key in sorted(truth):
        html_path = root / "html" / f"{key}.html.gz"
        if not html_path.exists():
            continue
        html = gzip.decompress(html_path.read_bytes()).decode("utf-8", "replace")
        article = truth[key]["articleBody"]
        site = site_of(truth[key]["url"])
        for label, text in ((1, _flat(article)), (0, boilerplate(page_text(html), article))):
            for w in windows(text, words, per_page):
                rows.append({"text": w, "label": label, "site": site, "page": key})
    return rows


def split_by_site(rows: list[dict], eval_share: int = 4) -> tuple[list[dict], list[dict]]:
    """A fixed split: sites whose crc32 is divisible by ``eval_share`` are held out (about 1/eval_share)."""
    train = [r for r in rows if zlib.crc32(r["site"].encode()) % eval_share]
    held = [r for r in rows if not zlib.crc32(r["site"].encode()) % eval_share]
    return train, held


# -- measurements --------------------------------------------------------------------------------------------------

def _accuracy(labels: list[int], scores) -> float:  # noqa: ANN001
    return sum((s >= 0.5) == bool(y) for s, y in zip(scores, labels)) / len(labels)


def _auc(labels: list[int], scores) -> float:  # noqa: ANN001
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _speed(fn, texts: list[str], repeat: int) -> dict[str, float]:  # noqa: ANN001
    """Best of ``repeat``: documents per wall-clock second, and per CPU second of this process (all threads) —
    the second is the steadier figure on a shared machine."""
    fn(texts[:8])  # warm up (model load, caches)
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn(texts)
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return {"docs_per_s": len(texts) / best_wall, "docs_per_cpu_s": len(texts) / max(best_cpu, 1e-9)}


def run_assay(backend_name: str, train: list[dict], held: list[dict], repeat: int) -> dict:
    from assay.models.embeddings import get_backend
    from assay.models.quality_classifier import train_quality_model

    t = time.perf_counter()
    model = train_quality_model([r["text"] for r in train], [r["label"] for r in train],
                                backend=get_backend(backend_name), eval_texts=[r["text"] for r in held],
                                eval_labels=[r["label"] for r in held])
    seconds = time.perf_counter() - t
    texts = [r["text"] for r in held]
    return {"accuracy": model.info["metrics"]["accuracy"], "auc": model.info["metrics"]["auc"],
            "train_s": seconds, **_speed(model.score, texts, repeat)}


def run_sklearn_hashing(train: list[dict], held: list[dict], repeat: int) -> dict:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegressionCV

    vec = HashingVectorizer(n_features=1 << 18, ngram_range=(1, 2), token_pattern=r"(?u)\w+|[^\w\s]")
    t = time.perf_counter()
    clf = LogisticRegressionCV(Cs=7, cv=3, max_iter=3000, class_weight="balanced", scoring="neg_log_loss",
                               l1_ratios=(0.0,), use_legacy_attributes=False)
    clf.fit(vec.transform([r["text"] for r in train]), [r["label"] for r in train])
    seconds = time.perf_counter() - t
    texts = [r["text"] for r in held]

    def score(batch: list[str]):  # noqa: ANN202
        return clf.predict_proba(vec.transform(batch))[:, 1]

    p = score(texts)
    labels = [r["label"] for r in held]
    return {"accuracy": _accuracy(labels, p), "auc": _auc(labels, p), "train_s": seconds,
            **_speed(score, texts, repeat)}


#: fastText settings: DCLM's quality classifier (made for ~400k documents), and fastText's own advice for small
#: data sets (its text-classification tutorial: more epochs, a higher learning rate)
FASTTEXT_SETTINGS = {"DCLM: wordNgrams=2 epoch=5": {"wordNgrams": 2, "epoch": 5, "lr": 0.1, "dim": 256, "minCount": 3},
                     "small data: wordNgrams=2 epoch=25 lr=1.0": {"wordNgrams": 2, "epoch": 25, "lr": 1.0}}


def run_fasttext(train: list[dict], held: list[dict], repeat: int, settings: dict) -> dict | None:
    try:
        import fasttext
    except ImportError:
        return None
    if not hasattr(fasttext, "train_supervised"):  # fasttext-predict (our dependency) can only predict
        return None
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for r in train:
            f.write(f"__label__{r['label']} {r['text'].lower()}\n")
    t = time.perf_counter()
    model = fasttext.train_supervised(f.name, verbose=0, thread=1, seed=0, **settings)
    seconds = time.perf_counter() - t
    Path(f.name).unlink()
    texts = [r["text"].lower() for r in held]

    def score(batch: list[str]) -> list[float]:
        labels, probs = model.predict(batch, k=2)
        return [float(p[list(lab).index("__label__1")]) if "__label__1" in lab else 0.0 for lab, p in
                zip(labels, probs)]

    p = score(texts)
    labels = [r["label"] for r in held]
    return {"accuracy": _accuracy(labels, p), "auc": _auc(labels, p), "train_s": seconds,
            **_speed(score, texts, repeat)}


def run_st_sklearn(train: list[dict], held: list[dict], repeat: int) -> dict:
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegressionCV

    from assay.models.embeddings import packaged_minilm_path

    st = SentenceTransformer(str(packaged_minilm_path()), device="cpu", local_files_only=True)
    t = time.perf_counter()
    X = st.encode([r["text"] for r in train], batch_size=64, normalize_embeddings=True)
    clf = LogisticRegressionCV(Cs=7, cv=3, max_iter=3000, class_weight="balanced", scoring="neg_log_loss",
                               l1_ratios=(0.0,), use_legacy_attributes=False)
    clf.fit(X, [r["label"] for r in train])
    seconds = time.perf_counter() - t
    texts = [r["text"] for r in held]

    def score(batch: list[str]):  # noqa: ANN202
        return clf.predict_proba(st.encode(batch, batch_size=64, normalize_embeddings=True))[:, 1]

    p = score(texts)
    labels = [r["label"] for r in held]
    return {"accuracy": _accuracy(labels, p), "auc": _auc(labels, p), "train_s": seconds,
            **_speed(score, texts, repeat)}


def _ratio(a: dict, b: dict) -> str:
    return (f"scoring speed ratio {a['docs_per_s'] / b['docs_per_s']:.3g}x (wall), "
            f"{a['docs_per_cpu_s'] / b['docs_per_cpu_s']:.3g}x (per CPU-s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=64, help="words per window (both classes)")
    ap.add_argument("--per-page", type=int, default=3, help="windows per page and class")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    ap.add_argument("--skip-minilm", action="store_true")
    args = ap.parse_args()
    if not SHARED.exists():
        sys.exit(f"{SHARED} not found: this benchmark needs the shared web-articles data")

    rows = build_corpus(args.words, args.per_page)
    train, held = split_by_site(rows)
    pos = sum(r["label"] for r in held)
    print(f"corpus: {len(rows)} windows of {args.words} words from {len({r['page'] for r in rows})} pages; "
          f"train {len(train)} ({len({r['site'] for r in train})} sites), held out {len(held)} "
          f"({len({r['site'] for r in held})} sites, {pos} article / {len(held) - pos} boilerplate)")
    print(f"{'system':58s} {'held-out acc':>12s} {'AUC':>6s} {'train s':>8s} {'score docs/s':>13s} "
          f"{'docs/CPU-s':>11s}")

    def show(label: str, m: dict | None) -> None:
        if m is None:
            print(f"{label:58s} (not installed)")
            return
        print(f"{label:58s} {m['accuracy']:12.3f} {m['auc']:6.3f} {m['train_s']:8.2f} {m['docs_per_s']:13.0f} "
              f"{m['docs_per_cpu_s']:11.0f}")

    hashed = run_assay("hashed", train, held, args.repeat)
    show("assay hashed 1-2-grams (2^18) + logreg", hashed)
    fts = {label: run_fasttext(train, held, args.repeat, settings) for label, settings in FASTTEXT_SETTINGS.items()}
    for label, ft in fts.items():
        show(f"peer: fastText {label}", ft)
    sk = run_sklearn_hashing(train, held, args.repeat)
    show("peer: sklearn HashingVectorizer + logreg", sk)
    for label, ft in fts.items():
        if ft:
            print(f"  hashed vs fastText ({label.split(':')[0]}): accuracy {hashed['accuracy'] - ft['accuracy']:+.3f}, "
                  f"AUC {hashed['auc'] - ft['auc']:+.3f}, {_ratio(hashed, ft)}")
    print(f"  hashed vs sklearn:  accuracy {hashed['accuracy'] - sk['accuracy']:+.3f}, "
          f"{_ratio(hashed, sk)}")
    if not args.skip_minilm:
        mini = run_assay("minilm", train, held, args.repeat)
        show("assay MiniLM-L6 embeddings + logreg", mini)
        st = run_st_sklearn(train, held, args.repeat)
        show("peer: sentence-transformers + sklearn logreg", st)
        print(f"  minilm vs peer:     accuracy {mini['accuracy'] - st['accuracy']:+.3f}, "
              f"{_ratio(mini, st)}")
        print(f"  minilm vs hashed:   accuracy {mini['accuracy'] - hashed['accuracy']:+.3f}, "
              f"{_ratio(mini, hashed)}")


if __name__ == "__main__":
    main()

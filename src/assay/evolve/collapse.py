"""Collapse metrics: is a synthetic set losing the diversity and the tails of the human data it came from?

Models trained generation after generation on their own outputs forget the tails of the distribution first, then
collapse towards a few modes (Shumailov et al., Nature 2024). These metrics compare a synthetic set with a human
*anchor* set, cheaply enough to compute every round:

* :func:`distinct_n` (Li et al., 2016): distinct n-grams / all n-grams over the whole set. Falls as text repeats.
* :func:`self_bleu` (Zhu et al., 2018, Texygen): mean BLEU-4 of each text against all the others as references
  (NLTK's ``sentence_bleu`` with smoothing method 1, computed in one pass over n-gram counts instead of n² BLEU
  calls). Rises as texts become alike.
* :func:`vendi_score` (Friedman & Dieng, 2023): exp of the Shannon entropy of the eigenvalues of K/n, K the cosine
  similarity matrix of the embeddings: the "effective number of distinct items" (1 = all the same, n = all
  orthogonal). Equal to the ``vendi-score`` package's ``score_K`` / ``score_dual``.
* :func:`tail_recall`: of the anchor's rare n-grams (in at most ``max_df`` anchor documents), the share that appear
  anywhere in the synthetic set; ``head_recall`` is the same for the anchor's most widespread n-grams (the top
  decile by document frequency) for contrast. Collapse shows as a falling tail recall while head recall holds.
* :func:`embedding_coverage` (Naeem et al., 2020, "Reliable fidelity and diversity metrics"): the share of anchor
  items whose k-nearest-neighbour ball (among anchor items) contains at least one synthetic item. Falls when whole
  regions of the human data are no longer represented.

Tokens are lowercased words and punctuation marks (``\\w+|[^\\w\\s]``); tail/head recall use words only.

Every metric depends on the size of the set: ten texts have a Vendi score of at most 10 and use few of the anchor's
rare words, however human they are. :func:`size_matched` therefore compares the synthetic set with *anchor
subsamples of the same size* (a bootstrap): each draw splits the anchor into a subsample ``S`` of ``m`` texts and
the rest ``R``; the anchor's baseline is ``metric(S)`` (``metric(S, R)`` for tail recall and coverage), the
synthetic value ``metric(syn)`` (``metric(syn, R)``), with ``m = min(len(syn), len(anchor) // 2)`` (larger synthetic
sets are subsampled to ``m`` per draw; ``m`` is at most 250). A metric counts as collapsed when the synthetic value is on the collapsed
side of the baseline by more than :attr:`CollapseThresholds.z` bootstrap standard deviations *and* by at least
:attr:`CollapseThresholds.min_change` of the baseline mean; the set is flagged when
:attr:`CollapseThresholds.min_metrics` metrics are. A generator trained on the whole anchor also knows ``R``: on
tail recall and coverage it can score above a fresh human sample even while collapsing, so those two flag only
severe losses; their trend over rounds is the signal to watch.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from assay.core.blas import single_threaded_blas

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation marks."""
    return _TOKEN.findall(text.lower()) if isinstance(text, str) else []


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower()) if isinstance(text, str) else []


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# -- lexical diversity --------------------------------------------------------------------------------------------
def distinct_n(texts: Iterable[str], n: int = 1) -> float:
    """Distinct n-grams / total n-grams over all ``texts`` (0.0 when there are no n-grams)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        grams = ngrams(tokenize(t), n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4,
                  epsilon: float = 0.1) -> float:
    """BLEU of one tokenised hypothesis against tokenised references, uniform weights up to ``max_n``, smoothing
    method 1 (a zero precision count becomes ``epsilon``), as NLTK's ``sentence_bleu``. Used for tests and small
    inputs; :func:`self_bleu` computes the same thing for a whole set at once."""
    numerators, denominators = [], []
    for n in range(1, max_n + 1):
        hyp = Counter(ngrams(hypothesis, n))
        best: Counter = Counter()
        for ref in references:
            for g, c in Counter(ngrams(ref, n)).items():
                if c > best[g]:
                    best[g] = c
        numerators.append(sum(min(c, best[g]) for g, c in hyp.items()))
        denominators.append(max(1, sum(hyp.values())))
    ref_lengths = [len(r) for r in references]
    return _bleu(numerators, denominators, len(hypothesis), _closest(ref_lengths, len(hypothesis)), epsilon)


def _closest(lengths: Sequence[int], hyp_len: int) -> int:
    return min(lengths, key=lambda r: (abs(r - hyp_len), r)) if lengths else 0


def _bleu(numerators: Sequence[int], denominators: Sequence[int], hyp_len: int, ref_len: int, epsilon: float) -> float:
    if not numerators or numerators[0] == 0:
        return 0.0
    if hyp_len == 0:
        return 0.0
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    log_p = 0.0
    for num, den in zip(numerators, denominators):
        log_p += math.log((num if num else epsilon) / den)
    return bp * math.exp(log_p / len(numerators))


def self_bleu(texts: Sequence[str], max_n: int = 4, sample: int | None = 1000, seed: int = 0,
              epsilon: float = 0.1) -> float:
    """Mean BLEU-``max_n`` of each text (hypothesis) against all the other texts (references).

    Exact, in time linear in the number of n-grams: for each n-gram we keep its two highest counts over the
    documents, so "the most any *other* document has" is known without comparing documents pairwise. With more than
    ``sample`` texts, that many hypotheses are drawn at random (references are always all the other texts).
    Returns 0.0 for fewer than two texts.
    """
    return _self_bleu_tokens([tokenize(t) for t in texts], max_n, sample, seed, epsilon)


def _self_bleu_tokens(docs: Sequence[Sequence[str]], max_n: int = 4, sample: int | None = 1000, seed: int = 0,
                      epsilon: float = 0.1) -> float:
    """:func:`self_bleu` of already tokenised texts."""
    if len(docs) < 2:
        return 0.0
    top: list[dict[tuple[str, ...], tuple[int, int, int]]] = []  # n-gram -> (best count, its doc, second best)
    counts: list[list[Counter]] = []
    for n in range(1, max_n + 1):
        table: dict[tuple[str, ...], tuple[int, int, int]] = {}
        per_doc = []
        for d, toks in enumerate(docs):
            c = Counter(ngrams(toks, n))
            per_doc.append(c)
            for g, k in c.items():
                b = table.get(g)
                if b is None:
                    table[g] = (k, d, 0)
                elif k > b[0]:
                    table[g] = (k, d, b[0])
                elif k > b[2]:
                    table[g] = (b[0], b[1], k)
        top.append(table)
        counts.append(per_doc)
    lengths = sorted(len(t) for t in docs)
    which = list(range(len(docs)))
    if sample is not None and len(which) > sample:
        which = sorted(random.Random(seed).sample(which, sample))
    total = 0.0
    for d in which:
        nums, dens = [], []
        for n in range(max_n):
            table = top[n]
            num = 0
            hyp = counts[n][d]
            for g, k in hyp.items():
                best, best_doc, second = table[g]
                other = second if best_doc == d else best
                num += min(k, other)
            nums.append(num)
            dens.append(max(1, sum(hyp.values())))
        total += _bleu(nums, dens, len(docs[d]), _closest_excluding(lengths, len(docs[d])), epsilon)
    return total / len(which)


def _closest_excluding(sorted_lengths: list[int], own: int) -> int:
    """The reference length closest to ``own`` (ties: the shorter) among ``sorted_lengths`` minus one ``own``."""
    i = bisect.bisect_left(sorted_lengths, own)
    others = sorted_lengths[:i] + sorted_lengths[i + 1:]  # drop one occurrence of own length
    j = bisect.bisect_left(others, own)
    cands = [others[k] for k in (j - 1, j) if 0 <= k < len(others)]
    return _closest(cands, own)


# -- embedding diversity and coverage -----------------------------------------------------------------------------
def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def vendi_score(embeddings: np.ndarray, q: float = 1.0) -> float:
    """The Vendi score of row vectors under cosine similarity (order ``q``; 1 = Shannon entropy).

    Uses the n×n similarity matrix or, when the dimension is smaller than n, the d×d matrix XᵀX/n, which has the
    same non-zero eigenvalues. Rows of zeros (empty texts) count in n but add no eigenvalue mass, as in the
    ``vendi-score`` package.
    """
    x = _unit_rows(np.atleast_2d(embeddings))
    n = x.shape[0]
    if n == 0:
        return 0.0
    return _vendi_of_kernel((x.T @ x) / n if x.shape[1] < n else (x @ x.T) / n, q)


def _vendi_of_kernel(k: np.ndarray, q: float = 1.0) -> float:
    """The Vendi score from K/n (or the dual XᵀX/n), K a cosine similarity matrix."""
    w = np.linalg.eigvalsh(k)
    p = w[w > 0]
    if q == 1:
        return float(np.exp(-(p * np.log(p)).sum()))
    if q == float("inf"):
        return float(1.0 / p.max())
    return float(np.exp(np.log((p ** q).sum()) / (1 - q)))


def embedding_coverage(anchor: np.ndarray, synthetic: np.ndarray, k: int = 5) -> float:
    """Naeem et al.'s coverage: share of anchor items with a synthetic item inside their k-NN ball (cosine distance
    to the k-th nearest other anchor item). 0.0 without synthetic items; k is capped at (anchor size - 1)."""
    a = _unit_rows(np.atleast_2d(anchor))
    s = _unit_rows(np.atleast_2d(synthetic))
    if len(a) < 2 or s.size == 0 or len(s) == 0:
        return 0.0
    return _coverage_of_similarities(a @ a.T, a @ s.T, k)


def _coverage_of_similarities(sim_aa: np.ndarray, sim_as: np.ndarray, k: int = 5) -> float:
    """:func:`embedding_coverage` from the anchor×anchor and anchor×synthetic cosine similarities."""
    if len(sim_aa) < 2 or sim_as.size == 0:
        return 0.0
    k = max(1, min(k, len(sim_aa) - 1))
    dist_aa = 1.0 - sim_aa
    np.fill_diagonal(dist_aa, np.inf)
    radius = np.partition(dist_aa, k - 1, axis=1)[:, k - 1]
    nearest_syn = (1.0 - sim_as).min(axis=1)
    return float(np.mean(nearest_syn <= radius + 1e-9))


# -- tails --------------------------------------------------------------------------------------------------------
def _doc_ngrams(texts: Iterable[str], n: int) -> list[set[tuple[str, ...]]]:
    return [set(ngrams(words(t), n)) for t in texts]


def tail_recall(anchor_texts: Sequence[str], synthetic_texts: Sequence[str], n: int = 1,
                max_df: int = 1) -> dict[str, float]:
    """How much of the anchor's rare vocabulary (word n-grams in at most ``max_df`` anchor documents) the synthetic
    set still uses: ``tail_recall``; ``head_recall`` for the top decile of anchor n-grams by document frequency;
    ``tail_size`` and ``head_size`` are how many n-grams each group has."""
    return _tail_recall_sets(_doc_ngrams(anchor_texts, n), _doc_ngrams(synthetic_texts, n), max_df)


def _tail_recall_sets(anchor_docs: Iterable[set[tuple[str, ...]]], synthetic_docs: Iterable[set[tuple[str, ...]]],
                      max_df: int = 1) -> dict[str, float]:
    """:func:`tail_recall` of per-document n-gram sets."""
    df: Counter = Counter()
    for grams in anchor_docs:
        df.update(grams)
    synthetic: set[tuple[str, ...]] = set().union(*synthetic_docs)
    tail = [g for g, c in df.items() if c <= max_df]
    ranked = sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))
    head = [g for g, _ in ranked[:max(1, len(ranked) // 10)]] if ranked else []
    return {
        "tail_recall": sum(g in synthetic for g in tail) / len(tail) if tail else 0.0,
        "head_recall": sum(g in synthetic for g in head) / len(head) if head else 0.0,
        "tail_size": float(len(tail)),
        "head_size": float(len(head)),
    }


# -- size-matched comparison and the collapse flag ----------------------------------------------------------------
#: the metrics that flag collapse, and whether a *higher* value means a more diverse set
COLLAPSE_METRICS: dict[str, bool] = {"distinct_1": True, "distinct_2": True, "self_bleu": False, "vendi": True,
                                     "tail_recall": True, "embedding_coverage": True}


@dataclass(frozen=True)
class CollapseThresholds:
    """When a metric counts as collapsed: beyond ``z`` bootstrap standard deviations of the size-matched anchor
    baseline on the collapsed side, *and* at least ``min_change`` (relative) away from its mean; the set is flagged
    when ``min_metrics`` metrics are. One lexical metric alone is not enough: a human sample that happens to hold a
    few long, repetitive texts can push distinct-1 alone past 3 standard deviations (the bootstrap distribution
    of distinct-n is skewed), while collapse moves several metrics at once. ``min_change`` keeps a large anchor
    (tiny bootstrap spread) from flagging differences nobody would call collapse."""

    z: float = 3.0
    min_change: float = 0.10
    min_metrics: int = 2

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class _Texts:
    """One set's texts prepared once for many subsample draws: tokens, uni/bigrams, word sets and, with
    embeddings, the cosine similarities within the set (``sim``) and to the anchor (``sim_anchor``, set later)."""

    def __init__(self, texts: Sequence[str], embeddings: np.ndarray | None) -> None:
        self.tokens = [tokenize(t) for t in texts]
        self.grams = {n: [ngrams(t, n) for t in self.tokens] for n in (1, 2)}
        self.words = _doc_ngrams(texts, 1)
        self.emb = None if embeddings is None else _unit_rows(np.atleast_2d(embeddings))
        self.sim = None if self.emb is None else self.emb @ self.emb.T
        self.sim_anchor: np.ndarray | None = None  # anchor × this set

    def distinct(self, idx: Sequence[int], n: int) -> float:
        total = sum(len(self.grams[n][i]) for i in idx)
        return len(set().union(*(self.grams[n][i] for i in idx))) / total if total else 0.0

    def set_metrics(self, idx: Sequence[int], seed: int) -> dict[str, float]:
        out = {"distinct_1": self.distinct(idx, 1), "distinct_2": self.distinct(idx, 2),
               "self_bleu": _self_bleu_tokens([self.tokens[i] for i in idx], seed=seed)}
        if self.sim is not None:
            out["vendi"] = _vendi_of_kernel(self.sim[np.ix_(idx, idx)] / len(idx))
        return out

    def against(self, idx: Sequence[int], reference: "_Texts", ref_idx: Sequence[int]) -> dict[str, float]:
        """The metrics of the texts ``idx`` that need a reference: the anchor texts ``ref_idx``."""
        out = {"tail_recall": _tail_recall_sets([reference.words[i] for i in ref_idx],
                                                [self.words[i] for i in idx])["tail_recall"]}
        if self.sim_anchor is not None and reference.sim is not None:
            out["embedding_coverage"] = _coverage_of_similarities(reference.sim[np.ix_(ref_idx, ref_idx)],
                                                                  self.sim_anchor[np.ix_(ref_idx, idx)])
        return out


def size_matched(synthetic_texts: Sequence[str], anchor_texts: Sequence[str],
                 synthetic_embeddings: np.ndarray | None = None, anchor_embeddings: np.ndarray | None = None,
                 n_boot: int = 100, seed: int = 0, thresholds: CollapseThresholds = CollapseThresholds(),
                 max_size: int = 250) -> dict[str, Any]:
    """Compare the synthetic set with same-size anchor subsamples (see the module docstring) and flag collapse.

    Returns ``size`` (``m``), ``n_boot``, ``thresholds``, per metric ``{synthetic, anchor_mean, anchor_lo,
    anchor_hi, z, change, collapsed}`` (``anchor_lo``/``hi``: the central 95% of the anchor subsamples; ``z`` and
    ``change`` signed so that negative is the collapsed side), ``collapsed_metrics`` and ``flagged`` (at least
    ``thresholds.min_metrics`` metrics collapsed).
    ``flagged`` is ``None`` (with a ``note``) when the anchor has fewer than 4 texts or the synthetic set fewer
    than 2: there is then nothing to compare. ``max_size`` caps ``m`` (both sides are then compared at that size)
    and the reference ``R`` at ``2 * max_size`` texts: each draw costs two eigendecompositions and two self-BLEU
    passes of ``m`` texts.
    """
    n_syn, n_anc = len(synthetic_texts), len(anchor_texts)
    m = min(n_syn, n_anc // 2, max_size)
    base: dict[str, Any] = {"size": m, "n_boot": n_boot, "thresholds": thresholds.to_dict()}
    if m < 2 or n_boot < 2:
        return {**base, "metrics": {}, "collapsed_metrics": [], "flagged": None,
                "note": f"too few texts for a size-matched comparison ({n_syn} synthetic, {n_anc} anchor; "
                        f"need at least 2 and 4)"}
    with single_threaded_blas():  # hundreds of small eigendecompositions and products
        return _size_matched(synthetic_texts, anchor_texts, synthetic_embeddings, anchor_embeddings, n_boot, seed,
                             thresholds, m, max_size, base)


def _size_matched(synthetic_texts: Sequence[str], anchor_texts: Sequence[str],
                  synthetic_embeddings: np.ndarray | None, anchor_embeddings: np.ndarray | None, n_boot: int,
                  seed: int, thresholds: CollapseThresholds, m: int, max_size: int,
                  base: dict[str, Any]) -> dict[str, Any]:
    n_syn, n_anc = len(synthetic_texts), len(anchor_texts)
    syn = _Texts(synthetic_texts, synthetic_embeddings)
    anc = _Texts(anchor_texts, anchor_embeddings)
    if syn.emb is not None and anc.emb is not None:
        syn.sim_anchor, anc.sim_anchor = anc.emb @ syn.emb.T, anc.sim
    rng = np.random.default_rng(seed)
    syn_draws: dict[str, list[float]] = {}
    anc_draws: dict[str, list[float]] = {}
    all_syn = list(range(n_syn))
    fixed_syn = syn.set_metrics(all_syn, seed) if n_syn == m else None  # the same in every draw
    for b in range(n_boot):
        perm = rng.permutation(n_anc)
        sub, rest = perm[:m].tolist(), perm[m:m + 2 * max_size].tolist()
        syn_idx = all_syn if n_syn == m else sorted(rng.choice(n_syn, m, replace=False).tolist())
        for draws, texts, idx, fixed in ((anc_draws, anc, sub, None), (syn_draws, syn, syn_idx, fixed_syn)):
            values = {**(fixed or texts.set_metrics(idx, seed + b)), **texts.against(idx, anc, rest)}
            for k, v in values.items():
                draws.setdefault(k, []).append(v)
    metrics: dict[str, dict[str, Any]] = {}
    for name, higher_is_diverse in COLLAPSE_METRICS.items():
        if name not in anc_draws:
            continue
        a = np.asarray(anc_draws[name])
        s_value = float(np.mean(syn_draws[name]))
        mean, sd = float(a.mean()), float(a.std(ddof=1))
        sign = 1.0 if higher_is_diverse else -1.0
        z = sign * (s_value - mean) / max(sd, 1e-12)
        change = sign * (s_value - mean) / abs(mean) if mean else 0.0
        metrics[name] = {"synthetic": round(s_value, 6), "anchor_mean": round(mean, 6),
                         "anchor_lo": round(float(np.percentile(a, 2.5)), 6),
                         "anchor_hi": round(float(np.percentile(a, 97.5)), 6),
                         "z": round(z, 3), "change": round(change, 4),
                         "collapsed": bool(z <= -thresholds.z and change <= -thresholds.min_change)}
    collapsed = [k for k, v in metrics.items() if v["collapsed"]]
    return {**base, "metrics": metrics, "collapsed_metrics": collapsed,
            "flagged": len(collapsed) >= thresholds.min_metrics}


# -- one call for a round -----------------------------------------------------------------------------------------
def collapse_metrics(synthetic_texts: Sequence[str], anchor_texts: Sequence[str], embedder: Any | None = None,
                     max_docs: int = 2000, seed: int = 0, n_boot: int = 100,
                     thresholds: CollapseThresholds = CollapseThresholds()) -> dict[str, Any]:
    """All the metrics for one synthetic set against its anchor, and the size-matched comparison that flags
    collapse (``size_matched``, see :func:`size_matched`; ``collapse`` is its verdict: true, false, or null when
    the sets are too small to tell). ``embedder`` is an :class:`assay.models.embeddings.EmbeddingBackend` (none:
    embedding metrics are left out). Sets larger than ``max_docs`` are subsampled (seeded) for the embedding,
    self-BLEU and size-matched metrics. The top-level values compare whole sets: read them next to the
    size-matched ones, never alone, when the sets differ in size."""
    with single_threaded_blas():  # eigendecompositions of up to max_docs² matrices
        return _collapse_metrics(synthetic_texts, anchor_texts, embedder, max_docs, seed, n_boot, thresholds)


def _collapse_metrics(synthetic_texts: Sequence[str], anchor_texts: Sequence[str], embedder: Any | None,
                      max_docs: int, seed: int, n_boot: int, thresholds: CollapseThresholds) -> dict[str, Any]:
    rng = random.Random(seed)
    syn = list(synthetic_texts)
    anc = list(anchor_texts)
    syn_s = rng.sample(syn, max_docs) if len(syn) > max_docs else syn
    anc_s = rng.sample(anc, max_docs) if len(anc) > max_docs else anc
    out: dict[str, Any] = {"n_synthetic": len(syn), "n_anchor": len(anc)}
    for name, texts in (("synthetic", syn), ("anchor", anc)):
        out[f"{name}.distinct_1"] = round(distinct_n(texts, 1), 6)
        out[f"{name}.distinct_2"] = round(distinct_n(texts, 2), 6)
    out["synthetic.self_bleu"] = round(self_bleu(syn_s, seed=seed), 6)
    out["anchor.self_bleu"] = round(self_bleu(anc_s, seed=seed), 6)
    out.update({k: round(v, 6) for k, v in tail_recall(anc, syn).items()})
    e_syn = e_anc = None
    if embedder is not None and syn_s and anc_s:
        e_syn = embedder.encode(syn_s)
        e_anc = embedder.encode(anc_s)
        out["synthetic.vendi"] = round(vendi_score(e_syn), 6)
        out["anchor.vendi"] = round(vendi_score(e_anc), 6)
        out["embedding_coverage"] = round(embedding_coverage(e_anc, e_syn), 6)
        out["embedder"] = getattr(embedder, "name", type(embedder).__name__)
    out["size_matched"] = size_matched(syn_s, anc_s, e_syn, e_anc, n_boot, seed, thresholds)
    out["collapse"] = out["size_matched"]["flagged"]
    return out

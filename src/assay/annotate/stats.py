"""Annotator-quality statistics: agreement coefficients and label aggregation.

Everything here is plain numpy on small in-memory arrays (a project's annotations), written from the definitions:

* :func:`krippendorff_alpha` — Krippendorff's α for nominal, ordinal, interval and ratio data, any number of raters,
  missing values allowed (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").
* :func:`cohen_kappa` — Cohen's κ between two raters (optionally linearly/quadratically weighted).
* :func:`fleiss_kappa` — Fleiss' κ for a fixed number of raters per item.
* :func:`majority_vote` and :func:`dawid_skene` — aggregation of crowd labels into one label per item. Dawid-Skene
  (1979) estimates one confusion matrix per annotator with EM, initialised from majority vote; its stopping rule and
  numerical guards follow the conventions of ``crowd-kit`` so that results can be compared label by label.

Labels are given as ``(item, annotator, label)`` triples; items, annotators and labels can be any hashable values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

_EPS = 1e-10  # floor for probabilities before taking logs (crowd-kit uses the same)


# -- Krippendorff's alpha ------------------------------------------------------------------------------------------
def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def krippendorff_alpha(reliability_data: Sequence[Sequence[Any]] | np.ndarray, level: str = "nominal",
                       value_domain: Sequence[Any] | None = None) -> float:
    """Krippendorff's α of a raters × units matrix; ``None``/NaN mark missing ratings.

    ``level`` is ``nominal``, ``ordinal``, ``interval`` or ``ratio``. ``value_domain`` lists the possible values in
    order (needed for ordinal data when some values never occur); by default the sorted values that occur.
    Returns NaN when there is no variation to measure agreement against (fewer than two pairable values or a single
    value used throughout).
    """
    rows = [list(r) for r in reliability_data]
    if not rows:
        return float("nan")
    n_units = max(len(r) for r in rows)
    if value_domain is None:
        seen = {v for r in rows for v in r if not _is_missing(v)}
        domain = sorted(seen)
    else:
        domain = list(value_domain)
    index = {v: i for i, v in enumerate(domain)}
    V = len(domain)
    counts = np.zeros((n_units, V), dtype=np.float64)
    for r in rows:
        for u, v in enumerate(r):
            if _is_missing(v):
                continue
            if v not in index:
                raise ValueError(f"value {v!r} is not in the value domain")
            counts[u, index[v]] += 1
    m = counts.sum(axis=1)
    pairable = counts[m >= 2]
    if pairable.size == 0:
        return float("nan")
    mu = pairable.sum(axis=1)
    # coincidence matrix: o[c, k] = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1)
    o = np.einsum("uc,uk->ck", pairable / (mu - 1)[:, None], pairable) - np.diag((pairable / (mu - 1)[:, None]).sum(0))
    n_c = o.sum(axis=0)
    n = n_c.sum()
    delta = _distance_matrix(domain, level, n_c)
    expected = (np.outer(n_c, n_c) * delta).sum()
    if n <= 1 or expected == 0:
        return float("nan")
    return float(1.0 - (n - 1) * (o * delta).sum() / expected)


def _distance_matrix(domain: list[Any], level: str, n_c: np.ndarray) -> np.ndarray:
    V = len(domain)
    if level == "nominal":
        return 1.0 - np.eye(V)
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        i = np.arange(V)
        lo, hi = np.minimum.outer(i, i), np.maximum.outer(i, i)
        between = cum[hi + 1] - cum[lo]  # sum of n_g for g from lo to hi inclusive
        return (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    values = np.asarray(domain, dtype=np.float64)
    diff = values[:, None] - values[None, :]
    if level == "interval":
        return diff ** 2
    if level == "ratio":
        total = values[:, None] + values[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total != 0, (diff / np.where(total == 0, 1, total)) ** 2, 0.0)
    raise ValueError(f"unknown level of measurement {level!r}")


def alpha_from_triples(triples: Iterable[tuple[Hashable, Hashable, Any]], level: str = "nominal",
                       value_domain: Sequence[Any] | None = None) -> float:
    """Krippendorff's α from ``(item, annotator, value)`` triples."""
    items: dict[Hashable, int] = {}
    raters: dict[Hashable, int] = {}
    cells: list[tuple[int, int, Any]] = []
    for item, rater, value in triples:
        cells.append((raters.setdefault(rater, len(raters)), items.setdefault(item, len(items)), value))
    data: list[list[Any]] = [[None] * len(items) for _ in range(len(raters))]
    for r, i, v in cells:
        data[r][i] = v
    return krippendorff_alpha(data, level, value_domain)


# -- kappas --------------------------------------------------------------------------------------------------------
def cohen_kappa(a: Sequence[Any], b: Sequence[Any], weights: str | None = None,
                labels: Sequence[Any] | None = None) -> float:
    """Cohen's κ of two raters' labels on the same items. ``weights``: None, ``linear`` or ``quadratic`` (labels
    ordered as in ``labels``, default sorted). NaN when chance agreement is perfect."""
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    if not a:
        return float("nan")
    labels = sorted(set(a) | set(b)) if labels is None else list(labels)
    idx = {v: i for i, v in enumerate(labels)}
    K = len(labels)
    confusion = np.zeros((K, K))
    for x, y in zip(a, b):
        confusion[idx[x], idx[y]] += 1
    n = confusion.sum()
    expected = np.outer(confusion.sum(1), confusion.sum(0)) / n
    i = np.arange(K)
    if weights is None:
        w = 1.0 - np.eye(K)
    elif weights == "linear":
        w = np.abs(i[:, None] - i[None, :]).astype(float)
    elif weights == "quadratic":
        w = (i[:, None] - i[None, :]).astype(float) ** 2
    else:
        raise ValueError(f"unknown weights {weights!r}")
    denom = (w * expected).sum()
    if denom == 0:
        return float("nan")
    return float(1.0 - (w * confusion).sum() / denom)


def fleiss_kappa(counts: Sequence[Sequence[int]] | np.ndarray) -> float:
    """Fleiss' κ from an items × categories matrix of how many raters chose each category; every item must have the
    same number of raters (≥ 2)."""
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        return float("nan")
    n = table.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    r = n[0]
    N = table.shape[0]
    p_j = table.sum(axis=0) / (N * r)
    P_i = ((table ** 2).sum(axis=1) - r) / (r * (r - 1))
    P_bar, P_e = P_i.mean(), (p_j ** 2).sum()
    if P_e == 1:
        return float("nan")
    return float((P_bar - P_e) / (1 - P_e))


def fleiss_table(triples: Iterable[tuple[Hashable, Hashable, Any]], raters_per_item: int | None = None,
                 labels: Sequence[Any] | None = None) -> tuple[np.ndarray, list[Any]]:
    """The items × labels count table of items that have exactly ``raters_per_item`` ratings (default: the most
    common number of ratings per item), for :func:`fleiss_kappa`."""
    per_item: dict[Hashable, list[Any]] = {}
    for item, _rater, label in triples:
        per_item.setdefault(item, []).append(label)
    if not per_item:
        return np.zeros((0, 0)), []
    if raters_per_item is None:
        sizes = [len(v) for v in per_item.values()]
        raters_per_item = max(set(sizes), key=lambda s: (sizes.count(s), s))
    labels = sorted({lab for v in per_item.values() for lab in v}) if labels is None else list(labels)
    idx = {v: i for i, v in enumerate(labels)}
    rows = []
    for values in per_item.values():
        if len(values) == raters_per_item:
            row = [0] * len(labels)
            for v in values:
                row[idx[v]] += 1
            rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(labels)), labels


# -- aggregation ---------------------------------------------------------------------------------------------------
@dataclass
class _Encoded:
    items: list[Hashable]
    workers: list[Hashable]
    labels: list[Any]
    t: np.ndarray  # item index per response
    w: np.ndarray  # worker index per response
    y: np.ndarray  # label index per response


def _encode(triples: Iterable[tuple[Hashable, Hashable, Any]], labels: Sequence[Any] | None) -> _Encoded:
    rows = list(triples)
    items: dict[Hashable, int] = {}
    workers: dict[Hashable, int] = {}
    label_list = sorted({r[2] for r in rows}) if labels is None else list(labels)
    lab = {v: i for i, v in enumerate(label_list)}
    t = np.fromiter((items.setdefault(r[0], len(items)) for r in rows), dtype=np.int64, count=len(rows))
    w = np.fromiter((workers.setdefault(r[1], len(workers)) for r in rows), dtype=np.int64, count=len(rows))
    y = np.fromiter((lab[r[2]] for r in rows), dtype=np.int64, count=len(rows))
    return _Encoded(list(items), list(workers), label_list, t, w, y)


@dataclass
class Aggregate:
    """One label per item, with the per-item label probabilities behind it."""

    labels: dict[Hashable, Any]
    probas: dict[Hashable, dict[Any, float]]
    label_order: list[Any]
    # Dawid-Skene only: prior label distribution and per-annotator confusion matrices errors[w][observed][true]
    priors: dict[Any, float] = field(default_factory=dict)
    errors: dict[Hashable, np.ndarray] = field(default_factory=dict)
    iterations: int = 0

    def annotator_accuracy(self) -> dict[Hashable, float]:
        """Dawid-Skene's estimate of each annotator's accuracy: Σ_c prior(c) · P(says c | truth c)."""
        prior = np.array([self.priors.get(c, 0.0) for c in self.label_order])
        return {w: float((np.diag(e) * prior).sum()) for w, e in self.errors.items()}


def _argmax_labels(enc: _Encoded, probas: np.ndarray) -> dict[Hashable, Any]:
    best = probas.argmax(axis=1)  # first maximum wins, in label order (as pandas idxmax does)
    return {item: enc.labels[best[i]] for i, item in enumerate(enc.items)}


def _as_aggregate(enc: _Encoded, probas: np.ndarray, **extra: Any) -> Aggregate:
    return Aggregate(
        labels=_argmax_labels(enc, probas),
        probas={item: {enc.labels[k]: float(probas[i, k]) for k in range(len(enc.labels))}
                for i, item in enumerate(enc.items)},
        label_order=list(enc.labels), **extra)


def _vote_fractions(enc: _Encoded) -> np.ndarray:
    votes = np.zeros((len(enc.items), len(enc.labels)))
    np.add.at(votes, (enc.t, enc.y), 1.0)
    return votes / votes.sum(axis=1, keepdims=True)


def majority_vote(triples: Iterable[tuple[Hashable, Hashable, Any]], labels: Sequence[Any] | None = None) -> Aggregate:
    """Most frequent label per item; ties go to the first label in ``labels`` order (default: sorted labels)."""
    enc = _encode(triples, labels)
    if len(enc.t) == 0:
        return Aggregate({}, {}, enc.labels)
    return _as_aggregate(enc, _vote_fractions(enc))


def dawid_skene(triples: Iterable[tuple[Hashable, Hashable, Any]], n_iter: int = 100, tol: float = 1e-5,
                labels: Sequence[Any] | None = None) -> Aggregate:
    """Dawid-Skene aggregation by EM.

    Initialisation: label probabilities from majority-vote fractions. M-step: per annotator, the expected counts of
    (observed label, true label), floored at 1e-10 and normalised per true label. E-step: posterior of each item's
    label from the priors and the confusion matrices, in log space. Stops after ``n_iter`` rounds or when the
    evidence lower bound per response improves by less than ``tol``.
    """
    enc = _encode(triples, labels)
    if len(enc.t) == 0:
        return Aggregate({}, {}, enc.labels)
    n_items, n_workers, K = len(enc.items), len(enc.workers), len(enc.labels)
    used = np.zeros((n_workers, K), dtype=bool)  # labels each annotator actually gave
    used[enc.w, enc.y] = True

    def m_step(probas: np.ndarray) -> np.ndarray:
        counts = np.zeros((n_workers, K, K))  # [worker, observed, true]
        np.add.at(counts, (enc.w, enc.y), probas[enc.t])
        counts = np.where(used[:, :, None], np.maximum(counts, _EPS), 0.0)
        return counts / counts.sum(axis=1, keepdims=True)

    def e_step(priors: np.ndarray, errors: np.ndarray) -> np.ndarray:
        log_lik = np.zeros((n_items, K))
        np.add.at(log_lik, enc.t, np.log2(errors[enc.w, enc.y]))
        log_lik += np.log2(np.maximum(priors, _EPS))
        scaled = np.exp2(log_lik - log_lik.max(axis=1, keepdims=True))
        return scaled / scaled.sum(axis=1, keepdims=True)

    def elbo(probas: np.ndarray, priors: np.ndarray, errors: np.ndarray) -> float:
        per_response = np.log(errors[enc.w, enc.y]) + np.log(np.maximum(priors, _EPS))
        joint = (probas[enc.t] * per_response).sum()
        p = np.maximum(probas, _EPS)
        return float(joint - (np.log(p) * p).sum())

    probas = _vote_fractions(enc)
    priors = probas.mean(axis=0)
    errors = m_step(probas)
    loss = -np.inf
    iterations = 0
    for _ in range(n_iter):
        iterations += 1
        probas = e_step(priors, errors)
        priors = probas.mean(axis=0)
        errors = m_step(probas)
        new_loss = elbo(probas, priors, errors) / len(enc.t)
        if new_loss - loss < tol:
            break
        loss = new_loss
    probas = np.maximum(probas, _EPS)  # the reference floors the returned probabilities as well
    return _as_aggregate(enc, probas, priors={enc.labels[k]: float(priors[k]) for k in range(K)},
                         errors={enc.workers[j]: errors[j] for j in range(n_workers)}, iterations=iterations)


# -- per-annotator quality -----------------------------------------------------------------------------------------
def agreement_with_consensus(triples: Sequence[tuple[Hashable, Hashable, Any]],
                             consensus: dict[Hashable, Any]) -> dict[Hashable, tuple[int, float]]:
    """Per annotator: (number of labels on items with a consensus, share of them equal to the consensus)."""
    hits: dict[Hashable, list[int]] = {}
    for item, worker, label in triples:
        if item in consensus:
            h = hits.setdefault(worker, [0, 0])
            h[0] += 1
            h[1] += int(label == consensus[item])
    return {w: (n, k / n) for w, (n, k) in hits.items()}


def leave_one_out_agreement(triples: Sequence[tuple[Hashable, Hashable, Any]]) -> dict[Hashable, tuple[int, float]]:
    """Per annotator: agreement with the majority of the *other* annotators of the same item (items where the others
    tie or nobody else labelled are left out), so an annotator's own vote never props up their score."""
    per_item: dict[Hashable, list[tuple[Hashable, Any]]] = {}
    for item, worker, label in triples:
        per_item.setdefault(item, []).append((worker, label))
    hits: dict[Hashable, list[int]] = {}
    for votes in per_item.values():
        for j, (worker, label) in enumerate(votes):
            others: dict[Any, int] = {}
            for k, (_w, other) in enumerate(votes):
                if k != j:
                    others[other] = others.get(other, 0) + 1
            if not others:
                continue
            top = max(others.values())
            winners = [v for v, c in others.items() if c == top]
            if len(winners) != 1:
                continue
            h = hits.setdefault(worker, [0, 0])
            h[0] += 1
            h[1] += int(label == winners[0])
    return {w: (n, k / n) for w, (n, k) in hits.items()}

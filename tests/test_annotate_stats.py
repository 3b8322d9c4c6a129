"""Agreement and aggregation statistics, cross-checked against the reference packages (krippendorff, crowd-kit,
scikit-learn) on synthetic crowds whose truth we know."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.annotate import stats


def synthetic_crowd(seed: int, n_items: int = 300, n_workers: int = 12, k: int = 3, labels=("A", "B", "tie"),
                    per_item: int = 3):
    """Workers with different skills (a few spammers, one adversary) label items with a known true label."""
    rng = np.random.default_rng(seed)
    truth = {f"t{i}": labels[rng.integers(k)] for i in range(n_items)}
    skills = rng.uniform(0.55, 0.95, n_workers)
    skills[0] = 1 / k  # a spammer
    skills[1] = 0.1  # an adversary who mostly picks a wrong label
    triples = []
    for item, true in truth.items():
        for w in rng.choice(n_workers, size=per_item, replace=False):
            if rng.random() < skills[w]:
                label = true
            else:
                label = labels[rng.choice([j for j in range(k) if labels[j] != true])]
            triples.append((item, f"w{w}", label))
    return truth, triples


def to_reliability(triples, values=None):
    items = sorted({t for t, _, _ in triples})
    workers = sorted({w for _, w, _ in triples})
    ii = {t: i for i, t in enumerate(items)}
    ww = {w: i for i, w in enumerate(workers)}
    data = np.full((len(workers), len(items)), np.nan)
    for t, w, v in triples:
        data[ww[w], ii[t]] = values[v] if values else v
    return data


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_reference_package(seed, level):
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(seed)
    # Likert 1..5 ratings: a true score plus rater noise; 30 % missing
    true = rng.integers(1, 6, 80)
    data = np.clip(true[None, :] + rng.integers(-1, 2, (6, 80)) * (rng.random((6, 80)) < 0.4), 1, 5).astype(float)
    data[rng.random(data.shape) < 0.3] = np.nan
    ours = stats.krippendorff_alpha(data, level)
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert abs(ours - ref) < 1e-9
    assert 0.3 < ours < 1.0  # correlated raters agree well above chance


def test_krippendorff_alpha_value_domain_and_textbook_example():
    krippendorff = pytest.importorskip("krippendorff")
    nan = np.nan
    # the example in Krippendorff (2011) and in the krippendorff package's docstring
    data = [[nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
            [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
            [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4]]
    assert round(stats.krippendorff_alpha(data, "nominal"), 6) == 0.691358
    assert round(stats.krippendorff_alpha(data, "interval"), 6) == 0.810845
    # an unused value in the ordinal domain changes nothing for ordinal ranks, matching the package
    dom = [0, 1, 2, 3, 4, 5]
    assert abs(stats.krippendorff_alpha(data, "ordinal", dom)
               - krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=dom)) < 1e-9


def test_krippendorff_alpha_on_crowd_labels_matches_reference():
    krippendorff = pytest.importorskip("krippendorff")
    _, triples = synthetic_crowd(5)
    codes = {"A": 0, "B": 1, "tie": 2}
    ref = krippendorff.alpha(reliability_data=to_reliability(triples, codes), level_of_measurement="nominal")
    assert abs(stats.alpha_from_triples(triples, "nominal") - ref) < 1e-9


def test_krippendorff_alpha_degenerate_inputs():
    assert math.isnan(stats.krippendorff_alpha([]))
    assert math.isnan(stats.krippendorff_alpha([[1, None], [None, 2]]))  # nothing pairable
    assert math.isnan(stats.krippendorff_alpha([[3, 3], [3, 3]]))  # one value: no variation
    assert stats.krippendorff_alpha([[1, 2, 3], [1, 2, 3]]) == 1.0
    with pytest.raises(ValueError):
        stats.krippendorff_alpha([[1, 9]], value_domain=[1, 2])


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(weights):
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    a = rng.integers(1, 6, 200)
    b = np.clip(a + rng.integers(-1, 2, 200), 1, 5)
    ours = stats.cohen_kappa(list(a), list(b), weights)
    assert abs(ours - cohen_kappa_score(a, b, weights=weights)) < 1e-12


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert round(stats.fleiss_kappa(table), 3) == 0.210
    with pytest.raises(ValueError):
        stats.fleiss_kappa([[1, 1], [3, 0]])


def test_fleiss_kappa_equals_two_rater_scott_pi():
    # with two raters Fleiss' kappa is Scott's pi; check it against a direct computation
    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, 150)
    b = np.where(rng.random(150) < 0.7, a, rng.integers(0, 3, 150))
    triples = [(i, "x", int(a[i])) for i in range(150)] + [(i, "y", int(b[i])) for i in range(150)]
    table, _ = stats.fleiss_table(triples)
    po = float(np.mean(a == b))
    p = np.bincount(np.concatenate([a, b]), minlength=3) / 300
    pe = float((p ** 2).sum())
    assert abs(stats.fleiss_kappa(table) - (po - pe) / (1 - pe)) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dawid_skene_matches_crowd_kit_on_every_label(seed):
    pd = pytest.importorskip("pandas")
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    truth, triples = synthetic_crowd(seed)
    df = pd.DataFrame(triples, columns=["task", "worker", "label"])
    ref = crowdkit.DawidSkene(n_iter=100).fit(df)
    ours = stats.dawid_skene(triples, n_iter=100)
    ref_labels = ref.labels_.to_dict()
    assert ours.labels == ref_labels  # every label
    for task, row in ref.probas_.iterrows():
        for label, p in row.items():
            assert abs(ours.probas[task][label] - p) < 1e-6
    for label, p in ref.priors_.items():
        assert abs(ours.priors[label] - p) < 1e-6
    assert ours.iterations == len(ref.loss_history_)
    # and Dawid-Skene recovers the truth better than majority vote on this crowd (it learns to distrust w0 and w1)
    mv = stats.majority_vote(triples)
    ds_acc = np.mean([ours.labels[t] == truth[t] for t in truth])
    mv_acc = np.mean([mv.labels[t] == truth[t] for t in truth])
    assert ds_acc >= mv_acc
    acc = ours.annotator_accuracy()
    assert acc["w1"] < 0.3 and acc["w1"] < min(v for w, v in acc.items() if w not in ("w0", "w1"))


def test_majority_vote_matches_crowd_kit():
    pd = pytest.importorskip("pandas")
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    _, triples = synthetic_crowd(7, per_item=4)  # even counts: ties happen
    df = pd.DataFrame(triples, columns=["task", "worker", "label"])
    ref = crowdkit.MajorityVote().fit(df)
    ours = stats.majority_vote(triples)
    ties = 0
    for task, row in ref.probas_.iterrows():
        top = row.max()
        winners = sorted(label for label, p in row.items() if p == top)
        for label, p in row.items():
            assert abs(ours.probas[task][label] - p) < 1e-12
        if len(winners) == 1:
            assert ours.labels[task] == ref.labels_[task] == winners[0]
        else:  # crowd-kit breaks ties by pandas' column order; we break them by label order, documented
            ties += 1
            assert ours.labels[task] == winners[0]
    assert ties > 0


def test_agreement_helpers():
    triples = [("i1", "a", 1), ("i1", "b", 1), ("i1", "c", 0),
               ("i2", "a", 0), ("i2", "b", 0), ("i2", "c", 0),
               ("i3", "a", 1), ("i3", "b", 0)]
    consensus = stats.majority_vote(triples).labels
    agree = stats.agreement_with_consensus(triples, consensus)
    assert agree["c"] == (2, 0.5)
    loo = stats.leave_one_out_agreement(triples)
    # c: i1 others say 1 (miss), i2 others say 0 (hit); a: i1 others tie (left out), i2 hit, i3 b says 0 (miss)
    assert loo["c"] == (2, 0.5)
    assert loo["a"] == (2, 0.5)
    assert loo["b"] == (2, 0.5)
    assert stats.dawid_skene([]).labels == {}

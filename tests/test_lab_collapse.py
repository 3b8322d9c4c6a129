"""Model collapse: the Gaussian toy model against its closed-form drift, and the tiny-LM recursive run."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import digamma

from assay.lab.collapse import gaussian_collapse, lm_collapse


def test_gaussian_replace_collapses_and_accumulate_holds():
    rep = gaussian_collapse("replace", generations=500, samples=100, chains=100, seed=0)
    acc = gaussian_collapse("accumulate", generations=500, samples=100, chains=100, seed=0)
    rep_med = np.median(rep.sigma, axis=1)
    acc_med = np.median(acc.sigma, axis=1)
    # replace: σ shrinks steadily (median far below σ₀ after 500 generations)
    assert rep_med[-1] < 0.3 * rep.sigma0
    assert rep_med[500] < rep_med[250] < rep_med[100] < rep_med[0]
    # accumulate: the median chain stays within 10% of σ₀ at every one of the 500 generations
    assert np.all(np.abs(acc_med / acc.sigma0 - 1.0) <= 0.10)
    assert acc.summary()["median_sigma_max_deviation"] <= 0.10
    assert acc.final_within(0.10) > rep.final_within(0.10) + 0.5


def test_replace_drift_matches_the_chi_square_closed_form():
    # with the unbiased estimator, log(σ̂²_{t+1}/σ̂²_t) = log(χ²_{M-1}/(M-1)), whose mean is
    # ψ((M-1)/2) + log 2 − log(M-1): the expected log-variance after g generations is g times that
    M, g, chains = 20, 50, 4000
    rep = gaussian_collapse("replace", generations=g, samples=M, chains=chains, seed=1)
    step = digamma((M - 1) / 2) + np.log(2) - np.log(M - 1)
    # generation 0 is itself one such draw from the true σ₀ = 1
    expected = (g + 1) * step
    observed = np.log(rep.sigma[-1] ** 2).mean()
    sd = np.log(rep.sigma[-1] ** 2).std() / np.sqrt(chains)
    assert observed == pytest.approx(expected, abs=4 * sd)


def test_accumulate_statistics_equal_refitting_on_all_samples():
    """The pooled running statistics give exactly what refitting on every stored sample gives."""
    acc = gaussian_collapse("accumulate", generations=30, samples=10, chains=1, seed=7)
    rng = np.random.default_rng(7)  # replay the same random stream, storing every sample
    pool = list(rng.normal(0.0, 1.0, size=(1, 10))[0])
    mu, sd = np.mean(pool), np.std(pool, ddof=1)
    assert acc.sigma[0, 0] == pytest.approx(sd)
    for g in range(1, 31):
        pool.extend(rng.normal(np.array([[mu]]), np.array([[sd]]), size=(1, 10))[0])
        mu, sd = np.mean(pool), np.std(pool, ddof=1)
        assert acc.mu[g, 0] == pytest.approx(mu, abs=1e-12)
        assert acc.sigma[g, 0] == pytest.approx(sd, rel=1e-10)


def test_gaussian_arguments_are_checked():
    with pytest.raises(ValueError):
        gaussian_collapse("sometimes")
    with pytest.raises(ValueError):
        gaussian_collapse("replace", samples=1)


def test_lm_recursive_training_on_its_own_samples_degrades():
    from assay.lab.harness import Harness

    docs = [("The committee met on Tuesday to discuss the budget. Members agreed the plan needs more data. "
             f"Item {i}: the report was approved after a short debate about costs and schedules. ") * 3
            for i in range(80)]
    h = Harness.build(docs[:60], docs[60:], preset="nano", vocab_size=300, eval_tokens=1024, eval_points=1)
    real = h.sequences(docs[:60])[:64]
    rep = lm_collapse(h, real, generations=2, mode="replace", epochs=2.0, seed=0)
    acc = lm_collapse(h, real, generations=2, mode="accumulate", epochs=2.0, seed=0)
    assert [g["synthetic_fraction"] for g in rep.generations] == [0.0, 1.0, 1.0]
    assert [g["pool_tokens"] for g in acc.generations] == [64 * 32, 128 * 32, 192 * 32]
    assert acc.generations[2]["synthetic_fraction"] == pytest.approx(2 / 3, abs=1e-3)
    # generation 0 is the same run in both modes; a model trained only on samples is worse on real text
    assert rep.losses()[0] == acc.losses()[0]
    assert rep.losses()[2] > rep.losses()[0]
    assert acc.losses()[2] < rep.losses()[2]

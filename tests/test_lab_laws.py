"""Closed forms of the scaling laws, checked against hand-derived values and against brute-force optimisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from assay.lab.laws import (
    CHINCHILLA_2022,
    MUENNIGHOFF_R_D_STAR,
    ChinchillaLaw,
    DataConstrainedLaw,
    QualityLaw,
    effective_repeated,
)


# -- Chinchilla (Hoffmann et al. 2022) -----------------------------------------------------------------------------


def test_chinchilla_exponents_match_the_paper_table():
    # approach 3: a = β/(α+β) = 0.28/0.62, b = α/(α+β) = 0.34/0.62; the paper's Table 2 prints 0.46 and 0.54
    assert CHINCHILLA_2022.a == pytest.approx(0.28 / 0.62)
    assert CHINCHILLA_2022.b == pytest.approx(0.34 / 0.62)
    assert round(CHINCHILLA_2022.a, 2) == pytest.approx(0.45, abs=0.011)  # 0.4516 → "0.46" in the paper
    assert round(CHINCHILLA_2022.b, 2) == pytest.approx(0.55, abs=0.011)
    assert CHINCHILLA_2022.a + CHINCHILLA_2022.b == pytest.approx(1.0)


def test_chinchilla_G_by_hand():
    law = CHINCHILLA_2022
    g = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    assert law.G == pytest.approx(g)
    assert law.G == pytest.approx(1.3447, rel=1e-3)  # 1.20157^(1/0.62) = exp(1.6129·0.18363) by hand


@pytest.mark.parametrize("C", [1e18, 5.76e23, 1e26])
def test_compute_optimal_closed_form_equals_brute_force(C):
    law = CHINCHILLA_2022
    n_opt, d_opt = law.compute_optimal(C)
    assert 6 * n_opt * d_opt == pytest.approx(C)
    # minimise L(N, C/(6N)) over log N numerically: the closed form must sit at the minimum
    res = minimize_scalar(lambda ln: law.loss(math.exp(ln), C / (6 * math.exp(ln))),
                          bounds=(math.log(1e3), math.log(1e15)), method="bounded",
                          options={"xatol": 1e-10})
    assert math.exp(res.x) == pytest.approx(n_opt, rel=1e-4)
    assert law.loss(n_opt, d_opt) <= law.loss(n_opt * 1.01, d_opt / 1.01)
    assert law.loss(n_opt, d_opt) <= law.loss(n_opt / 1.01, d_opt * 1.01)


def test_compute_optimal_scaling_exponents():
    law = ChinchillaLaw(A=500.0, B=2000.0, E=1.8, alpha=0.35, beta=0.37)
    n1, d1 = law.compute_optimal(1e20)
    n2, d2 = law.compute_optimal(1e22)
    assert math.log(n2 / n1) / math.log(100) == pytest.approx(law.a)
    assert math.log(d2 / d1) / math.log(100) == pytest.approx(law.b)


def test_optimal_params_for_data_inverts_compute_optimal():
    law = CHINCHILLA_2022
    n, d = law.compute_optimal(3e21)
    assert law.optimal_params_for_data(d) == pytest.approx(n, rel=1e-9)


def test_chinchilla_at_gopher_budget_gives_tens_of_billions_of_parameters():
    # the approach-3 constants put the optimum for Gopher's budget (5.76e23 FLOPs) at tens of billions of
    # parameters (the paper: "approach 3 ... smaller models"), far below Gopher's 280B
    n, d = CHINCHILLA_2022.compute_optimal(5.76e23)
    assert 2e10 < n < 5e10
    assert n * d * 6 == pytest.approx(5.76e23)


# -- Muennighoff et al. (2023) --------------------------------------------------------------------------------------


def _reference_effective(unique: float, total: float, r_star: float) -> float:
    """The paper's formula written independently: D' = U + U·R*·(1 − e^(−R/R*)), R = D/U − 1."""
    r = max(total / unique - 1.0, 0.0)
    return unique + unique * r_star * (1.0 - math.exp(-r / r_star))


@pytest.mark.parametrize("epochs,expected", [
    (1, 1.0),  # no repetition: every token is unique
    (2, 1.96823),  # 1 + 15.4·(1 − e^(−1/15.4)) = 1 + 15.4·0.062872
    (4, 3.72586),  # 1 + 15.4·(1 − e^(−3/15.4)) = 1 + 15.4·0.177004: "up to 4 epochs ≈ unique data"
    (16.4, 10.73466),  # R = R*: 1 + 15.4·(1 − 1/e) = 1 + 15.4·0.632121
])
def test_muennighoff_effective_data_values(epochs, expected):
    U = 1e9
    assert effective_repeated(U, epochs * U, MUENNIGHOFF_R_D_STAR) / U == pytest.approx(expected, rel=1e-5)
    assert effective_repeated(U, epochs * U, 15.4) == pytest.approx(_reference_effective(U, epochs * U, 15.4))


def test_muennighoff_effective_data_saturates_at_one_plus_r_star():
    U = 1.0
    assert effective_repeated(U, 1e6, 15.4) == pytest.approx(16.4, rel=1e-9)
    # the marginal value of a repeated epoch decays by 1/e every R* epochs
    gain = lambda r: effective_repeated(U, 1 + r + 1e-6, 15.4) - effective_repeated(U, 1 + r, 15.4)  # noqa: E731
    assert gain(15.4) / gain(0.0) == pytest.approx(math.exp(-1), rel=1e-3)
    # and it halves after R*·ln 2 ≈ 10.67 repetitions
    assert gain(15.4 * math.log(2)) / gain(0.0) == pytest.approx(0.5, rel=1e-3)


def test_effective_data_never_exceeds_what_was_seen():
    U = 100.0
    for total in (10.0, 50.0, 100.0, 150.0, 1000.0):
        assert effective_repeated(U, total, 15.4) <= total + 1e-9
    assert effective_repeated(U, 50.0, 15.4) == 50.0  # half an epoch: 50 tokens seen, all unique


def test_data_constrained_law_reduces_to_chinchilla_without_repetition():
    law = DataConstrainedLaw(CHINCHILLA_2022)
    N = 1e8  # well below the compute-optimal size for 1e11 tokens: no excess parameters
    assert law.loss(N, 1e11, 1e11) == pytest.approx(CHINCHILLA_2022.loss(N, 1e11))
    # repeating 4 epochs of 2.5e10 tokens costs a little; 40 epochs of 2.5e9 costs much more
    assert law.loss(N, 1e11, 2.5e10) > CHINCHILLA_2022.loss(N, 1e11)
    assert law.loss(N, 1e11, 2.5e9) > law.loss(N, 1e11, 2.5e10)


def test_excess_parameters_lose_value():
    law = DataConstrainedLaw(CHINCHILLA_2022)
    U = 1e9
    u_n = law.base.optimal_params_for_data(U)
    assert law.effective_params(U, u_n) == pytest.approx(u_n)
    big = 100 * u_n
    assert u_n < law.effective_params(U, big) < u_n * (1 + law.R_N_star)


# -- quality law (Subramanyam, Chen, Grossman 2025) ------------------------------------------------------------------


def test_quality_law_effective_data_identity():
    law = QualityLaw(B=50.0, beta=0.3, gamma=0.45, E=2.0)
    for D, Q in [(1e5, 0.5), (1e7, 0.9), (3e6, 1.0)]:
        d_eff = law.effective_data(D, Q)
        assert d_eff == pytest.approx(D * Q ** 1.5)
        # D tokens of quality Q give the same loss as D_eff clean tokens
        assert law.loss(D, Q) == pytest.approx(law.loss(d_eff, 1.0))


def test_quality_for_loss_inverts_the_law():
    law = QualityLaw(B=50.0, beta=0.3, gamma=0.45, E=2.0)
    for Q in (0.3, 0.75, 1.0, 1.4):
        assert law.quality_for_loss(law.loss(2e5, Q), 2e5) == pytest.approx(Q, rel=1e-9)
    assert law.quality_for_loss(1.9, 2e5) == math.inf  # below the floor E: no finite quality explains it
    qs = law.quality_for_loss(np.array([law.loss(1e5, 0.5), 1.0]), 1e5)
    assert qs[0] == pytest.approx(0.5) and math.isinf(qs[1])


def test_quality_law_with_size_term_and_compute_optimal():
    law = QualityLaw(B=410.7, beta=0.28, gamma=0.5, E=1.69, A=406.4, alpha=0.34)
    assert law.loss(1e11, 1.0, N=7e10) == pytest.approx(CHINCHILLA_2022.loss(7e10, 1e11))
    n1, d1 = law.compute_optimal(1e23, Q=1.0)
    assert (n1, d1) == pytest.approx(CHINCHILLA_2022.compute_optimal(1e23))
    n5, d5 = law.compute_optimal(1e23, Q=0.5)
    # noisier data makes the data term dearer (B/Q^γ): the optimum moves budget from parameters to tokens
    assert d5 > d1 and n5 < n1
    assert 6 * n5 * d5 == pytest.approx(1e23)
    with pytest.raises(ValueError):
        law.loss(1e9, 1.0)  # the N term needs N
    with pytest.raises(ValueError):
        QualityLaw(B=1.0, beta=0.3, gamma=0.5, E=1.0).compute_optimal(1e20)

"""CI-sized quality ladders on real text: corruption raises held-out loss, γ > 0, placement recovers a known Q.

The full-size version (more data sizes and qualities, a bigger model, real candidate datasets) is
``benchmarks/lab_quality_ladder.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.lab.corruption import token_swap
from doc_pages import article_bodies
from assay.lab.data import split_docs
from assay.lab.fit import FitResult
from assay.lab.harness import Harness
from assay.lab.laws import QualityLaw
from assay.lab.quality_ladder import place, place_candidates, run_ladder



@pytest.fixture(scope="module")
def articles_harness() -> tuple[Harness, np.ndarray]:
    docs = article_bodies()  # real text: Debian's Python and PostgreSQL manuals (tests/doc_pages.py)
    train, held = split_docs(docs, 0.15)
    h = Harness.build(train, held, preset="nano", vocab_size=320, eval_tokens=8192, eval_points=1)
    return h, h.sequences(train)


def test_ci_ladder_on_real_articles(articles_harness):
    h, seqs = articles_harness
    result = run_ladder(h, seqs, tokens=[8000, 16000], qualities=(1.0, 0.5), seeds=(0, 1, 2), bootstrap=30)
    assert len(result.runs) == 12
    for D in (8000, 16000):
        clean, noisy = result.cell(D, 1.0), result.cell(D, 0.5)
        assert noisy["mean"] > clean["mean"]
    clean, noisy = result.cell(16000, 1.0), result.cell(16000, 0.5)
    assert clean["hi"] < noisy["lo"], "95% intervals of Q=1 and Q=0.5 overlap"
    assert result.fit is not None and result.fit.params["gamma"] > 0
    assert any("data sizes" in n for n in result.notes)  # two D values cannot pin E and β down: said so
    data = result.to_dict()
    assert data["fit"]["effective_data"][0]["Q"] == 0.5 and data["fit"]["effective_data"][0]["D_eff_over_D"] < 1


@pytest.mark.slow
def test_ladder_places_a_corrupted_copy_near_its_true_quality(articles_harness):
    h, seqs = articles_harness
    result = run_ladder(h, seqs, tokens=[8000, 16000, 32000], qualities=(1.0, 0.75, 0.5), seeds=(0, 1, 2),
                        bootstrap=50)
    means = {q: result.cell(32000, q)["mean"] for q in (1.0, 0.75, 0.5)}
    assert means[1.0] < means[0.75] < means[0.5]
    assert result.fit.params["gamma"] > 0 and result.fit.ci["gamma"][0] > 0
    hidden, _ = token_swap(seqs, 0.75, h.tokenizer.vocab_size, seed=12345, first_id=1)
    (placed,) = place_candidates(h, result.fit, {"hidden_q75": hidden}, 32000, seeds=(0, 1, 2),
                                 ladder_runs=result.runs)
    assert placed.method == "ladder"
    assert 0.55 < placed.Q < 0.95
    assert placed.Q_ci[0] < 0.75 < placed.Q_ci[1]
    assert placed.D_eff < 32000


def test_place_inverts_a_known_law():
    law = QualityLaw(B=40.0, beta=0.3, gamma=0.5, E=2.0)
    fit = FitResult("quality", {"B": 40.0, "beta": 0.3, "gamma": 0.5, "E": 2.0}, {}, 10, 0.0, 0.0, 0,
                    fixed_size=True)
    D = 50_000
    losses = [float(law.loss(D, 0.6)) + e for e in (-0.01, 0.0, 0.01)]
    p = place(fit, "x", losses, D)
    assert p.Q == pytest.approx(0.6, rel=1e-6)
    assert p.D_eff == pytest.approx(D * 0.6 ** (0.5 / 0.3), rel=1e-6)
    assert p.Q_ci[0] <= 0.6 <= p.Q_ci[1]
    below_floor = place(fit, "y", [1.5, 1.6, 1.7], D)
    assert math.isinf(below_floor.Q) and math.isinf(below_floor.D_eff)

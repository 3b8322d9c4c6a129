"""The law-fit figure's numbers: every drawn curve is the fitted law at its runs' N, Q and U (issue 15 §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.lab import plots
from assay.lab.fit import Runs, fit_chinchilla, fit_data_constrained, fit_quality
from assay.lab.laws import CHINCHILLA_2022, DataConstrainedLaw
from test_lab_fit import quality_runs_with_model_sizes


def _rows(**cols: np.ndarray) -> list[dict[str, float]]:
    names = list(cols)
    return [dict(zip(names, map(float, values))) for values in zip(*cols.values())]


def _law_lines(fig) -> list:
    """The curves of the law (solid lines with many points), not the error bars of the runs."""
    ax = fig.axes[0]
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) >= 50]


def _assert_curves_follow_the_runs(result: dict, law, predict, keys: tuple[str, ...], rel: float) -> None:
    """Each curve: at its group's runs, the law's prediction at the runs' own design and the observed losses."""
    curves = plots.law_fit_curves(result)
    assert curves
    for c in curves:
        runs = [r for r in result["runs"] if all(plots.run_group_value(r, k) == c.group[k] for k in keys)]
        assert runs, c.group
        for r in runs:
            on_curve = float(np.exp(np.interp(math.log(r["D"]), np.log(c.D), np.log(c.loss))))
            assert on_curve == pytest.approx(float(predict(law, r)), rel=1e-3)
            assert on_curve == pytest.approx(r["loss"], rel=rel)


def test_quality_fit_figure_draws_the_law_at_each_runs_model_size():
    """The user's case: `assay lab fit … --law quality` with runs that vary N drew curves at 420–680 against data at
    3.5–5 (the plot passed Q as N)."""
    _, runs = quality_runs_with_model_sizes()
    N, D, Q, L = runs.N, runs.D, runs.Q, runs.loss
    fit = fit_quality(runs, bootstrap=0)
    assert not fit.fixed_size
    result = {"fit": fit.to_dict(), "runs": _rows(N=N, D=D, Q=Q, loss=L)}
    law = fit.law_object()
    _assert_curves_follow_the_runs(result, law, lambda lw, r: lw.loss(r["D"], r["Q"], r["N"]), ("N", "Q"), 0.02)
    fig = plots.law_fit_figure(result)
    lines = _law_lines(fig)
    assert lines
    for ln in lines:  # every curve drawn sits where the data are (3.5–5 nats here), not at hundreds
        y = np.asarray(ln.get_ydata())
        assert L.min() - 1.0 < y.min() and y.max() < L.max() + 1.0, (y.min(), y.max())
    # 12 (N, Q) groups: the legend names at most plots.MAX_CURVES of them, each a drawn curve
    handles, labels = fig.axes[0].get_legend_handles_labels()
    assert 0 < len(labels) <= plots.MAX_CURVES and all("N=" in lb and "Q=" in lb for lb in labels)
    assert plots.law_fit(result)[:4] == b"\x89PNG"


def test_chinchilla_figure_with_200_model_sizes_keeps_a_readable_legend():
    """Real sweeps have a different N for almost every run: one legend entry per N made ~200 entries."""
    rng = np.random.default_rng(1)
    N = np.exp(rng.uniform(np.log(4e7), np.log(1.6e10), 200))
    D = np.exp(rng.uniform(np.log(1e9), np.log(5e11), 200))
    L = CHINCHILLA_2022.loss(N, D) * np.exp(rng.normal(0, 0.003, 200))
    fit = fit_chinchilla(Runs(L, D, N), bootstrap=0)
    result = {"fit": fit.to_dict(), "runs": _rows(N=N, D=D, loss=L)}
    fig = plots.law_fit_figure(result)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    assert 0 < len(labels) <= plots.MAX_CURVES
    assert len(_law_lines(fig)) == len(labels)
    assert len(fig.axes) == 2  # a colour bar says which N a point's colour is
    _assert_curves_follow_the_runs(result, fit.law_object(), lambda lw, r: lw.loss(r["N"], r["D"]), ("N",), 0.02)
    # every run is still drawn
    drawn = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert drawn == 200


def test_data_constrained_figure_says_which_unique_data_each_curve_is_for():
    """The data-constrained figure overlaid runs at every U with curves drawn at one U, without saying which."""
    truth = DataConstrainedLaw(CHINCHILLA_2022, R_D_star=15.4, R_N_star=5.3)
    rows = []
    for n in (1e8, 1e9):
        rows += [(n, d, d) for d in (3e9, 3e10)]  # more single-epoch runs for the Chinchilla stage
        for u in (1e9, 1e10):
            for epochs in (1, 2, 4, 8, 16):
                rows.append((n, u * epochs, u))
    N, D, U = (np.array(c) for c in zip(*rows))
    L = truth.loss(N, D, U)
    fit = fit_data_constrained(Runs(L, D, N=N, U=U), bootstrap=0)
    result = {"fit": fit.to_dict(), "runs": _rows(N=N, D=D, U=U, loss=L)}
    curves = plots.law_fit_curves(result)
    # one curve per (N, U) with repeated data, and one per N for the single-epoch runs (U ≥ D: U is not binding)
    assert sorted((c.group["N"], c.group["U"] or 0) for c in curves) == [
        (1e8, 0), (1e8, 1e9), (1e8, 1e10), (1e9, 0), (1e9, 1e9), (1e9, 1e10)]
    _assert_curves_follow_the_runs(result, fit.law_object(), lambda lw, r: lw.loss(r["N"], r["D"], r["U"]),
                                   ("N", "U"), 0.01)
    fig = plots.law_fit_figure(result)
    _, labels = fig.axes[0].get_legend_handles_labels()
    assert sorted(labels) == sorted(c.label for c in curves)
    assert all("N=" in lb and ("U=" in lb or "no repeats" in lb) for lb in labels)

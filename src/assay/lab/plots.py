"""Figures of the lab's results, drawn from their JSON form (so a report can be rebuilt from files alone).

Every function takes the dict a lab command writes (``kind`` = fit, ladder, ablation, collapse) and returns PNG
bytes. matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def _finite(x: Any) -> bool:
    """JSON turns inf and NaN into null: treat all three as "no number"."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


def _colors(n: int) -> list[Any]:
    plt = _plt()
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]


#: at most this many law curves (and legend entries) in a fit figure; with more groups of runs, the curves are
#: drawn for evenly spaced ones and a colour bar maps the points' colour to N (or Q, U)
MAX_CURVES = 8


@dataclass
class FitCurve:
    """One curve of the fitted law, drawn for one group of runs: ``group`` holds the design values it is drawn at
    (``N``, ``Q``, ``U``; ``U = None`` for runs that do not repeat their data)."""

    group: dict[str, float | None]
    D: np.ndarray
    loss: np.ndarray
    label: str


def _group_keys(fit: dict[str, Any]) -> tuple[str, ...]:
    """The design values that, with D, fix a run's predicted loss under the fitted law."""
    if fit["law"] == "quality":
        return ("Q",) if fit.get("fixed_size", not fit["params"].get("A")) else ("N", "Q")
    if fit["law"] == "data-constrained":
        return ("N", "U")
    return ("N",)


def run_group_value(run: dict[str, Any], key: str) -> float | None:
    """A run's value of ``key`` for grouping; for ``U``, ``None`` when the run does not repeat data (``D <= U``)."""
    if key == "U":
        return float(run["U"]) if run["D"] > run["U"] * (1 + 1e-9) else None
    return float(run[key])


def _groups(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(tuple(run_group_value(r, k) for k in keys), []).append(r)
    order = lambda key: tuple((v is None, v or 0.0) for v in key)  # noqa: E731
    return dict(sorted(out.items(), key=lambda kv: order(kv[0])))


def _label(group: dict[str, float | None]) -> str:
    parts = []
    for k, v in group.items():
        if k == "Q":
            parts.append(f"Q={v:g}")
        elif k == "U":
            parts.append("U≥D (no repeats)" if v is None else f"U={v:.3g}")
        else:
            parts.append(f"{k}={v:.3g}")
    return ", ".join(parts)


def _curve_loss(law: Any, law_name: str, group: dict[str, float | None], D: np.ndarray) -> np.ndarray:
    if law_name == "quality":
        return law.loss(D, group["Q"], group.get("N"))
    if law_name == "data-constrained":
        U = group["U"]
        return law.loss(group["N"], D, D if U is None else np.minimum(D, U))
    return law.loss(group["N"], D)


def _checked_runs(result: dict[str, Any], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    runs = [r for r in result["runs"] if all(k in r for k in ("D", "loss", *keys))]
    if not runs:
        raise ValueError(f"no runs with the columns {', '.join(('D', 'loss', *keys))}")
    return runs


def law_fit_curves(result: dict[str, Any]) -> list[FitCurve]:
    """The fitted law's curve for each group of runs (same ``N``, ``Q``, ``U``: see :func:`_group_keys`) over the
    runs' range of ``D``; at most :data:`MAX_CURVES`, evenly spaced over the groups."""
    from assay.lab.laws import law_from_params

    fit = result["fit"]
    keys = _group_keys(fit)
    runs = _checked_runs(result, keys)
    law = law_from_params(fit["law"], fit["params"])
    Ds = np.array([r["D"] for r in runs], dtype=float)
    grid = np.logspace(np.log10(Ds.min()) - 0.1, np.log10(Ds.max()) + 0.3, 100)
    groups = list(_groups(runs, keys))
    if len(groups) > MAX_CURVES:
        groups = [groups[i] for i in np.unique(np.linspace(0, len(groups) - 1, MAX_CURVES).round().astype(int))]
    curves = []
    for g in groups:
        group = dict(zip(keys, g))
        curves.append(FitCurve(group, grid, np.asarray(_curve_loss(law, fit["law"], group, grid), dtype=float),
                               _label(group)))
    return curves


def law_fit_figure(result: dict[str, Any]) -> Any:
    """The figure of :func:`law_fit` (a matplotlib Figure, for tests and notebooks)."""
    plt = _plt()
    from matplotlib.colors import LogNorm, Normalize

    fit = result["fit"]
    keys = _group_keys(fit)
    groups = _groups(_checked_runs(result, keys), keys)
    curves = law_fit_curves(result)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    many = len(groups) > MAX_CURVES
    values = [g[0] for g in groups]
    by_value = len(keys) == 1 and all(v is not None for v in values)
    if by_value:  # colour = the design value itself (log scale for sizes), so a colour bar can name it
        lo, hi = min(values), max(values)
        norm = (LogNorm(lo, hi) if keys[0] != "Q" and lo > 0 and hi > lo else Normalize(lo, hi if hi > lo else lo + 1))
        cmap = plt.get_cmap("viridis")
        colors = {g: cmap(norm(g[0]) * 0.9) for g in groups}
    else:
        colors = dict(zip(groups, _colors(len(groups))))
    for g, members in groups.items():
        by_d: dict[float, list[float]] = {}
        for r in members:
            by_d.setdefault(float(r["D"]), []).append(float(r["loss"]))
        d = np.array(sorted(by_d))
        m = np.array([np.mean(by_d[x]) for x in d])
        e = np.array([np.std(by_d[x], ddof=1) if len(by_d[x]) > 1 else 0.0 for x in d])
        if e.any():
            ax.errorbar(d, m, yerr=e, fmt="none", ecolor=colors[g], capsize=3)
        ax.scatter(d, m, color=colors[g], s=18, zorder=3)
    for c in curves:
        ax.plot(c.D, c.loss, "-", color=colors[tuple(c.group[k] for k in keys)], lw=1, label=c.label)
    if many and by_value:
        from matplotlib.cm import ScalarMappable

        sm = ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label=keys[0])
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("held-out loss (nats/token)")
    title = f"{fit['law']} law fit (rms log-residual {fit['rmse_log']:.4f})"
    if many:
        title += f"\nlaw drawn for {len(curves)} of {len(groups)} groups of runs"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def law_fit(result: dict[str, Any]) -> bytes:
    """Observed held-out loss against D (one colour per group of runs: same N, Q, U) with the fitted law drawn
    through each group at the group's own N, Q and U (PNG)."""
    return _png(law_fit_figure(result))


def effective_data(result: dict[str, Any]) -> bytes:
    """``D_eff / D = Q^(γ/β)`` with its bootstrap band, and the placed candidates on it."""
    plt = _plt()
    fit = result["fit"]
    p = fit["params"]
    ratio = p["gamma"] / p["beta"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    q = np.linspace(0.3, 1.3, 200)
    ax.plot(q, q**ratio, color="black", lw=1.2, label=f"Q^(γ/β), γ/β={ratio:.2f}")
    lo_hi = fit.get("gamma_over_beta")
    if lo_hi and all(_finite(x) for x in lo_hi[1:]):
        ax.fill_between(q, q ** lo_hi[1], q ** lo_hi[2], color="grey", alpha=0.25, label="95% CI")
    for row in fit.get("effective_data", []):
        ax.plot(row["Q"], row["D_eff_over_D"], "s", color="grey")
    for color, pl in zip(_colors(max(1, len(result.get("placements", [])))), result.get("placements", [])):
        if _finite(pl["Q"]) and _finite(pl["D_eff"]):
            lo, hi = (x if _finite(x) else pl["Q"] for x in pl["Q_ci"])
            ax.errorbar(pl["Q"], pl["D_eff"] / pl["D"], fmt="o", color=color, label=pl["name"],
                        xerr=[[max(0.0, pl["Q"] - lo)], [max(0.0, hi - pl["Q"])]], capsize=3)
    ax.set_xlabel("data quality Q (1 = clean reference corpus)")
    ax.set_ylabel("effective clean tokens per token, D_eff/D")
    ax.set_title("what a token of each dataset is worth")
    ax.legend(fontsize=8)
    return _png(fig)


def loss_curves(curves: dict[str, list[dict[str, float]]], title: str = "held-out loss during training") -> bytes:
    """Held-out loss against tokens seen for named runs (dashed: training loss, smoothed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for color, (name, curve) in zip(_colors(len(curves)), curves.items()):
        ev = [(c["tokens"], c["eval_loss"]) for c in curve if "eval_loss" in c]
        if ev:
            ax.plot(*zip(*ev), "o-", color=color, label=name, ms=3)
        tr = np.array([(c["tokens"], c["train_loss"]) for c in curve])
        if len(tr) > 5:
            k = max(1, len(tr) // 20)
            smooth = np.convolve(tr[:, 1], np.ones(k) / k, mode="valid")
            ax.plot(tr[k - 1:, 0], smooth, "--", color=color, lw=0.8, alpha=0.6)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)


def ablation(result: dict[str, Any]) -> bytes:
    """Held-out loss per dataset: mean over seeds with its 95% interval, and each seed."""
    plt = _plt()
    rows = result["datasets"]
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(rows) + 1.8))
    for i, r in enumerate(rows):
        loss = r["loss"]
        lo = loss["lo"] if _finite(loss["lo"]) else loss["mean"]
        hi = loss["hi"] if _finite(loss["hi"]) else loss["mean"]
        ax.errorbar(loss["mean"], i, xerr=[[loss["mean"] - lo], [hi - loss["mean"]]], fmt="o", color="C0",
                    capsize=4)
        ax.plot(r["losses"], [i] * len(r["losses"]), "x", color="grey")
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"held-out loss after {result['tokens']:,} tokens (mean, 95% CI, seeds)")
    ax.set_title("data ablation")
    return _png(fig)


def gaussian_collapse(results: list[dict[str, Any]]) -> bytes:
    """σ/σ₀ per generation for each mode: median over chains with the 5–95% band."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for color, r in zip(("C3", "C0"), results):
        g = np.array(r["generation"])
        s0 = r["sigma0"]
        ax.plot(g, np.array(r["q50"]) / s0, color=color, label=f"{r['mode']} (median of {r['chains']} chains)")
        ax.fill_between(g, np.array(r["q05"]) / s0, np.array(r["q95"]) / s0, color=color, alpha=0.2)
    ax.axhspan(0.9, 1.1, color="grey", alpha=0.1, label="±10% of σ₀")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitted σ / σ₀")
    ax.set_title(f"Gaussian model collapse (M = {results[0]['samples']} samples per generation)")
    ax.legend(fontsize=8)
    return _png(fig)


def lm_collapse(results: list[dict[str, Any]]) -> bytes:
    """Held-out loss on real text per generation of recursive training, for each mode."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for color, r in zip(("C3", "C0"), results):
        gens = r["generations"]
        ax.plot([g["generation"] for g in gens], [g["eval_loss"] for g in gens], "o-", color=color,
                label=r["mode"])
    ax.set_xlabel("generation")
    ax.set_ylabel("held-out loss on real text")
    ax.set_title("tiny-LM recursive training")
    ax.legend(fontsize=8)
    return _png(fig)

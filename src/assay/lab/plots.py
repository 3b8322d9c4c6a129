"""Figures of the lab's results, drawn from their JSON form (so a report can be rebuilt from files alone).

Every function takes the dict a lab command writes (``kind`` = fit, ladder, ablation, collapse) and returns PNG
bytes. matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import io
import math
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


def _group_means(runs: list[dict[str, Any]], group: str) -> dict[float, dict[float, list[float]]]:
    out: dict[float, dict[float, list[float]]] = {}
    for r in runs:
        out.setdefault(r[group], {}).setdefault(r["D"], []).append(r["loss"])
    return out


def law_fit(result: dict[str, Any]) -> bytes:
    """Observed held-out loss against D (one colour per Q or N) with the fitted law drawn through it."""
    from assay.lab.laws import ChinchillaLaw, DataConstrainedLaw, QualityLaw

    plt = _plt()
    fit, runs = result["fit"], result["runs"]
    law_name, p = fit["law"], fit["params"]
    group = "Q" if law_name == "quality" else "N"
    groups = _group_means(runs, group) if all(group in r for r in runs) else {0.0: _group_means(runs, "D")}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    Ds = np.array(sorted({r["D"] for r in runs}), dtype=float)
    grid = np.logspace(np.log10(Ds.min()) - 0.1, np.log10(Ds.max()) + 0.3, 100)
    for color, (g, by_d) in zip(_colors(len(groups)), sorted(groups.items(), reverse=True)):
        d = np.array(sorted(by_d))
        m = np.array([np.mean(by_d[x]) for x in d])
        e = np.array([np.std(by_d[x], ddof=1) if len(by_d[x]) > 1 else 0.0 for x in d])
        label = f"Q={g:g}" if group == "Q" else f"N={g:.3g}"
        ax.errorbar(d, m, yerr=e, fmt="o", color=color, label=label, capsize=3)
        if law_name == "quality":
            law = QualityLaw(B=p["B"], beta=p["beta"], gamma=p["gamma"], E=p["E"], A=p.get("A", 0.0),
                             alpha=p.get("alpha", 0.0))
            ax.plot(grid, law.loss(grid, g, None if law.fixed_size else g), color=color, lw=1)
        elif law_name == "chinchilla":
            law = ChinchillaLaw(p["A"], p["B"], p["E"], p["alpha"], p["beta"])
            ax.plot(grid, law.loss(g, grid), color=color, lw=1)
        elif law_name == "data-constrained":
            law = DataConstrainedLaw(ChinchillaLaw(p["A"], p["B"], p["E"], p["alpha"], p["beta"]),
                                     p["R_D_star"], p["R_N_star"])
            us = [r["U"] for r in runs if r.get("N") == g and "U" in r]
            if us:
                ax.plot(grid, law.loss(g, grid, np.minimum(grid, min(us))), color=color, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title(f"{law_name} law fit (rms log-residual {fit['rmse_log']:.4f})")
    ax.legend(fontsize=8)
    return _png(fig)


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

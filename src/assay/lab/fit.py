"""Fitting scaling laws to training runs (Chinchilla approach 3, the quality law, the data-constrained law).

Chinchilla's approach 3 (Hoffmann et al. 2022, App. D.2) fits ``L = E + A/N^α + B/D^β`` by minimising the Huber
loss (δ = 1e-3) between the predicted and observed *log* loss, with the prediction written as a log-sum-exp of
``a - α·log N``, ``b - β·log D`` and ``e`` (``A = e^a``, ``B = e^b``, ``E = e^e``) so the optimiser works on
unconstrained scales. L-BFGS runs from every point of a grid of initialisations and the best optimum wins. The
quality law adds ``- γ·log Q`` to the data term (``L = A/N^α + B/(D^β·Q^γ) + E``) and is fitted the same way.
The data-constrained law (Muennighoff et al. 2023) is fitted in their two stages: the Chinchilla constants on
single-epoch runs, then ``R_D*`` and ``R_N*`` on all runs.

Confidence intervals come from a bootstrap over runs: runs are resampled (within each design point when the
design has replicates, e.g. seeds, so every ``(N, D, Q)`` cell stays represented), the law is refitted from the
best optima of the full fit, and the central 95% of each constant and derived quantity is reported.

The objective is scaled by ``1/δ²``: the raw Huber values (~1e-6) are below L-BFGS-B's absolute stopping
tolerance, which makes a naive fit stop at its starting point (the failure Besiroglu et al. 2024 found when
replicating approach 3).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from assay.core.blas import single_threaded_blas
from assay.lab.laws import ChinchillaLaw, DataConstrainedLaw, QualityLaw, law_from_params
from assay.lab.stats import percentile_ci

HUBER_DELTA = 1e-3
LAWS: tuple[str, ...] = ("chinchilla", "quality", "data-constrained")

#: CSV column names accepted for each quantity (case-insensitive)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "N": ("n", "params", "parameters", "model_size", "n_params"),
    "D": ("d", "tokens", "train_tokens", "data"),
    "loss": ("loss", "eval_loss", "val_loss", "heldout_loss"),
    "Q": ("q", "quality"),
    "U": ("u", "unique", "unique_tokens", "u_d"),
}


class FitError(ValueError):
    """The runs cannot identify the requested law (too few runs, no variation in N, D or Q, ...)."""


# ---------------------------------------------------------------------------------------------------------------
# runs


@dataclass
class Runs:
    """A table of finished training runs: held-out ``loss`` at ``D`` training tokens (plus ``N``, ``Q``, ``U``)."""

    loss: np.ndarray
    D: np.ndarray
    N: np.ndarray | None = None
    Q: np.ndarray | None = None
    U: np.ndarray | None = None
    skipped: int = 0  # input rows dropped as unusable (missing, non-numeric, non-positive values)

    def __len__(self) -> int:
        return len(self.loss)

    def column(self, name: str) -> np.ndarray | None:
        return getattr(self, name)

    def subset(self, idx: np.ndarray) -> "Runs":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Runs(self.loss[idx], self.D[idx], pick(self.N), pick(self.Q), pick(self.U))

    def design_keys(self) -> list[tuple[float, ...]]:
        """One key per run naming its design point (the run without its replicate seed)."""
        cols = [c for c in (self.N, self.D, self.Q, self.U) if c is not None]
        return [tuple(float(c[i]) for c in cols) for i in range(len(self))]

    def distinct(self, name: str) -> int:
        col = self.column(name)
        return 0 if col is None else len(np.unique(col))

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]]) -> "Runs":
        """Build from dicts such as CSV rows; unknown keys are ignored, unusable rows are counted in ``skipped``."""
        rows = list(rows)
        if not rows:
            raise FitError("no runs")
        keys = {k.lower().strip(): k for k in rows[0].keys() if k is not None}
        found: dict[str, str] = {}
        for quantity, aliases in COLUMN_ALIASES.items():
            for alias in (quantity.lower(), *aliases):
                if alias in keys:
                    found[quantity] = keys[alias]
                    break
        for required in ("loss", "D"):
            if required not in found:
                raise FitError(f"runs need a {required!r} column (accepted names: "
                               f"{', '.join(COLUMN_ALIASES[required])}); got {sorted(keys.values())}")
        values: dict[str, list[float]] = {q: [] for q in found}
        skipped = 0
        for row in rows:
            parsed: dict[str, float] = {}
            for quantity, key in found.items():
                try:
                    v = float(row.get(key))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    break
                if not math.isfinite(v) or v <= 0:
                    break
                parsed[quantity] = v
            else:
                for q, v in parsed.items():
                    values[q].append(v)
                continue
            skipped += 1
        if not values["loss"]:
            raise FitError(f"no usable runs ({skipped} rows had missing or non-positive values)")
        arr = {q: np.asarray(v, dtype=float) for q, v in values.items()}
        return cls(arr["loss"], arr["D"], arr.get("N"), arr.get("Q"), arr.get("U"), skipped=skipped)

    @classmethod
    def from_csv(cls, path: str | Path) -> "Runs":
        with open(path, newline="", encoding="utf-8") as f:
            lines = (line for line in f if line.strip() and not line.lstrip().startswith("#"))
            return cls.from_rows(csv.DictReader(lines))


# ---------------------------------------------------------------------------------------------------------------
# the log-sum-exp model and its Huber objective


@dataclass(frozen=True)
class _Term:
    intercept: int  # parameter index of the term's log-coefficient
    slopes: tuple[tuple[int, int], ...] = ()  # (parameter index, feature column): the term subtracts θ[p]·X[:, col]


class LogSumExpModel:
    """``log L̂ = logsumexp_k(θ[c_k] - Σ_p θ[p]·X[:, f])``: every law here except data-constrained is this form."""

    def __init__(self, names: Sequence[str], terms: Sequence[_Term]):
        self.names = tuple(names)
        self.terms = tuple(terms)

    def _terms(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        T = np.empty((X.shape[0], len(self.terms)))
        for k, term in enumerate(self.terms):
            t = np.full(X.shape[0], theta[term.intercept])
            for p, f in term.slopes:
                t = t - theta[p] * X[:, f]
            T[:, k] = t
        return T

    def predict_log(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        T = self._terms(theta, X)
        m = T.max(axis=1)
        return m + np.log(np.exp(T - m[:, None]).sum(axis=1))

    def objective(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
        """Sum of Huber losses of the log residuals (scaled by 1/δ²) and its exact gradient."""
        T = self._terms(theta, X)
        m = T.max(axis=1)
        W = np.exp(T - m[:, None])
        S = W.sum(axis=1)
        P = W / S[:, None]
        r = m + np.log(S) - y
        value, psi = _huber(r, delta)
        grad = np.zeros_like(theta)
        for k, term in enumerate(self.terms):
            wk = psi * P[:, k]
            grad[term.intercept] += wk.sum()
            for p, f in term.slopes:
                grad[p] -= (wk * X[:, f]).sum()
        scale = 1.0 / delta**2
        return value * scale, grad * scale


def _huber(r: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    a = np.abs(r)
    value = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)).sum()
    return float(value), np.clip(r, -delta, delta)


def _huber_value(r: np.ndarray, delta: float) -> float:
    return _huber(r, delta)[0] / delta**2


# ---------------------------------------------------------------------------------------------------------------
# law specifications


@dataclass(frozen=True)
class _Spec:
    """How one law maps onto the log-sum-exp model: parameter names, features, grid, bounds, readout."""

    law: str
    model: LogSumExpModel
    features: Callable[[Runs], np.ndarray]
    grid: dict[str, Sequence[float]]
    bounds: dict[str, tuple[float, float]]
    readout: Callable[[dict[str, float]], dict[str, float]]


#: Hoffmann et al.'s initialisation grid for approach 3
_EXPONENT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
_E_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
_COEF_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_GAMMA_GRID = (0.0, 0.5, 1.0, 2.0)
_COEF_BOUNDS = (-30.0, 80.0)
_EXP_BOUNDS = (0.0, 5.0)
_GAMMA_BOUNDS = (-5.0, 10.0)  # sign left free: a positive γ is a finding, not an assumption


def _e_bounds(runs: Runs) -> tuple[float, float]:
    return (-10.0, float(np.log(runs.loss.max())) + 1.0)


def _chinchilla_spec(runs: Runs) -> _Spec:
    names = ("a", "b", "e", "alpha", "beta")
    model = LogSumExpModel(names, [_Term(0, ((3, 0),)), _Term(1, ((4, 1),)), _Term(2)])
    return _Spec(
        "chinchilla", model,
        lambda r: np.column_stack([np.log(r.N), np.log(r.D)]),
        {"a": _COEF_GRID, "b": _COEF_GRID, "e": _E_GRID, "alpha": _EXPONENT_GRID, "beta": _EXPONENT_GRID},
        {"a": _COEF_BOUNDS, "b": _COEF_BOUNDS, "e": _e_bounds(runs), "alpha": _EXP_BOUNDS, "beta": _EXP_BOUNDS},
        lambda p: {"A": math.exp(p["a"]), "B": math.exp(p["b"]), "E": math.exp(p["e"]), "alpha": p["alpha"],
                   "beta": p["beta"]},
    )


def _quality_spec(runs: Runs, with_size: bool) -> _Spec:
    if with_size:
        names = ("a", "b", "e", "alpha", "beta", "gamma")
        model = LogSumExpModel(names, [_Term(0, ((3, 0),)), _Term(1, ((4, 1), (5, 2))), _Term(2)])
        features = lambda r: np.column_stack([np.log(r.N), np.log(r.D), np.log(r.Q)])  # noqa: E731
        grid = {"a": _COEF_GRID, "b": _COEF_GRID, "e": _E_GRID, "alpha": _EXPONENT_GRID, "beta": _EXPONENT_GRID,
                "gamma": _GAMMA_GRID}
        bounds = {"a": _COEF_BOUNDS, "alpha": _EXP_BOUNDS}
    else:
        names = ("b", "e", "beta", "gamma")
        model = LogSumExpModel(names, [_Term(0, ((2, 0), (3, 1))), _Term(1)])
        features = lambda r: np.column_stack([np.log(r.D), np.log(r.Q)])  # noqa: E731
        grid = {"b": _COEF_GRID, "e": _E_GRID, "beta": _EXPONENT_GRID, "gamma": _GAMMA_GRID}
        bounds = {}
    bounds.update({"b": _COEF_BOUNDS, "e": _e_bounds(runs), "beta": _EXP_BOUNDS, "gamma": _GAMMA_BOUNDS})

    def readout(p: dict[str, float]) -> dict[str, float]:
        out = {"B": math.exp(p["b"]), "E": math.exp(p["e"]), "beta": p["beta"], "gamma": p["gamma"]}
        if with_size:
            out.update(A=math.exp(p["a"]), alpha=p["alpha"])
        return out

    return _Spec("quality", model, features, grid, bounds, readout)


# ---------------------------------------------------------------------------------------------------------------
# optimisation


def _minimise(fun: Callable[[np.ndarray], Any], x0: np.ndarray, bounds: list[tuple[float, float]],
              jac: bool) -> tuple[float, np.ndarray]:
    from scipy.optimize import minimize

    x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
    res = minimize(fun, x0, jac=jac, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 20})
    value = float(res.fun) if np.isfinite(res.fun) else math.inf
    return value, np.asarray(res.x, dtype=float)


def _multi_start(objective: Callable[[np.ndarray], Any], starts: Iterable[np.ndarray],
                 bounds: list[tuple[float, float]], jac: bool, keep: int,
                 max_starts: int | None = None) -> list[tuple[float, np.ndarray]]:
    """Run L-BFGS from the starts; return the ``keep`` best distinct optima, best first.

    With ``max_starts``, only the starts with the lowest initial objective are optimised (screening a large grid
    costs one evaluation per point; a full L-BFGS run costs a hundred).
    """
    with single_threaded_blas():  # L-BFGS-B calls BLAS on tiny vectors
        return _multi_start_inner(objective, starts, bounds, jac, keep, max_starts)


def _multi_start_inner(objective: Callable[[np.ndarray], Any], starts: Iterable[np.ndarray],
                       bounds: list[tuple[float, float]], jac: bool, keep: int,
                       max_starts: int | None) -> list[tuple[float, np.ndarray]]:
    starts = [np.asarray(x0, dtype=float) for x0 in starts]
    if max_starts is not None and len(starts) > max_starts:
        def initial(x0: np.ndarray) -> float:
            v = objective(x0)
            v = v[0] if isinstance(v, tuple) else v
            return float(v) if np.isfinite(v) else math.inf
        starts = sorted(starts, key=initial)[:max_starts]
    found: list[tuple[float, np.ndarray]] = []
    for x0 in starts:
        value, x = _minimise(objective, x0, bounds, jac)
        if math.isfinite(value):
            found.append((value, x))
    found.sort(key=lambda vx: vx[0])
    distinct: list[tuple[float, np.ndarray]] = []
    for value, x in found:
        if all(np.max(np.abs(x - y)) > 1e-3 for _, y in distinct):
            distinct.append((value, x))
        if len(distinct) >= keep:
            break
    return distinct


def _grid_starts(names: Sequence[str], grid: dict[str, Sequence[float]]) -> list[np.ndarray]:
    return [np.asarray(p, dtype=float) for p in itertools.product(*(grid[n] for n in names))]


def _bootstrap_indices(runs: Runs, n_boot: int, rng: np.random.Generator) -> Iterable[np.ndarray]:
    """Resample runs with replacement, within design points when they have replicates."""
    keys = runs.design_keys()
    groups: dict[tuple[float, ...], list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    stratified = any(len(g) > 1 for g in groups.values())
    for _ in range(n_boot):
        if stratified:
            yield np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups.values()])
        else:
            yield rng.integers(0, len(runs), size=len(runs))


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class FitResult:
    """Fitted constants with bootstrap confidence intervals."""

    law: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    n_runs: int
    objective: float
    rmse_log: float  # root-mean-square residual of log loss (how well the law fits)
    bootstrap: int
    huber_delta: float = HUBER_DELTA
    boot_params: list[dict[str, float]] = field(default_factory=list, repr=False)
    fixed_size: bool = False  # quality law fitted at one model size (its E includes A/N^α)
    #: constants whose optimum sits on a search bound: the runs do not pin them down (e.g. E → 0 when the data
    #: sizes are too few or too close together to see the loss flatten)
    at_bounds: list[str] = field(default_factory=list)
    #: how the fit was made (e.g. which runs a stage used)
    notes: list[str] = field(default_factory=list)
    #: reasons not to trust the constants (e.g. residuals far above the runs' noise)
    warnings: list[str] = field(default_factory=list)

    def law_object(self, params: dict[str, float] | None = None) -> ChinchillaLaw | QualityLaw | DataConstrainedLaw:
        return law_from_params(self.law, self.params if params is None else params)

    def interval(self, fn: Callable[[Any], float]) -> tuple[float, float, float]:
        """``(point, lo, hi)`` of any quantity computed from the law (``fn(law)``), CI from the bootstrap fits."""
        point = float(fn(self.law_object()))
        samples = []
        for p in self.boot_params:
            try:
                samples.append(float(fn(self.law_object(p))))
            except (ValueError, ZeroDivisionError, OverflowError, FloatingPointError):
                continue
        lo, hi = percentile_ci(samples)
        return point, lo, hi

    def compute_optimal(self, budgets: Sequence[float], Q: float = 1.0) -> list[dict[str, float]]:
        """Compute-optimal ``N`` and ``D`` (with CIs) for each FLOP budget."""
        if self.law == "quality" and self.fixed_size:
            raise FitError("compute-optimal allocation needs runs at several model sizes (N)")
        rows = []
        for C in budgets:
            def alloc(law: Any, i: int, C: float = C) -> float:
                if isinstance(law, QualityLaw):
                    return float(law.compute_optimal(C, Q)[i])
                if isinstance(law, DataConstrainedLaw):
                    return float(law.base.compute_optimal(C)[i])
                return float(law.compute_optimal(C)[i])
            n = self.interval(lambda law: alloc(law, 0))
            d = self.interval(lambda law: alloc(law, 1))
            rows.append({"C": float(C), "N_opt": n[0], "N_lo": n[1], "N_hi": n[2], "D_opt": d[0], "D_lo": d[1],
                         "D_hi": d[2]})
        return rows

    def effective_data_table(self, qualities: Sequence[float]) -> list[dict[str, float]]:
        """``D_eff / D = Q^(γ/β)`` for each quality (quality law only)."""
        if self.law != "quality":
            raise FitError("effective clean data needs the quality law")
        rows = []
        for q in qualities:
            ratio = self.interval(lambda law, q=q: law.effective_data(1.0, q))
            rows.append({"Q": float(q), "D_eff_over_D": ratio[0], "lo": ratio[1], "hi": ratio[2]})
        return rows

    def epochs_table(self, epochs: Sequence[float] = (1, 2, 4, 8, 16, 32, 64)) -> list[dict[str, float]]:
        """Effective unique-data multiple ``D'/U_D`` after each number of epochs (data-constrained law only)."""
        if self.law != "data-constrained":
            raise FitError("the epochs table needs the data-constrained law")
        return [dict(zip(("epochs", "D_eff_over_U", "lo", "hi"),
                         (float(ep), *self.interval(lambda law, ep=ep: law.effective_data(1.0, ep)))))
                for ep in epochs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law,
            "params": self.params,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "n_runs": self.n_runs,
            "objective": self.objective,
            "rmse_log": self.rmse_log,
            "bootstrap": self.bootstrap,
            "huber_delta": self.huber_delta,
            "fixed_size": self.fixed_size,
            "at_bounds": self.at_bounds,
            "notes": self.notes,
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        lines = [f"law: {self.law}{' (fixed model size)' if self.fixed_size else ''}   runs: {self.n_runs}   "
                 f"rms log-residual: {self.rmse_log:.4f}   bootstrap: {self.bootstrap}"]
        for k, v in self.params.items():
            lo, hi = self.ci.get(k, (math.nan, math.nan))
            flag = "   (at its search bound: not identified by these runs)" if k in self.at_bounds else ""
            lines.append(f"  {k:>9} = {v:.6g}   95% CI [{lo:.6g}, {hi:.6g}]{flag}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# the fitting entry points


#: L-BFGS runs per fit: the grid points with the lowest initial objective (Hoffmann et al. ran all 5,400;
#: benchmarks/lab_fit.py checks that the screened starts reach the same optimum as all 5,400)
MAX_STARTS = 64


def _fit_lse(runs: Runs, spec: _Spec, bootstrap: int, seed: int, delta: float, keep: int = 4) -> FitResult:
    names = spec.model.names
    bounds = [spec.bounds[n] for n in names]

    def solve(r: Runs, starts: Iterable[np.ndarray], n_keep: int,
              max_starts: int | None = None) -> list[tuple[float, np.ndarray]]:
        X, y = spec.features(r), np.log(r.loss)
        return _multi_start(lambda th: spec.model.objective(th, X, y, delta), starts, bounds, True, n_keep,
                            max_starts)

    optima = solve(runs, _grid_starts(names, spec.grid), keep, MAX_STARTS)
    if not optima:
        raise FitError("the optimiser found no finite optimum")
    best_value, best = optima[0]
    point = spec.readout(dict(zip(names, map(float, best))))
    resid = spec.model.predict_log(best, spec.features(runs)) - np.log(runs.loss)

    boot: list[dict[str, float]] = []
    rng = np.random.default_rng(seed)
    for idx in _bootstrap_indices(runs, bootstrap, rng):
        sub = runs.subset(idx)
        found = solve(sub, [x for _, x in optima], 1)
        if found:
            boot.append(spec.readout(dict(zip(names, map(float, found[0][1])))))
    ci = {k: percentile_ci(b[k] for b in boot) for k in point}
    natural = {"a": "A", "b": "B", "e": "E"}
    at_bounds = [natural.get(n, n) for n, x, (lo, hi) in zip(names, best, bounds)
                 if min(abs(x - lo), abs(x - hi)) < 1e-6]
    return FitResult(spec.law, point, ci, len(runs), best_value, float(np.sqrt(np.mean(resid**2))), len(boot),
                     delta, boot, at_bounds=at_bounds)


def _require(runs: Runs, law: str, columns: Sequence[str], min_runs: int) -> None:
    for c in columns:
        if runs.column(c) is None:
            raise FitError(f"the {law} law needs a {c!r} column")
    if len(runs) < min_runs:
        raise FitError(f"the {law} law needs at least {min_runs} runs, got {len(runs)}")


def fit_chinchilla(runs: Runs, bootstrap: int = 200, seed: int = 0, delta: float = HUBER_DELTA) -> FitResult:
    """Approach 3 of Hoffmann et al. (2022)."""
    _require(runs, "chinchilla", ("N", "D"), 5)
    if runs.distinct("N") < 2 or runs.distinct("D") < 2:
        raise FitError("the chinchilla law needs runs at several model sizes N and several data sizes D")
    return _fit_lse(runs, _chinchilla_spec(runs), bootstrap, seed, delta)


def fit_quality(runs: Runs, bootstrap: int = 200, seed: int = 0, delta: float = HUBER_DELTA) -> FitResult:
    """The quality-aware law; at one model size (``N`` absent or constant) the ``A/N^α`` term folds into ``E``."""
    _require(runs, "quality", ("Q",), 4)
    if runs.distinct("D") < 2 or runs.distinct("Q") < 2:
        raise FitError("the quality law needs runs at several data sizes D and several qualities Q")
    with_size = runs.distinct("N") >= 2
    result = _fit_lse(runs, _quality_spec(runs, with_size), bootstrap, seed, delta)
    result.fixed_size = not with_size
    return result


#: a fit whose rms log-residual exceeds this multiple of the runs' noise is flagged: the law does not describe them
RESIDUAL_WARNING_RATIO = 3.0


def replicate_noise(runs: Runs) -> float | None:
    """Pooled standard deviation of log loss within design points that have replicates (seeds); ``None`` without
    replicates."""
    groups: dict[tuple[float, ...], list[float]] = {}
    for key, y in zip(runs.design_keys(), np.log(runs.loss)):
        groups.setdefault(key, []).append(float(y))
    reps = [g for g in groups.values() if len(g) > 1]
    dof = sum(len(g) - 1 for g in reps)
    if not dof:
        return None
    return float(math.sqrt(sum(float(np.var(g, ddof=1)) * (len(g) - 1) for g in reps) / dof))


def _residual_warning(rmse: float, noise: float | None, source: str) -> list[str]:
    if noise is None or noise <= 0 or rmse <= RESIDUAL_WARNING_RATIO * noise:
        return []
    return [f"rms log-residual {rmse:.4f} is {rmse / noise:.1f}x the runs' noise ({noise:.4f}, {source}): the law "
            f"does not describe these runs and its constants are biased"]


def _dc_law(theta: np.ndarray) -> DataConstrainedLaw:
    """The data-constrained law of ``θ = (log A, log B, log E, α, β, log R_D*, log R_N*)``."""
    a, b, e, alpha, beta, r_d, r_n = (float(x) for x in theta)
    return DataConstrainedLaw(ChinchillaLaw(math.exp(a), math.exp(b), math.exp(e), alpha, beta),
                              R_D_star=math.exp(r_d), R_N_star=math.exp(r_n))


def _dc_objective(r: Runs, delta: float) -> Callable[[np.ndarray], float]:
    y = np.log(r.loss)

    def objective(theta: np.ndarray) -> float:
        try:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                pred = np.log(_dc_law(theta).loss(r.N, r.D, r.U))
        except (OverflowError, ZeroDivisionError):  # G = (αA/(βB))^(1/(α+β)) out of range far from the optimum
            return math.inf
        value = _huber_value(pred - y, delta)
        return value if math.isfinite(value) else math.inf

    return objective


_R_STAR_BOUNDS = (-5.0, 10.0)
#: joint-fit initialisations besides the two-stage estimate (screened by their initial objective)
_DC_GRID = {"a": (0.0, 5.0, 10.0, 15.0, 20.0), "b": (0.0, 5.0, 10.0, 15.0, 20.0), "e": (-1.0, 0.0, 0.5, 1.0),
            "alpha": (0.2, 0.35, 0.6), "beta": (0.2, 0.35, 0.6), "r_d": tuple(np.log([5.0, 15.0, 50.0])),
            "r_n": tuple(np.log([2.0, 5.0, 15.0]))}
_DC_MAX_STARTS = 16
#: without replicates, the noise is estimated from a Chinchilla fit to at least this many unconstrained runs
_MIN_RUNS_FOR_NOISE = 15


@contextlib.contextmanager
def _quiet_differences() -> Iterator[None]:
    """Finite differences next to an infinite objective (out-of-range constants) warn about ``inf - inf``; the
    optimiser steps away from such points, so the warning says nothing to the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _unconstrained_runs(runs: Runs, law: ChinchillaLaw, single: np.ndarray) -> np.ndarray:
    """The single-epoch runs on which the data-constrained law with base ``law`` is plain Chinchilla:
    ``N <= N_opt(U)`` (no excess parameters)."""
    assert runs.N is not None and runs.U is not None
    return single[runs.N[single] <= law.optimal_params_for_data(runs.U[single]) * (1 + 1e-9)]


def _identifies_chinchilla(runs: Runs) -> bool:
    return len(runs) >= 5 and runs.distinct("N") >= 2 and runs.distinct("D") >= 2


def fit_data_constrained(runs: Runs, bootstrap: int = 200, seed: int = 0, delta: float = HUBER_DELTA,
                         base: ChinchillaLaw | None = None) -> FitResult:
    """Muennighoff et al. (2023), fitted jointly.

    Their two stages (Chinchilla on single-epoch runs, then ``R_D*``, ``R_N*`` on all runs) are biased when
    single-epoch runs have excess parameters (``N > N_opt(U)``), which the law itself discounts: on points
    generated from Muennighoff's own fit, R_D* 15.4 came out 6.8. And the runs with ``N <= N_opt(U)`` cannot be
    picked before the fit (a biased fit puts N_opt far too high). So all seven constants are fitted together on
    all runs (Huber on log loss, L-BFGS from the best of a screened grid), and the bootstrap refits jointly. With
    ``base`` given, only ``R_D*`` and ``R_N*`` are fitted. ``U`` = unique tokens; rows without repetition have ``U >= D``. Warns when the residual is
    far above the runs' noise (from replicates, else the Chinchilla residual on the runs the fitted law treats as
    unconstrained).
    """
    _require(runs, "data-constrained", ("N", "U"), 3)
    assert runs.N is not None and runs.U is not None
    repeated = runs.D > runs.U * (1 + 1e-9)
    if not repeated.any():
        raise FitError("no run repeats its data (D > U): R_D* and R_N* are not identifiable")
    single = np.flatnonzero(~repeated)
    r_starts = [np.log([rd, rn]) for rd in (1.0, 5.0, 15.0, 50.0, 150.0) for rn in (1.0, 5.0, 15.0, 50.0)]

    def stage2(r: Runs, chin: ChinchillaLaw, starts: Iterable[np.ndarray], keep: int) -> list[tuple[float, Any]]:
        y = np.log(r.loss)

        def objective(theta: np.ndarray) -> float:
            law = DataConstrainedLaw(chin, R_D_star=math.exp(theta[0]), R_N_star=math.exp(theta[1]))
            return _huber_value(np.log(law.loss(r.N, r.D, r.U)) - y, delta)

        return _multi_start(objective, starts, [_R_STAR_BOUNDS, _R_STAR_BOUNDS], False, keep)

    if base is not None:  # Chinchilla constants given: R_D*, R_N* only
        optima = stage2(runs, base, r_starts, 4)
        if not optima:
            raise FitError("the optimiser found no finite optimum")
        value, theta = optima[0]
        law = DataConstrainedLaw(base, math.exp(theta[0]), math.exp(theta[1]))

        def refit(sub: Runs) -> DataConstrainedLaw | None:
            found = stage2(sub, base, [x for _, x in optima], 1)
            return DataConstrainedLaw(base, *np.exp(found[0][1])) if found else None
    else:
        names = tuple(_DC_GRID)
        bounds = [_COEF_BOUNDS, _COEF_BOUNDS, _e_bounds(runs), (1e-3, 5.0), (1e-3, 5.0), _R_STAR_BOUNDS,
                  _R_STAR_BOUNDS]
        with _quiet_differences():
            optima = _multi_start(_dc_objective(runs, delta), _grid_starts(names, _DC_GRID), bounds, False, 2,
                                  _DC_MAX_STARTS)
        if not optima:
            raise FitError("the optimiser found no finite optimum")
        value, theta = optima[0]
        law = _dc_law(theta)

        def refit(sub: Runs) -> DataConstrainedLaw | None:
            with _quiet_differences():
                found = _multi_start(_dc_objective(sub, delta), [x for _, x in optima], bounds, False, 1)
            return _dc_law(found[0][1]) if found else None

    point = law.to_dict()
    resid = np.log(law.loss(runs.N, runs.D, runs.U)) - np.log(runs.loss)
    boot: list[dict[str, float]] = []
    rng = np.random.default_rng(seed + 1)
    for idx in _bootstrap_indices(runs, bootstrap, rng):
        fitted = refit(runs.subset(idx))
        if fitted is not None:
            boot.append(fitted.to_dict())
    ci = {k: percentile_ci(b[k] for b in boot) for k in point}
    rmse = float(np.sqrt(np.mean(resid**2)))
    noise, source = replicate_noise(runs), "from replicate runs"
    if noise is None:
        clean = runs.subset(_unconstrained_runs(runs, law.base, single))
        if len(clean) >= _MIN_RUNS_FOR_NOISE and _identifies_chinchilla(clean):
            fitted = fit_chinchilla(clean, bootstrap=0, seed=seed, delta=delta)
            noise = fitted.rmse_log * math.sqrt(len(clean) / (len(clean) - 5))  # 5 constants fitted
            source = f"Chinchilla's residual on the {len(clean)} single-epoch runs with N <= N_opt(U)"
    return FitResult("data-constrained", point, ci, len(runs), value, rmse, len(boot), delta, boot,
                     notes=[] if base is not None else ["all seven constants fitted jointly on all runs"],
                     warnings=_residual_warning(rmse, noise, source))


def fit_law(runs: Runs, law: str, bootstrap: int = 200, seed: int = 0, delta: float = HUBER_DELTA) -> FitResult:
    """Fit ``law`` (one of :data:`LAWS`) to ``runs``."""
    if law == "chinchilla":
        return fit_chinchilla(runs, bootstrap, seed, delta)
    if law == "quality":
        return fit_quality(runs, bootstrap, seed, delta)
    if law == "data-constrained":
        return fit_data_constrained(runs, bootstrap, seed, delta)
    raise FitError(f"unknown law {law!r}; choose one of {', '.join(LAWS)}")

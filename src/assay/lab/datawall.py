"""The Data Wall, computed: the year training runs use up the stock of human text, and what data engineering buys.

The model is Epoch AI's (Villalobos et al., "Will we run out of data? Limits of LLM scaling based on
human-generated data", arXiv 2211.04325, 2022; v2, ICML 2024): two exponentials that cross.

* **Supply**: the effective stock of public human text ``S(t) = S₀·g_s^(t − t₀)`` (2024 estimate: ~300T tokens,
  90% interval 100T–1000T, quality-filtered, a few epochs of repetition allowed), growing a few percent a year.
* **Demand**: the dataset of the largest training run, ``D(t) = D₀·g_d^(t − t₀)``. Two projections:

  - ``compute``: the largest run's compute ``C(t) = C₀·g_c^(t − t₀)`` spent compute-optimally with ``k`` tokens per
    parameter (Chinchilla: ``k = 20``, ``C = 6·N·D``), so ``D = √(k·C/6)`` and ``g_d = √g_c``; overtraining by a
    factor ``m`` (``k → m·k``) multiplies ``D`` by ``√m``;
  - ``historical``: the largest dataset ``D₀`` in the base year grows at the historical rate ``g_d``;
  - ``both``: each Monte Carlo sample uses one of the two, half the samples each.

The wall is hit when ``D(t) = S(t)``: ``t* = t₀ + ln(S₀/D₀) / ln(g_d/g_s)`` (never, if ``g_d ≤ g_s``). Every
uncertain input is a :class:`Range` (a median and a central interval); the Monte Carlo draws every input
independently (seeded numpy), and every scenario is evaluated on the same draws, so scenarios are compared sample
by sample.

What data engineering changes, each as a multiplier ``M`` on the stock (``t*`` moves by ``ln M / ln(g_d/g_s)``):

* ``quality``: the quality-aware law ``L = A/N^α + B/(D^β·Q^γ) + E`` (Subramanyam et al. 2025) makes ``D`` tokens
  of quality ``Q`` worth ``D·Q^(γ/β)`` reference tokens; processing that raises the stock's quality by a factor
  ``Q`` gives ``M = Q^(γ/β)`` (γ/β: the lab's fitted value, or ``--law fit.json``).
* ``repetition``: Muennighoff et al.'s (2023) data-constrained law: ``E`` epochs over ``U`` unique tokens are worth
  ``D' = U + U·R_D*·(1 − e^(−(E−1)/R_D*))`` unique ones, so ``M = D'/U`` (4 epochs: 3.73 with R_D* = 15.4).
  Epoch's effective stock already allows some repetition: read this scenario as an upper bound of what more
  repetition adds on top.
* ``synthetic``: a share ``φ`` of every run is synthetic data of quality ``Q_s`` (worth ``Q_s^(γ/β)`` reference tokens
  per token), the rest human text: a run needing ``D`` reference tokens reads ``(1−φ)·D / ((1−φ) + φ·Q_s^(γ/β))``
  human tokens, so ``M = ((1−φ) + φ·Q_s^(γ/β)) / (1−φ)``. It ignores model collapse (see ``assay lab collapse``:
  accumulating real data keeps it away).
* ``all levers``: the three together (the product).

Everything here is numpy; the figure needs matplotlib (the ``ml`` extra).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from assay.lab.laws import FLOPS_PER_PARAM_TOKEN, MUENNIGHOFF_R_D_STAR

METHODS = ("compute", "historical", "both")
#: walls later than this are reported as "after" it (and drawn at the edge of the figure)
HORIZON = 2100.0


class WallError(ValueError):
    """Inputs the model cannot use (a negative stock, an unknown key, a share of 1, ...)."""


# ---------------------------------------------------------------------------------------------------------------
# uncertain inputs


@dataclass(frozen=True)
class Range:
    """An uncertain input: median ``mid``, and ``[lo, hi]`` the central interval holding ``level`` of it.

    Sampled as a split normal (a different spread below and above the median, so ``lo``, ``mid``, ``hi`` are
    exactly the quantiles ``(1 − level)/2``, ``0.5``, ``(1 + level)/2``), in log space for ``scale = "log"``
    (positive quantities: stocks, growth factors, qualities) and in linear space otherwise (shares).
    ``lo = mid = hi`` is a fixed number.
    """

    lo: float
    mid: float
    hi: float
    level: float = 0.9
    scale: str = "log"

    @classmethod
    def fixed(cls, x: float, scale: str = "log") -> "Range":
        return cls(x, x, x, 0.9, scale)

    @property
    def is_fixed(self) -> bool:
        return self.lo == self.mid == self.hi

    def check(self, name: str) -> None:
        vals = (self.lo, self.mid, self.hi)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            raise WallError(f"{name}: expected finite numbers, got {list(vals)}")
        if not self.lo <= self.mid <= self.hi:
            raise WallError(f"{name}: expected lo <= median <= hi, got {list(vals)}")
        if not 0 < self.level < 1:
            raise WallError(f"{name}: the interval level must be in (0, 1), got {self.level}")
        if self.scale == "log" and self.lo <= 0:
            raise WallError(f"{name}: must be positive, got {self.lo:g}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal(n)  # drawn even for a fixed input, so other inputs' draws do not shift
        if self.is_fixed:
            return np.full(n, float(self.mid))
        zq = NormalDist().inv_cdf((1 + self.level) / 2)
        f = np.log if self.scale == "log" else (lambda x: x)
        lo, mid, hi = (float(f(np.float64(v))) for v in (self.lo, self.mid, self.hi))
        x = mid + np.where(z < 0, z * (mid - lo), z * (hi - mid)) / zq
        return np.exp(x) if self.scale == "log" else x

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "mid": self.mid, "hi": self.hi, "level": self.level}

    def describe(self) -> str:
        if self.is_fixed:
            return f"{self.mid:.4g}"
        return f"{self.mid:.4g} [{self.lo:.4g}, {self.hi:.4g}] ({self.level:.0%})"


def parse_range(value: Any, name: str, scale: str = "log", level: float = 0.9) -> Range:
    """A :class:`Range` from a number, ``[lo, mid, hi]``, ``{lo, mid, hi, level}``, or text ``"lo,mid,hi"``."""
    try:
        if isinstance(value, Range):
            r = value
        elif isinstance(value, str):
            parts = [float(p) for p in value.replace(" ", "").split(",") if p]
            r = _from_list(parts, name, scale, level)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            r = Range.fixed(float(value), scale)
        elif isinstance(value, (list, tuple)):
            r = _from_list([float(v) for v in value], name, scale, level)
        elif isinstance(value, dict):
            unknown = set(value) - {"lo", "mid", "hi", "level"}
            if unknown or not {"lo", "mid", "hi"} <= set(value):
                raise WallError(f"{name}: a range is {{lo, mid, hi}} with an optional level; got {sorted(value)}")
            r = Range(float(value["lo"]), float(value["mid"]), float(value["hi"]),
                      float(value.get("level", level)), scale)
        else:
            raise WallError(f"{name}: expected a number, [lo, median, hi] or {{lo, mid, hi, level}}; "
                            f"got {value!r}")
    except (TypeError, ValueError) as e:
        if isinstance(e, WallError):
            raise
        raise WallError(f"{name}: expected numbers, got {value!r}") from None
    r.check(name)
    return r


def _from_list(parts: list[float], name: str, scale: str, level: float) -> Range:
    if len(parts) == 1:
        return Range.fixed(parts[0], scale)
    if len(parts) == 3:
        return Range(parts[0], parts[1], parts[2], level, scale)
    raise WallError(f"{name}: expected one number or three (lo, median, hi), got {len(parts)}")


# ---------------------------------------------------------------------------------------------------------------
# inputs

#: The lab's fitted γ/β of the quality law (benchmarks/lab_quality_ladder.py, docs/lab.md: γ/β = 0.98
#: [0.91, 1.02], 95% bootstrap interval, 36 tiny-LM runs on the Python docs): the default when no --law is given.
LAB_GAMMA_OVER_BETA = Range(0.91, 0.98, 1.02, 0.95)
#: The quality gain of Assay's extraction over a raw text dump measured by the same benchmark (Q = 0.41
#: [0.39, 0.44] vs 0.27 [0.26, 0.29]: ratio 1.52, extreme ratios of the intervals 1.34–1.69).
LAB_EXTRACTION_QUALITY_GAIN = Range(1.34, 1.52, 1.69, 0.95)

_SCALES = {"synthetic_share": "linear"}  # every other range is sampled on a log scale


@dataclass(frozen=True)
class WallInputs:
    """Every input of the projection. Ranges are 90% intervals unless their ``level`` says otherwise."""

    base_year: float = 2024.0
    #: effective stock of public human text in the base year, tokens (Villalobos et al. 2024: 300T, 90% CI
    #: 100T–1000T)
    stock: Range = Range(100e12, 300e12, 1000e12, 0.9)
    #: yearly growth factor of the stock (Villalobos et al. 2022: the stock of language data grows ~7% a year;
    #: the interval is ours)
    stock_growth: Range = Range(1.03, 1.07, 1.11, 0.9)
    method: str = "compute"
    #: compute projection: the largest training run of the base year, FLOP (Gemini Ultra ~5e25, GPT-4 ~2e25 in
    #: Epoch's database)
    compute: Range = Range(2e25, 5e25, 1e26, 0.9)
    #: compute projection: yearly growth factor of the largest run's compute (Epoch: frontier training compute
    #: grows 4–5x a year)
    compute_growth: Range = Range(4.0, 4.5, 5.0, 0.8)
    #: compute projection: training tokens per parameter of a compute-optimal run (Hoffmann et al. 2022: 20)
    tokens_per_param: Range = Range.fixed(20.0)
    #: compute projection: how many times more tokens per parameter than compute-optimal the runs use (1: none)
    overtrain: Range = Range.fixed(1.0)
    #: historical projection: the largest training dataset in the base year, tokens (Llama 3: 15T)
    dataset: Range = Range(12e12, 15e12, 18e12, 0.9)
    #: historical projection: its yearly growth factor (Epoch's dataset-size trend for language models: 2.9x a
    #: year in the Notable AI Models data; 3.7x in the June 2024 version of the same insight)
    dataset_growth: Range = Range(2.5, 2.9, 3.7, 0.9)
    #: overtraining factor of the `overtrained` scenario (Villalobos et al. 2024: 5x moves the median to 2027)
    overtrain_scenario: Range = Range.fixed(5.0)
    #: quality law: γ/β (the lab's fit; --law FIT.json replaces it)
    gamma_over_beta: Range = LAB_GAMMA_OVER_BETA
    #: quality scenario: factor by which processing raises the stock's quality Q (the lab's extraction vs raw)
    quality_gain: Range = LAB_EXTRACTION_QUALITY_GAIN
    #: repetition scenario: epochs over the stock (Muennighoff et al. 2023: up to ~4 nearly as good as new data)
    epochs: Range = Range.fixed(4.0)
    #: repetition scenario: R_D* of the data-constrained law (Muennighoff et al. 2023: 15.4)
    r_d_star: Range = Range.fixed(MUENNIGHOFF_R_D_STAR)
    #: synthetic scenario: the share of every training run that is synthetic (samples clipped to [0, 0.99])
    synthetic_share: Range = Range(0.1, 0.3, 0.5, 0.9, "linear")
    #: synthetic scenario: the synthetic data's quality Q relative to the stock
    synthetic_quality: Range = Range(0.3, 0.5, 0.8, 0.9)
    #: where each input came from (for the JSON): "default", "preset", a file, "--flag", "--law ..."
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def check(self) -> None:
        if self.method not in METHODS:
            raise WallError(f"method: {self.method!r} is not one of {', '.join(METHODS)}")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Range):
                v.check(f.name)
        if not 1900 <= self.base_year <= 2200:
            raise WallError(f"base_year: {self.base_year:g} is not a year")
        if not (0 <= self.synthetic_share.lo and self.synthetic_share.hi < 1):
            raise WallError("synthetic_share: must be in [0, 1) (a run of only synthetic data needs no stock)")
        if self.epochs.lo < 1:
            raise WallError("epochs: must be at least 1")
        if self.overtrain.lo < 1 or self.overtrain_scenario.lo < 1:
            raise WallError("overtrain: a factor of at least 1 (1 = compute-optimal)")

    def with_values(self, values: dict[str, Any], source: str) -> "WallInputs":
        """A copy with ``values`` (from YAML, flags or a law file) replacing inputs; unknown keys are errors."""
        names = {f.name for f in fields(self)} - {"sources"}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            k = str(key).replace("-", "_")
            if k not in names:
                close = difflib.get_close_matches(k, sorted(names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(names))})"
                raise WallError(f"{source}: unknown input {key!r}{hint}")
            if k == "method":
                changes[k] = str(value)
            elif k == "base_year":
                try:
                    changes[k] = float(value)
                except (TypeError, ValueError):
                    raise WallError(f"{source}: base_year: expected a year, got {value!r}") from None
            else:
                changes[k] = parse_range(value, f"{source}: {k}", _SCALES.get(k, "log"))
        sources = {**self.sources, **{str(k).replace("-", "_"): source for k in values}}
        out = replace(self, **changes, sources=sources)
        out.check()
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "sources":
                continue
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Range) else v
            out[f.name + "_source"] = self.sources.get(f.name, "default")
        return out


def load_inputs(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML inputs file (keys are :class:`WallInputs` fields)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise WallError(f"{path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise WallError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WallError(f"{path}: expected a mapping of inputs, got {type(data).__name__}")
    return data


def law_values(path: str | Path) -> dict[str, Any]:
    """Inputs taken from a lab fit JSON: γ/β from a quality-law fit (``assay lab fit --law quality`` or ``assay lab
    ladder``), ``R_D*`` from a data-constrained fit."""
    import orjson

    p = Path(path)
    try:
        data = orjson.loads(p.read_bytes())
    except OSError as e:
        raise WallError(f"{path}: {e.strerror or e}") from None
    except orjson.JSONDecodeError:
        raise WallError(f"{path}: not JSON") from None
    fit = data.get("fit") if isinstance(data, dict) else None
    if not isinstance(fit, dict) or "law" not in fit or "params" not in fit:
        raise WallError(f"{path}: not a lab fit (expected the JSON of `assay lab fit` or `assay lab ladder`)")
    params = fit["params"]
    if fit["law"] == "quality":
        gb = fit.get("gamma_over_beta")  # (point, lo, hi) with the bootstrap's 95% interval (ladder.json)
        if isinstance(gb, list) and len(gb) == 3 and all(isinstance(x, (int, float)) for x in gb):
            point, lo, hi = (float(x) for x in gb)
            return {"gamma_over_beta": {"lo": min(lo, point), "mid": point, "hi": max(hi, point), "level": 0.95}}
        return {"gamma_over_beta": float(params["gamma"]) / float(params["beta"])}
    if fit["law"] == "data-constrained":
        ci = fit.get("ci", {}).get("R_D_star")
        point = float(params["R_D_star"])
        if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x)
                                                         for x in ci):
            return {"r_d_star": {"lo": min(ci[0], point), "mid": point, "hi": max(ci[1], point), "level": 0.95}}
        return {"r_d_star": point}
    raise WallError(f"{path}: a {fit['law']} fit has neither γ/β nor R_D* (use a quality or data-constrained fit)")


# ---------------------------------------------------------------------------------------------------------------
# the model


#: what Villalobos et al. (2024) published, for comparison: median year of full utilisation, its 80% interval,
#: and the median with 5x overtraining
PUBLISHED_2024 = {"median": 2028, "interval_80": [2026, 2032], "overtrained_5x_median": 2027,
                  "stock_tokens": [100e12, 300e12, 1000e12], "stock_level": 0.9,
                  "source": "Villalobos et al. 2024 (arXiv 2211.04325v2, ICML 2024), Figure 1 and abstract; "
                            "Epoch AI blog, June 2024"}

SCENARIOS: tuple[tuple[str, str], ...] = (
    ("baseline", "Epoch's model: compute-optimal runs, the stock used once"),
    ("overtrained", "runs overtrained (more tokens per parameter)"),
    ("quality", "stock worth Q^(γ/β) more after processing (quality-aware law)"),
    ("repetition", "several epochs over the stock (data-constrained law, R_D*)"),
    ("synthetic", "a share of every run is synthetic data of quality Q_s"),
    ("all levers", "quality + repetition + synthetic"),
)


@dataclass
class Draws:
    """One Monte Carlo draw of every input and what the model derives from it (arrays of ``n`` samples)."""

    stock: np.ndarray
    stock_growth: np.ndarray
    demand: np.ndarray  # dataset of the largest run in the base year, tokens
    demand_growth: np.ndarray
    uses_compute: np.ndarray  # bool: the sample's demand comes from the compute projection
    overtrain_scenario: np.ndarray
    multipliers: dict[str, np.ndarray]  # scenario -> stock multiplier


def compute_optimal_dataset(compute: Any, tokens_per_param: Any) -> Any:
    """Tokens of a run of ``compute`` FLOP with ``k`` tokens per parameter: ``C = 6·N·D``, ``D = k·N`` ⇒
    ``D = √(k·C/6)``."""
    return np.sqrt(np.asarray(tokens_per_param, dtype=float) * np.asarray(compute, dtype=float)
                   / FLOPS_PER_PARAM_TOKEN)


def repetition_multiplier(epochs: Any, r_d_star: Any) -> Any:
    """``D'/U`` after ``epochs`` passes over ``U`` unique tokens (Muennighoff et al. 2023):
    ``1 + R_D*·(1 − e^(−(epochs − 1)/R_D*))``."""
    epochs, r = np.asarray(epochs, dtype=float), np.asarray(r_d_star, dtype=float)
    return 1.0 + r * (1.0 - np.exp(-(epochs - 1.0) / r))


def synthetic_multiplier(share: Any, quality: Any, gamma_over_beta: Any) -> Any:
    """How much further the human stock goes when a share of every run is synthetic data of quality ``Q_s``."""
    share = np.asarray(share, dtype=float)
    return ((1.0 - share) + share * np.asarray(quality, dtype=float) ** np.asarray(gamma_over_beta)) / (1.0 - share)


def draw(inputs: WallInputs, n: int, seed: int) -> Draws:
    """Sample every input ``n`` times (in a fixed order, so a seed gives the same draws whatever the values)."""
    inputs.check()
    if n < 1:
        raise WallError("samples: at least 1")
    rng = np.random.default_rng(seed)
    s = {f.name: getattr(inputs, f.name).sample(rng, n) for f in fields(inputs)
         if isinstance(getattr(inputs, f.name), Range)}
    pick = rng.random(n)
    uses_compute = {"compute": np.ones(n, bool), "historical": np.zeros(n, bool), "both": pick < 0.5}[inputs.method]
    d_compute = compute_optimal_dataset(s["compute"], s["tokens_per_param"] * s["overtrain"])
    demand = np.where(uses_compute, d_compute, s["dataset"])
    growth = np.where(uses_compute, np.sqrt(s["compute_growth"]), s["dataset_growth"])
    gb = s["gamma_over_beta"]
    q = s["quality_gain"] ** gb
    rep = repetition_multiplier(s["epochs"], s["r_d_star"])
    syn = synthetic_multiplier(np.clip(s["synthetic_share"], 0.0, 0.99), s["synthetic_quality"], gb)
    mult = {"baseline": np.ones(n), "overtrained": np.ones(n), "quality": q, "repetition": rep, "synthetic": syn,
            "all levers": q * rep * syn}
    return Draws(s["stock"], s["stock_growth"], demand, growth, uses_compute, s["overtrain_scenario"], mult)


def wall_years(inputs: WallInputs, d: Draws, scenario: str) -> np.ndarray:
    """The year demand meets the (multiplied) stock, per sample; ``inf`` when demand never catches up."""
    demand = d.demand
    if scenario == "overtrained":
        demand = demand * np.where(d.uses_compute, np.sqrt(d.overtrain_scenario), 1.0)
    rate = np.log(d.demand_growth) - np.log(d.stock_growth)
    gap = np.log(d.stock * d.multipliers[scenario]) - np.log(demand)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = inputs.base_year + gap / rate
    # demand growing no faster than the stock: hit already (at the base year) or never
    return np.where(rate > 0, crossing, np.where(gap <= 0, inputs.base_year, np.inf))


def wall_year_by_scan(stock: float, stock_growth: float, demand: float, demand_growth: float, base_year: float,
                      step: float = 1e-3, until: float = HORIZON) -> float:
    """The first year on a fine grid where demand reaches the stock: a brute-force check of :func:`wall_years`."""
    t = np.arange(base_year, until, step)
    hit = demand * demand_growth ** (t - base_year) >= stock * stock_growth ** (t - base_year)
    return float(t[np.argmax(hit)]) if hit.any() else math.inf


# ---------------------------------------------------------------------------------------------------------------
# results


def _quantiles(years: np.ndarray) -> dict[str, float | None]:
    y = np.minimum(years, HORIZON + 1)  # walls past the horizon count as "after it" (keeps quantiles finite)
    q = np.quantile(y, [0.05, 0.1, 0.5, 0.9, 0.95])
    out = {k: (None if v > HORIZON else round(float(v), 3)) for k, v in zip(("p05", "p10", "median", "p90", "p95"), q)}
    out["p_before_2030"] = round(float(np.mean(years < 2030)), 4)
    out["p_never_before_horizon"] = round(float(np.mean(years > HORIZON)), 4)
    return out


@dataclass
class WallResult:
    inputs: WallInputs
    samples: int
    seed: int
    scenarios: list[dict[str, Any]]
    series: dict[str, Any]
    years: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def scenario(self, name: str) -> dict[str, Any]:
        return next(s for s in self.scenarios if s["name"] == name)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "datawall", "model": "Villalobos et al. (Epoch AI) stock-vs-dataset projection",
                "inputs": self.inputs.to_dict(), "samples": self.samples, "seed": self.seed,
                "horizon": HORIZON, "scenarios": self.scenarios, "published": PUBLISHED_2024,
                "series": self.series}


def project(inputs: WallInputs, samples: int = 20_000, seed: int = 0, years_ahead: float = 12.0) -> WallResult:
    """Monte Carlo of the wall year under every scenario, and the stock/demand trajectories for the figure."""
    d = draw(inputs, samples, seed)
    scenarios, years = [], {}
    for name, what in SCENARIOS:
        y = wall_years(inputs, d, name)
        years[name] = y
        m = d.multipliers[name]
        scenarios.append({"name": name, "description": what, **_quantiles(y),
                          "stock_multiplier": {"median": round(float(np.median(m)), 4),
                                               "p05": round(float(np.quantile(m, 0.05)), 4),
                                               "p95": round(float(np.quantile(m, 0.95)), 4)}})
    t = np.linspace(inputs.base_year, inputs.base_year + years_ahead, 65)
    dt = t - inputs.base_year
    stock = d.stock[:, None] * d.stock_growth[:, None] ** dt
    demand = d.demand[:, None] * d.demand_growth[:, None] ** dt
    qs = lambda a, q: [float(x) for x in np.quantile(a, q, axis=0)]  # noqa: E731
    series: dict[str, Any] = {"year": [float(x) for x in t],
                              "stock": {"p10": qs(stock, 0.1), "median": qs(stock, 0.5), "p90": qs(stock, 0.9)},
                              "demand": {"p10": qs(demand, 0.1), "median": qs(demand, 0.5), "p90": qs(demand, 0.9)},
                              "effective_stock_median": {name: qs(stock * d.multipliers[name][:, None], 0.5)
                                                         for name in ("quality", "repetition", "synthetic",
                                                                      "all levers")}}
    return WallResult(inputs, samples, seed, scenarios, series, years)


def format_year(x: float | None) -> str:
    return f"after {HORIZON:.0f}" if x is None else f"{x:.1f}"


# ---------------------------------------------------------------------------------------------------------------
# figure


def figure(result: dict[str, Any]) -> bytes:
    """Left: stock and largest-run dataset over the years (median, 10–90% band) with the stock each lever makes;
    right: the wall year of every scenario (median, 80% and 90% intervals) next to Epoch's published one."""
    from assay.lab.plots import _colors, _plt, _png

    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 4.4), gridspec_kw={"width_ratios": [1.15, 1]})
    s = result["series"]
    t = np.asarray(s["year"])
    ax.fill_between(t, s["stock"]["p10"], s["stock"]["p90"], color="C0", alpha=0.18)
    ax.plot(t, s["stock"]["median"], color="C0", lw=2, label="effective stock of human text")
    ax.fill_between(t, s["demand"]["p10"], s["demand"]["p90"], color="C3", alpha=0.18)
    ax.plot(t, s["demand"]["median"], color="C3", lw=2, label="dataset of the largest run")
    colors = _colors(len(s["effective_stock_median"]))
    for color, (name, med) in zip(colors, s["effective_stock_median"].items()):
        ax.plot(t, med, "--", color=color, lw=1.2, label=f"stock with {name}")
    pub = result["published"]
    ax.axvspan(pub["median"], pub["median"] + 1, color="grey", alpha=0.12,
               label=f"Epoch's median year ({pub['median']})")
    ax.set_yscale("log")
    ax.set_xlabel("year")
    ax.set_ylabel("tokens")
    ax.set_title("stock vs demand (median, 10–90% band)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")

    rows = result["scenarios"]
    lo80, hi80 = pub["interval_80"]
    finite = [v for r in rows for v in (r["p05"], r["p95"]) if v is not None]
    lo_edge = math.floor(min(finite + [lo80]) - 0.5)
    hi_edge = math.ceil(max(finite + [hi80 + 1]) + 0.5) if len(finite) == 2 * len(rows) else t[-1]
    clip = lambda v: hi_edge if v is None else min(max(v, lo_edge), hi_edge)  # noqa: E731
    for i, r in enumerate(rows):
        bx.plot([clip(r["p05"]), clip(r["p95"])], [i, i], color="C0", lw=1.2)
        bx.plot([clip(r["p10"]), clip(r["p90"])], [i, i], color="C0", lw=5, alpha=0.6)
        bx.plot([clip(r["median"])], [i], "o", color="black", ms=5)
        bx.annotate(format_year(r["median"]), (clip(r["median"]), i), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=7)
    bx.axvspan(lo80, hi80, color="grey", alpha=0.1, label=f"Epoch 2024: 80% {lo80}–{hi80}")
    bx.axvspan(pub["median"], pub["median"] + 1, color="grey", alpha=0.2,
               label=f"Epoch 2024: median year {pub['median']}")
    bx.set_yticks(range(len(rows)), [r["name"] for r in rows])
    bx.set_ylim(len(rows) - 0.4, -1.3)  # room for the legend above the first row
    bx.set_xlim(lo_edge, hi_edge)
    bx.xaxis.get_major_locator().set_params(integer=True)
    bx.set_xlabel("year the stock is used up (thick: 80%, thin: 90%)")
    bx.set_title(f"the data wall ({result['samples']:,} Monte Carlo samples)", fontsize=10)
    bx.legend(fontsize=7, loc="upper right")
    return _png(fig)

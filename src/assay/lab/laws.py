"""Scaling-law forms and their closed forms: Chinchilla, quality-aware, data-constrained.

Three laws predict the held-out loss ``L`` of a language model from its size ``N`` (parameters), the number of
training tokens ``D`` and, for the two extensions, the data's quality ``Q`` or how much of ``D`` is repeated:

* :class:`ChinchillaLaw` (Hoffmann et al. 2022): ``L = E + A/N^α + B/D^β``. Under the budget ``C = 6·N·D`` its
  minimiser is ``N_opt = G·(C/6)^a`` and ``D_opt = (C/6)^b / G`` with ``G = (αA/(βB))^(1/(α+β))``,
  ``a = β/(α+β)``, ``b = α/(α+β)`` (the paper's Eq. 4).
* :class:`QualityLaw` (Subramanyam, Chen, Grossman 2025, arXiv 2510.03313):
  ``L = A/N^α + B/(D^β·Q^γ) + E``. ``Q ∈ (0, 1]`` is a dimensionless data quality (``1 - corruption rate`` in the
  paper's token-swap experiments). Since ``D^β·Q^γ = (D·Q^(γ/β))^β``, a dataset of quality ``Q`` is worth
  ``D_eff = D·Q^(γ/β)`` clean tokens. At a fixed model size the ``A/N^α`` term is a constant folded into ``E``.
* :class:`DataConstrainedLaw` (Muennighoff et al. 2023): the Chinchilla law evaluated at the *effective* data
  ``D' = U_D + U_D·R_D*·(1 - exp(-R_D/R_D*))`` (``U_D`` unique tokens, ``R_D = D/U_D - 1`` repetitions) and the
  effective parameters ``N' = U_N + U_N·R_N*·(1 - exp(-R_N/R_N*))`` (``U_N`` the compute-optimal size for ``U_D``,
  ``R_N = N/U_N - 1`` the excess). A repeated token is worth less with every epoch; ``D'`` never exceeds
  ``U_D·(1 + R_D*)``.

Everything here is plain numpy (no fitting: see :mod:`assay.lab.fit`), so the forms can be checked by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: training FLOPs per parameter per token (forward + backward), the usual ``C = 6·N·D`` approximation
FLOPS_PER_PARAM_TOKEN = 6.0

#: Muennighoff et al. (2023): the number of repetitions after which repeated data / excess parameters have lost
#: ``1 - 1/e`` of their value ("returns diminish around 16 epochs").
MUENNIGHOFF_R_D_STAR = 15.4
MUENNIGHOFF_R_N_STAR = 5.3


def _arr(x: Any) -> np.ndarray | float:
    return np.asarray(x, dtype=float) if np.ndim(x) else float(x)


@dataclass(frozen=True)
class ChinchillaLaw:
    """``L(N, D) = E + A/N^α + B/D^β`` with its compute-optimal allocation."""

    A: float
    B: float
    E: float
    alpha: float
    beta: float

    def loss(self, N: Any, D: Any) -> Any:
        N, D = _arr(N), _arr(D)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    # -- compute-optimal frontier (Hoffmann et al. 2022, Eq. 4) ---------------------------------------------------
    @property
    def a(self) -> float:
        """Exponent of ``N_opt ∝ C^a``."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of ``D_opt ∝ C^b`` (``a + b = 1``)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, C: Any) -> tuple[Any, Any]:
        """``(N_opt, D_opt)`` minimising the loss under ``6·N·D = C`` FLOPs."""
        c6 = _arr(C) / FLOPS_PER_PARAM_TOKEN
        return self.G * c6**self.a, c6**self.b / self.G

    def optimal_params_for_data(self, D: Any) -> Any:
        """The model size for which ``D`` tokens is the compute-optimal amount of data."""
        c6 = (_arr(D) * self.G) ** (1.0 / self.b)
        return self.G * c6**self.a

    def tokens_per_param(self, C: Any) -> Any:
        n, d = self.compute_optimal(C)
        return d / n

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: Hoffmann et al. (2022), approach 3 (parametric fit): a = 0.46, b = 0.54 in the paper's Table 2.
CHINCHILLA_2022 = ChinchillaLaw(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)


@dataclass(frozen=True)
class QualityLaw:
    """``L(N, D, Q) = A/N^α + B/(D^β·Q^γ) + E``; with ``A = 0`` the law is at a fixed model size.

    Quality is measured relative to the clean reference corpus the law was fitted on: ``Q = 1`` is that corpus,
    ``Q < 1`` worse, ``Q > 1`` better (possible for a candidate dataset placed on the law).
    """

    B: float
    beta: float
    gamma: float
    E: float
    A: float = 0.0
    alpha: float = 0.0

    @property
    def fixed_size(self) -> bool:
        return self.A == 0.0

    def loss(self, D: Any, Q: Any = 1.0, N: Any = None) -> Any:
        D, Q = _arr(D), _arr(Q)
        out = self.E + self.B / (D**self.beta * Q**self.gamma)
        if not self.fixed_size:
            if N is None:
                raise ValueError("this quality law has a model-size term: pass N")
            out = out + self.A / _arr(N) ** self.alpha
        return out

    def effective_data(self, D: Any, Q: Any) -> Any:
        """Clean-token equivalent of ``D`` tokens of quality ``Q``: ``D·Q^(γ/β)``."""
        return _arr(D) * _arr(Q) ** (self.gamma / self.beta)

    def quality_for_loss(self, L: Any, D: Any, N: Any = None) -> Any:
        """The ``Q`` at which ``D`` tokens give loss ``L`` (``inf`` when ``L`` is at or below the floor)."""
        L, D = _arr(L), _arr(D)
        floor = self.E if self.fixed_size else self.E + self.A / _arr(N) ** self.alpha
        excess = np.asarray(L - floor, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = np.where(excess > 0, (self.B / (np.maximum(excess, 1e-300) * D**self.beta)) ** (1.0 / self.gamma),
                         np.inf)
        return q if np.ndim(q) else float(q)

    def compute_optimal(self, C: Any, Q: Any = 1.0) -> tuple[Any, Any]:
        """``(N_opt, D_opt)`` for ``C`` FLOPs of data of quality ``Q`` (needs the model-size term)."""
        if self.fixed_size:
            raise ValueError("compute-optimal allocation needs a law fitted with varying N (A, alpha)")
        return self.as_chinchilla(Q).compute_optimal(C)

    def as_chinchilla(self, Q: Any = 1.0) -> ChinchillaLaw:
        """The Chinchilla law for data of quality ``Q`` (``B`` becomes ``B/Q^γ``)."""
        return ChinchillaLaw(A=self.A, B=self.B / float(Q) ** self.gamma, E=self.E, alpha=self.alpha, beta=self.beta)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def effective_repeated(unique: Any, total: Any, r_star: float) -> Any:
    """Muennighoff et al.'s effective count: ``U + U·R*·(1 - exp(-R/R*))`` with ``R = total/unique - 1``.

    Used for tokens (``unique`` tokens seen ``total`` times in all) and for parameters (``unique`` the
    compute-optimal size, ``total`` the actual size). ``R < 0`` (fewer than one epoch) counts as ``R = 0``.
    """
    unique, total = _arr(unique), _arr(total)
    repeats = np.maximum(total / unique - 1.0, 0.0)
    out = unique + unique * r_star * (1.0 - np.exp(-repeats / r_star))
    return np.minimum(out, total) if np.ndim(out) else min(float(out), float(total))


@dataclass(frozen=True)
class DataConstrainedLaw:
    """Chinchilla at the effective data ``D'`` and effective parameters ``N'`` (Muennighoff et al. 2023)."""

    base: ChinchillaLaw
    R_D_star: float = MUENNIGHOFF_R_D_STAR
    R_N_star: float = MUENNIGHOFF_R_N_STAR

    def effective_data(self, U_D: Any, D: Any) -> Any:
        return effective_repeated(U_D, D, self.R_D_star)

    def unique_params(self, U_D: Any, N: Any) -> Any:
        """``U_N = min(compute-optimal size for U_D, N)``."""
        return np.minimum(self.base.optimal_params_for_data(U_D), _arr(N))

    def effective_params(self, U_D: Any, N: Any) -> Any:
        return effective_repeated(self.unique_params(U_D, N), N, self.R_N_star)

    def loss(self, N: Any, D: Any, U_D: Any = None) -> Any:
        """Loss of an ``N``-parameter model trained on ``D`` tokens drawn from ``U_D`` unique ones."""
        U_D = D if U_D is None else U_D
        return self.base.loss(self.effective_params(U_D, N), self.effective_data(U_D, D))

    def to_dict(self) -> dict[str, Any]:
        return {**self.base.to_dict(), "R_D_star": self.R_D_star, "R_N_star": self.R_N_star}


def law_from_params(law: str, p: dict[str, float]) -> ChinchillaLaw | QualityLaw | DataConstrainedLaw:
    """The law object of a fit's ``law`` name and ``params`` (as written in a fit's JSON)."""
    if law == "chinchilla":
        return ChinchillaLaw(p["A"], p["B"], p["E"], p["alpha"], p["beta"])
    if law == "quality":
        return QualityLaw(B=p["B"], beta=p["beta"], gamma=p["gamma"], E=p["E"], A=p.get("A", 0.0),
                          alpha=p.get("alpha", 0.0))
    if law == "data-constrained":
        base = ChinchillaLaw(p["A"], p["B"], p["E"], p["alpha"], p["beta"])
        return DataConstrainedLaw(base, R_D_star=p["R_D_star"], R_N_star=p["R_N_star"])
    raise ValueError(f"unknown law {law!r}")

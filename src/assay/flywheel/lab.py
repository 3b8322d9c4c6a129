"""The lab's side of the loop: one quality ladder built on the reference pages, and each round's datasets placed
on it (Q with a confidence interval) and turned into effective clean tokens ``D·Q^(γ/β)``.

The ladder (:func:`assay.lab.quality_ladder.run_ladder`) trains the same tiny LM on token-swap-corrupted copies of
the reference corpus at each data size and quality, and fits ``L = B/(D^β·Q^γ) + E``. A dataset is placed by training
that LM on it at the placement budget with each seed (:func:`assay.lab.quality_ladder.place`). ``D`` of a stage is
the dataset's own token count under the ladder's tokenizer, so ``D_eff = D·Q^(γ/β)`` is "how many clean reference
tokens this stage's data is worth"; its interval is that of ``Q`` (γ/β at its point estimate). ``Q`` is relative to
the reference pages *as judged by their held-out part*: synthetic text in another register scores lower for the gap
as well as for any noise, and ``Q > 1`` means it teaches the held-out pages better than the reference does.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import orjson

from assay.flywheel.recipe import LabSpec


class Lab:
    """The ladder of a flywheel run, built once (``OUT/lab/``) and reused by every round (also after a resume)."""

    def __init__(self, spec: LabSpec, folder: Path, seed: int = 0) -> None:
        self.spec = spec
        self.folder = folder
        self.seed = seed
        self._harness: Any = None
        self._fit: Any = None
        self._runs: list[dict[str, Any]] | None = None

    def _write(self, name: str, obj: Any) -> None:
        path = self.folder / name
        tmp = path.with_name(f".tmp-{name}")
        tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        tmp.replace(path)

    def harness(self, reference: Sequence[str]) -> Any:
        if self._harness is None:
            from assay.lab.data import split_docs
            from assay.lab.harness import Harness
            from assay.lab.tokenizer import LabTokenizer

            self.folder.mkdir(parents=True, exist_ok=True)
            train, held = split_docs(reference, 0.2, salt=f"flywheel-{self.seed}")
            if not train or not held:
                raise ValueError("the reference pages are too few to hold some out for the lab")
            tok_path = self.folder / "tokenizer.json"
            tok = LabTokenizer.load(tok_path) if tok_path.exists() else None
            self._harness = Harness.build(train, held, preset=self.spec.preset, vocab_size=self.spec.vocab_size,
                                          eval_tokens=self.spec.eval_tokens, tokenizer=tok, eval_points=1,
                                          threads=self.spec.threads, device="cpu")
            if tok is None:
                self._harness.save_tokenizer(self.folder)
            self._train_docs = train
        return self._harness

    def ladder(self, reference: Sequence[str], log: Any = None) -> dict[str, Any]:
        """Build (or load) the ladder and its fitted law; returns the law's summary."""
        from assay.lab.fit import FitResult, Runs, fit_quality
        from assay.lab.quality_ladder import run_ladder

        h = self.harness(reference)
        path, fit_path = self.folder / "ladder.json", self.folder / "fit.json"
        if path.exists():
            self._runs = orjson.loads(path.read_bytes())["runs"]
        else:
            seqs = h.sequences(self._train_docs)
            result = run_ladder(h, seqs, self.spec.tokens, self.spec.qualities, list(range(self.spec.seeds)),
                                bootstrap=self.spec.bootstrap, progress=log)
            self._runs = result.runs
            self._fit = result.fit
            self._write("fit.json", dataclasses.asdict(result.fit))  # the fit is the slow part: kept, not redone
            self._write("ladder.json", {**result.to_dict(), "curves": {}})
        if self._fit is None:
            if fit_path.exists():
                self._fit = FitResult(**orjson.loads(fit_path.read_bytes()))
            else:
                self._fit = fit_quality(Runs.from_rows(self._runs), bootstrap=self.spec.bootstrap)
        return self.law()

    def law(self) -> dict[str, Any]:
        fit = self._fit
        gb = fit.interval(lambda law: law.gamma / law.beta)
        return {"params": {k: float(v) for k, v in fit.params.items()},
                "gamma_over_beta": float(fit.params["gamma"] / fit.params["beta"]),
                "gamma_over_beta_ci": [float(gb[1]), float(gb[2])], "runs": len(self._runs or [])}

    def tokens_of(self, docs: Sequence[str]) -> int:
        h = self._harness
        return int(len(h.tokenizer.encode_docs(list(docs)))) if docs else 0

    def place(self, name: str, docs: Sequence[str]) -> dict[str, Any]:
        """Q (with CI) of a dataset and its effective clean tokens; ``{"placed": False, ...}`` when it is too small
        to fill one training sequence."""
        from assay.lab.quality_ladder import place

        h = self._harness
        D_data = self.tokens_of(docs)
        seqs = h.sequences(list(docs)) if docs else []
        if len(seqs) == 0:
            return {"name": name, "placed": False, "docs": len(docs), "D": D_data,
                    "why": "shorter than one training sequence"}
        budget = int(self.spec.place_tokens or max(self.spec.tokens))
        losses, epochs = [], 1.0
        for seed in range(self.spec.seeds):
            r = h.run(seqs, budget, seed)
            losses.append(float(r.eval_loss))
            epochs = float(r.epochs)
        p = place(self._fit, name, losses, budget, epochs=epochs, unique_tokens=int(len(seqs) * h.model.context),
                  ladder_runs=self._runs or [], seed=self.seed)
        gb = float(self._fit.params["gamma"] / self._fit.params["beta"])

        def eff(q: float) -> float | None:
            return D_data * q ** gb if math.isfinite(q) and q > 0 else None

        return {"name": name, "placed": True, "docs": len(docs), "D": D_data, "budget": budget,
                "epochs": round(epochs, 3), "loss": p.loss.to_dict(), "Q": _num(p.Q), "Q_ci": [_num(x) for x in p.Q_ci],
                "method": p.method, "D_eff": _num(eff(p.Q)), "D_eff_ci": [_num(eff(p.Q_ci[0])), _num(eff(p.Q_ci[1]))]}


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None

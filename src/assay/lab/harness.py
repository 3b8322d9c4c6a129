"""The fixed parts of a tiny-LM experiment: one tokenizer, one model shape, one held-out set, one recipe.

Ablations, the quality ladder and the collapse runs all compare training *data*; everything else must stay the
same across their runs. A :class:`Harness` holds those fixed parts and trains one model per call to :meth:`run`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from assay.lab.tinylm import ModelConfig, TrainConfig, TrainResult, train_lm
from assay.lab.tokenizer import LabTokenizer, make_sequences

Progress = Callable[[str], None]


def sample_for_tokenizer(datasets: Sequence[Sequence[str]], chars_per_dataset: int = 2_000_000) -> list[str]:
    """An equal share of characters from each dataset, so no dataset gets a vocabulary advantage."""
    out: list[str] = []
    for docs in datasets:
        total = 0
        for d in docs:
            if total >= chars_per_dataset:
                break
            out.append(d[: chars_per_dataset - total])
            total += len(out[-1])
    return out


@dataclass
class Harness:
    tokenizer: LabTokenizer
    model: ModelConfig
    eval_seqs: np.ndarray
    train: TrainConfig  # template: ``tokens`` and ``seed`` are set per run

    @classmethod
    def build(cls, tokenizer_docs: Sequence[str], eval_docs: Sequence[str], preset: str = "micro",
              vocab_size: int = 512, eval_tokens: int = 32_768, tokenizer: LabTokenizer | None = None,
              model_overrides: dict[str, int] | None = None, **train: Any) -> "Harness":
        """Train the tokenizer (unless given), fix the model shape and cut the held-out set.

        ``eval_tokens`` caps the held-out set (its first sequences, in document order, are kept): the same
        tokens are scored after every run.
        """
        tok = tokenizer or LabTokenizer.train(tokenizer_docs, vocab_size=vocab_size)
        model = ModelConfig.preset(preset, vocab_size=tok.vocab_size, **(model_overrides or {}))
        eval_seqs = make_sequences(tok.encode_docs(list(eval_docs)), model.context)
        eval_seqs = eval_seqs[: max(1, eval_tokens // model.context)]
        if len(eval_seqs) == 0:
            raise ValueError("the held-out set is shorter than one context window")
        return cls(tok, model, eval_seqs, TrainConfig(tokens=0, **train))

    def sequences(self, docs: Sequence[str]) -> np.ndarray:
        """Training sequences (``[n, context + 1]`` token ids) of a dataset."""
        return make_sequences(self.tokenizer.encode_docs(list(docs)), self.model.context)

    def run(self, seqs: np.ndarray, tokens: int, seed: int) -> TrainResult:
        """Train one fresh model on ``seqs`` for ``tokens`` predicted tokens with ``seed``."""
        return train_lm(self.model, seqs, self.eval_seqs, replace(self.train, tokens=int(tokens), seed=int(seed)))

    def describe(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "params": self.model.param_count(),
                "params_non_embedding": self.model.param_count(embeddings=False),
                "vocab_size": self.tokenizer.vocab_size, "eval_tokens": int(self.eval_seqs.shape[0]
                                                                            * self.model.context),
                "train": {k: v for k, v in self.train.to_dict().items() if k not in ("tokens", "seed")}}

    def save_tokenizer(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / "tokenizer.json"
        self.tokenizer.save(path)
        return path


def thin_curve(curve: list[dict[str, float]], points: int = 200) -> list[dict[str, float]]:
    """Keep every held-out evaluation and about ``points`` training-loss points of a loss curve (for reports)."""
    if len(curve) <= points:
        return curve
    stride = max(1, len(curve) // points)
    return [c for i, c in enumerate(curve) if i % stride == 0 or "eval_loss" in c or i == len(curve) - 1]

"""A byte-level BPE tokenizer for the tiny-LM lab, trained with Hugging Face ``tokenizers``.

Byte-level means every string is encodable (no unknown tokens), so broken or foreign text in a candidate dataset
cannot crash a run. One special token, ``<|eos|>`` (id 0), separates documents in the token stream. All datasets of
one experiment must share one tokenizer: losses in different vocabularies are not comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

EOS = "<|eos|>"


class LabTokenizer:
    """A trained tokenizer plus the helpers the lab needs (document streams, fixed-length sequences)."""

    def __init__(self, tokenizer) -> None:  # noqa: ANN001 - a tokenizers.Tokenizer
        self.tokenizer = tokenizer
        eos = tokenizer.token_to_id(EOS)
        if eos is None:
            raise ValueError(f"tokenizer has no {EOS} token")
        self.eos_id = int(eos)
        self.n_special = 1

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2) -> "LabTokenizer":
        """Train byte-level BPE on ``docs`` (deterministic for the same documents in the same order)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(docs, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> "LabTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def encode_docs(self, docs: Sequence[str], batch: int = 512) -> np.ndarray:
        """One token stream: each document followed by ``<|eos|>``."""
        parts: list[np.ndarray] = []
        eos = np.asarray([self.eos_id], dtype=np.int32)
        for i in range(0, len(docs), batch):
            for enc in self.tokenizer.encode_batch(list(docs[i:i + batch])):
                parts.append(np.asarray(enc.ids, dtype=np.int32))
                parts.append(eos)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def make_sequences(stream: np.ndarray, context: int) -> np.ndarray:
    """Cut a token stream into non-overlapping training sequences of ``context + 1`` tokens (inputs + shifted
    targets share all but one token). Each sequence trains on ``context`` predicted tokens; the tail is dropped."""
    n = (len(stream) - 1) // context
    if n <= 0:
        return np.zeros((0, context + 1), dtype=np.int64)
    idx = np.arange(n)[:, None] * context + np.arange(context + 1)[None, :]
    return stream[idx].astype(np.int64)

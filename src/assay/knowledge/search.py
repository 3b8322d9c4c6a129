"""Hybrid retrieval over knowledge patches: BM25 plus dense embeddings, fused by reciprocal rank.

:class:`HybridIndex` holds one entry ("doc") per patch version, keyed ``"patch_id@version"``, and answers
``search(query, k, mode=..., domains=..., status=..., at=..., latest_only=...)`` with ``(doc_id, score)`` pairs.

* **BM25** is Okapi BM25 (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)), the formula of SQLite FTS5's
  ``bm25()``) computed with numpy over in-memory postings. We measured FTS5 itself first: over 100,000 documents its
  ``MATCH ... ORDER BY rank`` took 5 ms at the median for mid-frequency query words but 67 ms for common ones (it
  scores every matching row inside SQLite), while numpy over posting arrays stays around a millisecond; and
  ``bm25s`` must rebuild its whole index on every change, which a service that publishes one patch at a time cannot
  afford. Postings grow by appending, so upserts are incremental.
* **Dense**: every doc's text is embedded once with :mod:`assay.models.embeddings` (default: the offline MiniLM
  model; ``"hashed"`` needs no torch) into a float32 matrix; a query is one matrix-vector product (cosine, rows are
  unit length). Queries are embedded by the ONNX Runtime twin of the packaged MiniLM
  (:class:`~assay.models.embeddings.OnnxMiniLMBackend`: the same vectors, about twice as fast per query on CPU) when
  ``onnxruntime`` is installed and the export works; documents stay on the index's embedder (torch), so a snapshot
  of vectors stays valid whichever encoder embeds the queries.
* **Approximate dense search** (``ann=``): above ``ann_threshold`` vectors (default 20,000) the dense side asks a
  faiss IVF-Flat index (inner product on the unit vectors; ``2 sqrt(N)`` lists, a tenth of them probed) for
  ``max(50, 10 * depth)`` candidates, keeps those passing the filters, and falls back to the exact scan when fewer
  than ``depth`` survive. The exact scan reads the whole float32 matrix (11-13 ms at 100,000 x 384, memory-bound);
  the IVF probe reads about a tenth of it (about 1 ms) and agreed with the exact top 10 on 0.985 of the benchmark
  queries' results. A filter that leaves fewer than an eighth of the docs is always served exactly, from the
  passing rows only. The IVF index is built lazily on the first dense query (1.9 s for 100,000 vectors), grows by
  appending the vectors of new slots, and is retrained when the index has grown fourfold since training; removed
  docs stay in it until :meth:`compact` but never pass the filter mask.
* **Fusion**: reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): each ranked list contributes
  ``1 / (RRF_K + rank)`` (rank from 1) to a doc's score, with ``RRF_K = 60`` as in the paper. RRF needs no score
  calibration between BM25 (unbounded) and cosine (-1..1), which is why it is the default.
* **Filters** (applied before ranking, so a selective filter still returns k results): domains (any of), status
  (any of), validity at a time (``valid_from <= at < valid_to``, open ends allowed) and ``latest_only``: among the
  versions of a patch that pass the other filters, only the highest is kept (so while version 2 is under review,
  a search for accepted patches still finds version 1).

Persistence (``path`` given): a directory with ``index.sqlite`` (one row per doc: ids, filters, text; written on
every upsert/remove, so it is the durable truth) and ``embeddings.npy`` + ``embeddings.json`` (a snapshot written by
:meth:`save`). Opening an index rebuilds the postings from the stored texts and embeds any doc newer than the
snapshot, so a crash between saves loses no data, only some embedding time at the next start. Removed docs leave a
dead slot until :meth:`compact` (run by :meth:`save` when more than a quarter of the slots are dead).

Thread safety: one lock around every read and write (numpy does the heavy work, so a server's threads mostly wait
on memory bandwidth, not on each other).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import threading
import time
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

#: the k of reciprocal rank fusion (Cormack et al. 2009 found 60 robust across collections)
RRF_K = 60
#: Okapi BM25 parameters (the FTS5 defaults)
BM25_K1 = 1.2
BM25_B = 0.75
#: each ranked list fed to fusion holds this many candidates (at least), so a doc ranked low by one method but high
#: by the other still gets both contributions
FUSION_CANDIDATES = 100
MODES = ("hybrid", "bm25", "dense")
#: BLAS threads for the dense matrix-vector product (None: the BLAS default, one per core). The product reads the
#: whole float32 matrix (150 MB at 100,000 x 384) and is bound by memory bandwidth: on 2 busy cores we measured
#: 11.5 ms at the median with one thread against 16 ms with two (threads wait on each other), so one it is.
DENSE_THREADS: int | None = 1
#: ``ann="auto"`` uses the approximate index from this many embedded slots on (below it the exact scan is cheap)
ANN_THRESHOLD = 20_000
ANN_MODES = ("auto", "off", "on")
#: IVF lists = ANN_LISTS_PER_SQRT * sqrt(vectors at training); probed lists = ANN_PROBE_SHARE of them. Measured on
#: the 100,000-patch benchmark (benchmarks/knowledge.py --latency): 632 lists, 63 probed give recall@10 0.985 and
#: recall@100 0.981 against the exact scan in about 1 ms (1264 lists: 0.99 but a 6 s build; 316 lists: slower probes)
ANN_LISTS_PER_SQRT = 2.0
ANN_PROBE_SHARE = 0.1
#: the approximate search returns max(ANN_MIN_CANDIDATES, ANN_OVERFETCH * depth) candidates before filtering
ANN_MIN_CANDIDATES = 50
ANN_OVERFETCH = 10
#: retrain the IVF centroids once the index holds this many times the vectors it was trained on
ANN_RETRAIN_GROWTH = 4.0
#: training sample: at most this many vectors per list (faiss warns below 39)
ANN_TRAIN_PER_LIST = 40
#: OpenMP threads for faiss search (one: on busy shared cores a single query gains nothing from a second thread)
ANN_THREADS = 1

_WORD_RE = re.compile(r"\w+")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    slot INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    patch_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    domains TEXT NOT NULL,
    status TEXT NOT NULL,
    valid_from REAL,
    valid_to REAL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def tokenize(text: str) -> list[str]:
    """BM25 tokens: lowercased runs of word characters (letters, digits, underscore in any script)."""
    return _WORD_RE.findall(text.lower())


def to_epoch(value: Any) -> float | None:
    """Seconds since the epoch for a datetime, an ISO-8601 string or a number; None stays None (an open end).
    A naive datetime is taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 time: {value!r}") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    raise TypeError(f"cannot read a time from {type(value).__name__}")


def _resolve_embedder(embedder: Any) -> Any:
    """An :class:`~assay.models.embeddings.EmbeddingBackend` (or None for BM25 only) from the ``embedder`` argument:
    a backend, ``"auto"`` (MiniLM when the ``ml`` extra is installed, else hashed n-grams), ``"none"``, or any name
    :func:`assay.models.embeddings.get_backend` knows."""
    from assay.models import embeddings

    if embedder is None or embedder == "none":
        return None
    if isinstance(embedder, embeddings.EmbeddingBackend):
        return embedder
    if embedder == "auto":
        try:
            import sentence_transformers  # noqa: F401

            return embeddings.minilm()
        except (ModuleNotFoundError, FileNotFoundError):
            return embeddings.HashedNgramBackend(dim=1024)
    if embedder in ("hashed", "light", "ngrams"):
        return embeddings.HashedNgramBackend(dim=1024)
    return embeddings.get_backend(str(embedder))


class _Growing:
    """A 1-d numpy array with amortised O(1) append (capacity doubles)."""

    def __init__(self, dtype: Any, fill: Any = 0) -> None:
        self.data = np.full(1024, fill, dtype=dtype)
        self.fill = fill
        self.n = 0

    def append(self, value: Any) -> None:
        if self.n == len(self.data):
            grown = np.full(2 * len(self.data), self.fill, dtype=self.data.dtype)
            grown[: self.n] = self.data
            self.data = grown
        self.data[self.n] = value
        self.n += 1

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]


class HybridIndex:
    """BM25 + dense retrieval over patch versions with filters and persistence (see the module docstring).

    ``path``: a directory (created if missing) or None for an in-memory index. ``embedder``: ``"auto"``,
    ``"minilm"``, ``"hashed"``, ``"none"`` (BM25 only; ``dense`` and ``hybrid`` then fall back to BM25), a
    sentence-transformers folder, or an :class:`~assay.models.embeddings.EmbeddingBackend`. ``ann``: ``"auto"``
    (approximate dense search from ``ann_threshold`` embedded slots on, when faiss is installed), ``"on"`` (at any
    size; faiss required) or ``"off"`` (always the exact scan); the attribute may be changed between queries.
    """

    def __init__(self, path: str | Path | None = None, *, embedder: Any = "auto", ann: str = "auto",
                 ann_threshold: int = ANN_THRESHOLD) -> None:
        if ann not in ANN_MODES:
            raise ValueError(f"ann must be one of {', '.join(ANN_MODES)}, not {ann!r}")
        if ann == "on" and _faiss() is None:
            raise ImportError("ann='on' needs faiss: pip install 'assay[knowledge]' (faiss-cpu)")
        self.ann = ann
        self.ann_threshold = int(ann_threshold)
        #: dense rankings served so far, by path: "ann" (approximate), "fallback" (approximate, too few candidates
        #: passed the filters, so exact), "exact" (below the threshold, ann off, or a selective filter)
        self.dense_counts = {"ann": 0, "fallback": 0, "exact": 0}
        self.path = Path(path) if path is not None else None
        self._embedder_arg = embedder
        self._embedder: Any = None
        self._embedder_resolved = False
        self._query_encoder: Any = None
        self._query_encoder_resolved = False
        self._lock = threading.RLock()
        self._reset_memory()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path / "index.sqlite", check_same_thread=False)
            self._db.executescript(_SCHEMA)
            self._load()

    # -- state -----------------------------------------------------------------------------------------------------

    def _reset_memory(self) -> None:
        self._slot_of: dict[str, int] = {}
        self._doc_ids: list[str | None] = []
        self._patch_codes: dict[str, int] = {}
        self._patch = _Growing(np.int32)
        self._version = _Growing(np.int32)
        self._status_codes: dict[str, int] = {}
        self._status = _Growing(np.int16)
        self._valid_from = _Growing(np.float64, -math.inf)
        self._valid_to = _Growing(np.float64, math.inf)
        self._alive = _Growing(np.bool_, False)
        self._doclen = _Growing(np.float64)
        self._domain_slots: dict[str, array] = {}
        self._domain_cache: dict[str, np.ndarray] = {}
        self._slot_terms: list[np.ndarray] = []  # unique term ids of each slot (to undo df on removal)
        # term id -> (slots, BM25 term-frequency weights) as numpy arrays, built on first query of the term; every
        # write clears it (a write changes avgdl, hence every weight)
        self._term_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._vocab: dict[str, int] = {}
        self._post_slots: list[array] = []
        self._post_tf: list[array] = []
        self._df = _Growing(np.int64)
        self._total_len = 0.0
        self._n_alive = 0
        self._versions_of: dict[int, set[int]] = {}  # patch code -> alive slots
        self._multi_cache: np.ndarray | None = None
        self._emb: np.ndarray | None = None  # (capacity, dim) float32
        self._embedded = 0  # slots [0, _embedded) have their vector in _emb
        self._ann: Any = None  # faiss IVF-Flat over slots [0, _ann_count), ids = slots
        self._ann_count = 0
        self._ann_trained_on = 0
        self.ann_build_seconds: float | None = None  # time of the last (re)build of the approximate index

    @property
    def embedder(self) -> Any:
        """The embedding backend (resolved on first use, so a BM25-only caller never loads a model)."""
        if not self._embedder_resolved:
            self._embedder = _resolve_embedder(self._embedder_arg)
            self._embedder_resolved = True
        return self._embedder

    @property
    def query_encoder(self) -> Any:
        """The backend that embeds queries: the ONNX Runtime twin of the embedder when there is one (the packaged
        MiniLM with onnxruntime installed: same vectors, faster), else the embedder itself. Resolved on first use;
        a failed ONNX export is reported once as a warning and torch is used from then on."""
        if not self._query_encoder_resolved:
            with self._lock:
                if not self._query_encoder_resolved:
                    self._query_encoder = _onnx_twin(self.embedder) or self.embedder
                    self._query_encoder_resolved = True
        return self._query_encoder

    def __len__(self) -> int:
        return self._n_alive

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._slot_of

    @property
    def slots(self) -> int:
        """Slots in use, dead ones included (what :meth:`compact` shrinks)."""
        return len(self._doc_ids)

    # -- writing ---------------------------------------------------------------------------------------------------

    def upsert(self, docs: Iterable[dict[str, Any]], *, vectors: np.ndarray | None = None) -> None:
        """Add docs, or replace the ones whose ``doc_id`` is already indexed. Each doc: ``doc_id``, ``patch_id``,
        ``version``, ``text``, and optionally ``domains`` (list), ``status``, ``valid_from`` / ``valid_to`` (ISO
        time, datetime, epoch seconds or None). A malformed doc raises ValueError before anything is changed.
        ``vectors``: the docs' embeddings when the caller already has them (one row per doc, from this index's
        embedder; unit length)."""
        rows = [self._normalise(d) for d in docs]
        if not rows:
            return
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != len(rows):
                raise ValueError(f"vectors must have one row per doc ({len(rows)}), got shape {vectors.shape}")
        seen: dict[str, int] = {}
        for i, row in enumerate(rows):  # the last of duplicates in one call wins
            seen[row["doc_id"]] = i
        keep = sorted(seen.values())
        rows = [rows[i] for i in keep]
        if vectors is not None:
            vectors = vectors[keep]
        elif self.embedder is not None:
            vectors = self._encode([r["text"] for r in rows])
        with self._lock:
            replaced = [self._slot_of[r["doc_id"]] for r in rows if r["doc_id"] in self._slot_of]
            for slot in replaced:
                self._kill(slot)
            first = len(self._doc_ids)
            for row in rows:
                self._add(row)
            if vectors is not None:
                self._put_vectors(first, vectors)
            if self._db is not None:
                with self._db:
                    self._db.executemany("DELETE FROM docs WHERE slot = ?", [(s,) for s in replaced])
                    self._db.executemany(
                        "INSERT INTO docs (slot, doc_id, patch_id, version, domains, status, valid_from, valid_to, "
                        "text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(first + i, r["doc_id"], r["patch_id"], r["version"], json.dumps(r["domains"]), r["status"],
                          _finite_or_none(r["valid_from"]), _finite_or_none(r["valid_to"]), r["text"])
                         for i, r in enumerate(rows)])

    def remove(self, doc_ids: Iterable[str]) -> int:
        """Remove docs by id (unknown ids are ignored); returns how many were removed."""
        with self._lock:
            slots = [self._slot_of[d] for d in doc_ids if d in self._slot_of]
            for slot in slots:
                self._kill(slot)
            if self._db is not None and slots:
                with self._db:
                    self._db.executemany("DELETE FROM docs WHERE slot = ?", [(s,) for s in slots])
            return len(slots)

    @staticmethod
    def _normalise(doc: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise ValueError(f"a doc must be a dict, got {type(doc).__name__}")
        try:
            patch_id, version = str(doc["patch_id"]), int(doc["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a doc needs patch_id and an integer version: {exc}") from exc
        doc_id = str(doc.get("doc_id") or f"{patch_id}@{version}")
        text = doc.get("text")
        if not isinstance(text, str):
            raise ValueError(f"doc {doc_id}: text must be a string")
        domains = doc.get("domains") or []
        if isinstance(domains, str):
            domains = [domains]
        valid_from, valid_to = to_epoch(doc.get("valid_from")), to_epoch(doc.get("valid_to"))
        return {"doc_id": doc_id, "patch_id": patch_id, "version": version, "text": text,
                "domains": sorted({str(d) for d in domains}), "status": str(doc.get("status") or ""),
                "valid_from": -math.inf if valid_from is None else valid_from,
                "valid_to": math.inf if valid_to is None else valid_to}

    def _add(self, row: dict[str, Any]) -> None:
        """Append ``row`` as a new slot (memory only; the caller holds the lock)."""
        slot = len(self._doc_ids)
        self._term_cache.clear()
        self._doc_ids.append(row["doc_id"])
        self._slot_of[row["doc_id"]] = slot
        code = self._patch_codes.setdefault(row["patch_id"], len(self._patch_codes))
        self._patch.append(code)
        self._version.append(row["version"])
        self._status.append(self._status_codes.setdefault(row["status"], len(self._status_codes)))
        self._valid_from.append(row["valid_from"])
        self._valid_to.append(row["valid_to"])
        self._alive.append(True)
        for domain in row["domains"]:
            self._domain_slots.setdefault(domain, array("i")).append(slot)
            self._domain_cache.pop(domain, None)
        versions = self._versions_of.setdefault(code, set())
        versions.add(slot)
        if len(versions) > 1:
            self._multi_cache = None
        # postings
        tokens = tokenize(row["text"])
        self._doclen.append(len(tokens))
        self._total_len += len(tokens)
        self._n_alive += 1
        counts: dict[int, int] = {}
        for tok in tokens:
            tid = self._vocab.get(tok)
            if tid is None:
                tid = self._vocab[tok] = len(self._vocab)
                self._post_slots.append(array("i"))
                self._post_tf.append(array("i"))
                self._df.append(0)
            counts[tid] = counts.get(tid, 0) + 1
        terms = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        for tid, tf in counts.items():
            self._post_slots[tid].append(slot)
            self._post_tf[tid].append(tf)
        self._df.data[terms] += 1
        self._slot_terms.append(terms)

    def _kill(self, slot: int) -> None:
        """Mark ``slot`` dead (memory only): it stops counting in BM25 statistics and never matches a filter."""
        if not self._alive.data[slot]:
            return
        self._alive.data[slot] = False
        self._term_cache.clear()
        doc_id = self._doc_ids[slot]
        self._doc_ids[slot] = None
        self._slot_of.pop(doc_id, None)
        self._df.data[self._slot_terms[slot]] -= 1
        self._slot_terms[slot] = np.zeros(0, dtype=np.int64)
        self._total_len -= float(self._doclen.data[slot])
        self._n_alive -= 1
        versions = self._versions_of.get(int(self._patch.data[slot]))
        if versions is not None:
            versions.discard(slot)
        self._multi_cache = None

    def embed(self, texts: Sequence[str]) -> np.ndarray | None:
        """Vectors of ``texts`` as queries (None without an embedder), from :attr:`query_encoder`; pass a row as
        ``search(vector=)``."""
        if self.embedder is None or not texts:
            return None
        return np.asarray(self.query_encoder.encode(list(texts)), dtype=np.float32)

    def _encode(self, texts: Sequence[str]) -> np.ndarray | None:
        if self.embedder is None or not texts:
            return None
        return np.asarray(self.embedder.encode(list(texts)), dtype=np.float32)

    def _put_vectors(self, first: int, vectors: np.ndarray) -> None:
        """Store the vectors of slots ``first .. first+len(vectors)`` (the caller holds the lock)."""
        end = first + len(vectors)
        if self._emb is None:
            self._emb = np.zeros((max(1024, end), vectors.shape[1]), dtype=np.float32)
        elif self._emb.shape[1] != vectors.shape[1]:
            raise ValueError(f"embedding dimension changed from {self._emb.shape[1]} to {vectors.shape[1]}")
        if end > len(self._emb):
            grown = np.zeros((max(end, 2 * len(self._emb)), self._emb.shape[1]), dtype=np.float32)
            grown[: self._embedded] = self._emb[: self._embedded]
            self._emb = grown
        self._emb[first:end] = vectors
        self._embedded = max(self._embedded, end)

    # -- searching -------------------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, *, mode: str = "hybrid", domains: Sequence[str] | None = None,
               status: Sequence[str] | str | None = None, at: Any = None, latest_only: bool = True,
               vector: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The best ``k`` docs for ``query`` as ``(doc_id, score)``, best first.

        ``mode``: ``hybrid`` (RRF of BM25 and dense; score = fused RRF score), ``bm25`` (score = BM25) or ``dense``
        (score = cosine). ``domains`` / ``status``: keep docs with any of these (None: no filter). ``at``: keep docs
        valid at that time. ``latest_only``: keep only the highest version of each patch among those passing the
        filters. A query with no words returns nothing in ``bm25`` mode. ``vector``: the query's embedding, when
        the caller already has it (skips encoding the query; it must come from the same embedder).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not isinstance(query, str):
            raise TypeError("query must be a string")
        k = int(k)
        if k < 1:
            return []
        if isinstance(status, str):
            status = [status]
        if isinstance(domains, str):
            domains = [domains]
        qvec = None
        if vector is not None and mode != "bm25":
            qvec = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(-1))
        elif mode != "bm25" and self.embedder is not None and query.strip():
            qvec = self.embed([query])[0]  # outside the lock: the model is the slow part
        with self._lock:
            if self._n_alive == 0:
                return []
            mask = self._filter_mask(domains, status, at, latest_only)
            if not mask.any():
                return []
            if qvec is not None:
                self._ensure_embedded()
                if self._emb is None or self._emb.shape[1] != len(qvec):
                    raise ValueError(f"query vector has {len(qvec)} dimensions, the index "
                                     f"{None if self._emb is None else self._emb.shape[1]}")
            depth = max(FUSION_CANDIDATES, k) if mode == "hybrid" else k
            lexical = self._bm25_ranked(query, mask, depth) if mode != "dense" or qvec is None else None
            dense = self._dense_ranked(qvec, mask, depth) if qvec is not None and mode != "bm25" else None
            if mode == "hybrid" and lexical is not None and dense is not None:
                ranked = _rrf([lexical[0], dense[0]], k)
            else:
                slots, scores = lexical if lexical is not None else dense
                ranked = list(zip(slots[:k].tolist(), scores[:k].tolist()))
            return [(self._doc_ids[s], float(score)) for s, score in ranked]

    def _filter_mask(self, domains: Sequence[str] | None, status: Sequence[str] | None, at: Any,
                     latest_only: bool) -> np.ndarray:
        """Boolean mask over slots of the alive docs passing every filter (the caller holds the lock)."""
        mask = self._alive.view.copy()
        if domains is not None:
            in_domain = np.zeros(len(mask), dtype=bool)
            for domain in domains:
                in_domain[self._domain_array(domain)] = True
            mask &= in_domain
        if status is not None:
            allowed = np.zeros(len(self._status_codes) + 1, dtype=bool)
            allowed[[self._status_codes[s] for s in status if s in self._status_codes]] = True
            mask &= allowed[self._status.view]
        if at is not None:
            t = to_epoch(at)
            mask &= (self._valid_from.view <= t) & (t < self._valid_to.view)
        if latest_only:
            self._keep_latest(mask)
        return mask

    def _domain_array(self, domain: str) -> np.ndarray:
        cached = self._domain_cache.get(domain)
        if cached is None:
            slots = self._domain_slots.get(domain)
            cached = np.frombuffer(slots, dtype=np.int32).copy() if slots else np.zeros(0, dtype=np.int32)
            self._domain_cache[domain] = cached
        return cached

    def _keep_latest(self, mask: np.ndarray) -> None:
        """Clear ``mask`` for every passing slot that has a higher passing version of the same patch. Only patches
        with several alive versions can be affected, so only their slots are looked at."""
        if self._multi_cache is None:
            multi = [s for slots in self._versions_of.values() if len(slots) > 1 for s in slots]
            self._multi_cache = np.asarray(sorted(multi), dtype=np.int64)
        multi = self._multi_cache
        if not len(multi):
            return
        passing = multi[mask[multi]]
        if len(passing) < 2:
            return
        patch, version = self._patch.data[passing], self._version.data[passing]
        order = np.lexsort((version, patch))
        passing, patch = passing[order], patch[order]
        superseded = np.append(patch[1:] == patch[:-1], False)  # a later row of the same patch has a higher version
        mask[passing[superseded]] = False

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every slot for ``query`` (dead slots score 0). Query words are counted once each."""
        with self._lock:
            n_slots = len(self._doc_ids)
            scores = np.zeros(n_slots, dtype=np.float64)
            if self._n_alive == 0:
                return scores
            n = self._n_alive
            for tok in dict.fromkeys(tokenize(query)):
                tid = self._vocab.get(tok)
                if tid is None:
                    continue
                df = int(self._df.data[tid])
                if df == 0:
                    continue
                idf = math.log((n - df + 0.5) / (df + 0.5))
                if idf <= 0:
                    idf = 1e-6  # as FTS5: a word in more than half the docs still counts, barely
                slots, weights = self._term_weights(tid)
                scores[slots] += idf * weights
            scores[~self._alive.view] = 0.0
            return scores

    def _term_weights(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots of term ``tid`` and its BM25 weight in each without the idf: ``tf (k1 + 1) / (tf + k1 (1 - b +
        b dl / avgdl))``. Cached until the next write, so a repeated query word costs one scatter-add (the caller
        holds the lock)."""
        cached = self._term_cache.get(tid)
        if cached is None:
            if len(self._term_cache) >= 100_000:  # bound memory on an endless stream of distinct query words
                self._term_cache.clear()
            avgdl = self._total_len / self._n_alive if self._total_len > 0 else 1.0
            # copies, not views: a view would pin the array's buffer and make the next append fail
            slots = np.frombuffer(self._post_slots[tid], dtype=np.int32).copy()
            tf = np.frombuffer(self._post_tf[tid], dtype=np.int32).astype(np.float64)
            norm = BM25_K1 * (1.0 - BM25_B + BM25_B * self._doclen.data[slots] / avgdl)
            cached = self._term_cache[tid] = (slots, tf * (BM25_K1 + 1.0) / (tf + norm))
        return cached

    def _bm25_ranked(self, query: str, mask: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.bm25_scores(query)
        candidates = np.flatnonzero(mask & (scores > 0))
        return _top(candidates, scores[candidates], depth)

    def _dense_ranked(self, qvec: np.ndarray, mask: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``depth`` best passing slots by cosine: exact over the passing rows when the filter is selective,
        else approximate (IVF) when enabled and enough of its candidates pass, else an exact scan of every row."""
        n = len(self._doc_ids)
        passing = int(np.count_nonzero(mask))
        if passing <= depth or passing < n // 8:  # few candidates: score only their rows
            self.dense_counts["exact"] += 1
            candidates = np.flatnonzero(mask)
            with _blas_threads(DENSE_THREADS):
                return _top(candidates, self._emb[candidates] @ qvec, depth)
        if self._ann_wanted():
            found = self._ann_ranked(qvec, mask, depth)
            if found is not None:
                self.dense_counts["ann"] += 1
                return found
            self.dense_counts["fallback"] += 1
        else:
            self.dense_counts["exact"] += 1
        with _blas_threads(DENSE_THREADS):
            scores = self._emb[:n] @ qvec
        np.copyto(scores, -np.inf, where=~mask)  # rank the whole array, the filtered-out rows sink
        slots = np.argpartition(scores, n - depth)[n - depth:]  # no negated copy of 100,000 scores
        return _top(slots, scores[slots], depth)

    def _ann_wanted(self) -> bool:
        """Whether the approximate index serves unselective dense queries now (the caller holds the lock)."""
        if self.ann == "off" or self._emb is None:
            return False
        return self.ann == "on" or (self._embedded >= self.ann_threshold and _faiss() is not None)

    def _ann_ranked(self, qvec: np.ndarray, mask: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``depth`` best passing slots among the approximate index's candidates, or None when fewer than
        ``depth`` of them pass the filters (the caller then scans exactly)."""
        faiss = _faiss()
        self._sync_ann()
        fetch = min(self._ann_count, max(ANN_MIN_CANDIDATES, ANN_OVERFETCH * depth))
        with _faiss_threads(faiss, ANN_THREADS):
            scores, slots = self._ann.search(qvec.reshape(1, -1), fetch)
        scores, slots = scores[0], slots[0]
        keep = slots >= 0  # -1: fewer results than asked for
        keep[keep] = mask[slots[keep]]  # removed, replaced and filtered-out slots drop here
        if int(np.count_nonzero(keep)) < depth:
            return None
        return _top(slots[keep], scores[keep], depth)

    def _sync_ann(self) -> None:
        """Bring the approximate index up to date with the vectors: build it (or retrain it after fourfold
        growth), else append the slots embedded since the last query. Slot vectors never change in place (an
        upsert appends a new slot; :meth:`compact` resets the index), so appending is all a write needs."""
        faiss = _faiss()
        n = self._embedded
        if self._ann is None or n > ANN_RETRAIN_GROWTH * self._ann_trained_on:

            started = time.perf_counter()
            dim = self._emb.shape[1]
            lists = max(1, min(n // ANN_TRAIN_PER_LIST, round(ANN_LISTS_PER_SQRT * math.sqrt(n))))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = max(1, round(ANN_PROBE_SHARE * lists))
            alive = np.flatnonzero(self._alive.data[:n])
            sample_size = min(len(alive), ANN_TRAIN_PER_LIST * lists)
            sample = np.random.default_rng(0).choice(alive, sample_size, replace=False) if len(alive) else alive
            training = self._emb[np.sort(sample)] if len(sample) >= lists else self._emb[:n]
            index.train(np.ascontiguousarray(training))
            self._ann, self._ann_count, self._ann_trained_on = index, 0, n
            self._ann_add(n)
            self.ann_build_seconds = time.perf_counter() - started
        elif self._ann_count < n:
            self._ann_add(n)

    def _ann_add(self, end: int) -> None:
        for start in range(self._ann_count, end, 50_000):  # bounded temporary copies
            stop = min(end, start + 50_000)
            self._ann.add_with_ids(np.ascontiguousarray(self._emb[start:stop]), np.arange(start, stop, dtype=np.int64))
        self._ann_count = end

    def _ensure_embedded(self) -> None:
        """Embed slots that have no vector yet (docs loaded from disk after the last snapshot)."""
        n = len(self._doc_ids)
        if self._embedded >= n:
            return
        missing = list(range(self._embedded, n))
        texts = self._texts_of(missing)
        vectors = self._encode(texts)
        if vectors is not None:
            self._put_vectors(self._embedded, vectors)

    def _texts_of(self, slots: list[int]) -> list[str]:
        """Texts of ``slots`` from the SQLite file (dead or unknown slots give "")."""
        if self._db is None:
            raise RuntimeError("an in-memory index keeps no texts to re-embed")
        found: dict[int, str] = {}
        for i in range(0, len(slots), 900):
            chunk = slots[i:i + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT slot, text FROM docs WHERE slot IN ({marks})", chunk))
        return [found.get(s, "") for s in slots]

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """The stored fields of a doc (persistent indexes only return the text)."""
        with self._lock:
            slot = self._slot_of.get(doc_id)
            if slot is None:
                return None
            patch_id = next(p for p, c in self._patch_codes.items() if c == self._patch.data[slot])
            status = next(s for s, c in self._status_codes.items() if c == self._status.data[slot])
            return {"doc_id": doc_id, "patch_id": patch_id, "version": int(self._version.data[slot]),
                    "status": status, "domains": sorted(d for d, s in self._domain_slots.items() if slot in s),
                    "valid_from": _finite_or_none(float(self._valid_from.data[slot])),
                    "valid_to": _finite_or_none(float(self._valid_to.data[slot]))}

    # -- persistence -----------------------------------------------------------------------------------------------

    def _load(self) -> None:
        """Rebuild memory from the SQLite file and the embeddings snapshot (the caller is the constructor)."""
        assert self._db is not None
        rows = self._db.execute("SELECT slot, doc_id, patch_id, version, domains, status, valid_from, valid_to, text "
                                "FROM docs ORDER BY slot").fetchall()
        if rows and rows[-1][0] != len(rows) - 1:
            self._renumber(rows)  # slots are dense after a compaction; holes mean removals since: close them
            rows = self._db.execute("SELECT slot, doc_id, patch_id, version, domains, status, valid_from, valid_to, "
                                    "text FROM docs ORDER BY slot").fetchall()
            self._drop_snapshot()
        for _slot, doc_id, patch_id, version, domains, status, vf, vt, text in rows:
            self._add({"doc_id": doc_id, "patch_id": patch_id, "version": version, "domains": json.loads(domains),
                       "status": status, "valid_from": -math.inf if vf is None else vf,
                       "valid_to": math.inf if vt is None else vt, "text": text})
        self._load_snapshot()

    def _renumber(self, rows: list[tuple]) -> None:
        assert self._db is not None
        with self._db:
            for new, row in enumerate(rows):
                if row[0] != new:
                    self._db.execute("UPDATE docs SET slot = ? WHERE slot = ?", (new, row[0]))

    def _snapshot_paths(self) -> tuple[Path, Path]:
        assert self.path is not None
        return self.path / "embeddings.npy", self.path / "embeddings.json"

    def _drop_snapshot(self) -> None:
        for p in self._snapshot_paths():
            p.unlink(missing_ok=True)

    def _load_snapshot(self) -> None:
        npy, info_path = self._snapshot_paths()
        if not (npy.is_file() and info_path.is_file()):
            return
        try:
            info = json.loads(info_path.read_text())
            matrix = np.load(npy)
        except (OSError, ValueError):
            return  # a damaged snapshot is rebuilt from the texts
        embedder = self.embedder
        if embedder is None or info.get("spec") != _spec_of(embedder):
            return  # vectors of another model: re-embed
        stored = info.get("doc_ids", [])
        # only the prefix of slots whose doc ids match the snapshot is reused (a later upsert may have replaced one)
        same = 0
        for a, b in zip(stored, self._doc_ids):
            if a != b:
                break
            same += 1
        same = min(same, len(matrix))
        if same:
            self._put_vectors(0, np.ascontiguousarray(matrix[:same], dtype=np.float32))
            self._embedded = same

    def save(self) -> None:
        """Write the embeddings snapshot (compacting first when more than a quarter of the slots are dead)."""
        if self.path is None:
            return
        with self._lock:
            if len(self._doc_ids) > 64 and self._n_alive < 0.75 * len(self._doc_ids):
                self.compact()
            if self.embedder is None:
                return
            self._ensure_embedded()
            n = len(self._doc_ids)
            npy, info_path = self._snapshot_paths()
            tmp_npy, tmp_info = npy.with_suffix(".npy.tmp"), info_path.with_suffix(".json.tmp")
            with open(tmp_npy, "wb") as f:
                np.save(f, self._emb[:n] if self._emb is not None else np.zeros((0, 0), dtype=np.float32))
            tmp_info.write_text(json.dumps({"spec": _spec_of(self.embedder), "doc_ids": self._doc_ids[:n]}))
            tmp_npy.replace(npy)
            tmp_info.replace(info_path)

    def compact(self) -> None:
        """Drop dead slots: renumber the live docs densely (memory, SQLite file and vectors)."""
        with self._lock:
            live = np.flatnonzero(self._alive.view)
            vectors = None
            if self._emb is not None and self._embedded >= len(self._doc_ids):
                vectors = self._emb[live].copy()
            if self._db is not None:
                rows = self._db.execute("SELECT slot, doc_id, patch_id, version, domains, status, valid_from, "
                                        "valid_to, text FROM docs ORDER BY slot").fetchall()
                self._renumber(rows)
                docs = [{"doc_id": r[1], "patch_id": r[2], "version": r[3], "domains": json.loads(r[4]),
                         "status": r[5], "valid_from": -math.inf if r[6] is None else r[6],
                         "valid_to": math.inf if r[7] is None else r[7], "text": r[8]} for r in rows]
            else:
                raise RuntimeError("compact() needs a persistent index (an in-memory one keeps no texts)")
            self._reset_memory()
            for doc in docs:
                self._add(doc)
            if vectors is not None and len(vectors) == len(docs):
                self._put_vectors(0, vectors)

    def close(self) -> None:
        """Save and release the SQLite file."""
        if self._db is not None:
            self.save()
            self._db.close()
            self._db = None

    def __enter__(self) -> HybridIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_BLAS_CONTROLLER: Any = None


def _blas_threads(threads: int | None) -> Any:
    """A context limiting BLAS to ``threads`` threads (threadpoolctl, from the ``ml`` extra); a no-op context when
    ``threads`` is None or threadpoolctl is missing."""
    global _BLAS_CONTROLLER
    if threads is None:
        return contextlib.nullcontext()
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ModuleNotFoundError:
            _BLAS_CONTROLLER = False
        else:
            _BLAS_CONTROLLER = ThreadpoolController()
    if _BLAS_CONTROLLER is False:
        return contextlib.nullcontext()
    return _BLAS_CONTROLLER.limit(limits=threads, user_api="blas")


_FAISS: Any = None


def _faiss() -> Any:
    """The faiss module (``faiss-cpu``, in the ``knowledge`` extra), or None when it is not installed."""
    global _FAISS
    if _FAISS is None:
        try:
            import faiss
        except ModuleNotFoundError:
            _FAISS = False
        else:
            _FAISS = faiss
    return _FAISS or None


@contextlib.contextmanager
def _faiss_threads(faiss: Any, threads: int) -> Any:
    """Run faiss with ``threads`` OpenMP threads, restoring the process-wide setting afterwards."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _onnx_twin(embedder: Any) -> Any:
    """The :class:`~assay.models.embeddings.OnnxMiniLMBackend` giving the same vectors as ``embedder``, loaded and
    ready, or None: only for the packaged MiniLM on torch (the twin gets the same max_seq_length), with onnxruntime
    installed. A failed
    export (no ``onnx`` package, an exporter error) warns and returns None, so search falls back to torch."""
    from assay.models import embeddings

    if not isinstance(embedder, embeddings.SentenceTransformerBackend) or not embeddings.onnx_runtime_available():
        return None
    packaged = embeddings._safe_packaged_path()
    if packaged is None or embedder.model_path != str(packaged):
        return None
    try:
        twin = embeddings.OnnxMiniLMBackend(packaged, max_seq_length=embedder.max_seq_length)
        twin.encode(["warm-up"])  # exports on the first run ever, then loads the session: fail here, not mid-query
        return twin
    except Exception as exc:  # an accelerator, not a requirement: any failure means torch (ORT errors are bare)
        import warnings

        warnings.warn(f"query embedding stays on torch: the ONNX Runtime encoder is unavailable ({exc})",
                      RuntimeWarning, stacklevel=3)
        return None


def _spec_of(embedder: Any) -> dict[str, Any]:
    try:
        return embedder.spec()
    except NotImplementedError:
        return {"name": getattr(embedder, "name", type(embedder).__name__)}


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _top(candidates: np.ndarray, scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best (slot, score) of ``candidates``, best first (ties: lower slot first)."""
    if len(candidates) > depth:
        keep = np.argpartition(-scores, depth - 1)[:depth]
        candidates, scores = candidates[keep], scores[keep]
    order = np.lexsort((candidates, -scores))
    return candidates[order], scores[order]


def _rrf(ranked_lists: list[np.ndarray], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: ``score(d) = sum over lists of 1 / (RRF_K + rank of d)``, rank from 1."""
    fused: dict[int, float] = {}
    for slots in ranked_lists:
        for rank, slot in enumerate(slots.tolist(), start=1):
            fused[slot] = fused.get(slot, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]

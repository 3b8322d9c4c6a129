"""The quality classifier: a small linear head on text embeddings, trained from labelled texts, saved as one file.

Two recipes from the literature, one mechanism (a linear head on text features):

* **DCLM style** ("reference vs random"): texts you want more of (``positive``: curated instructions, textbook-like
  prose, clean articles) against texts from the raw crawl (``negative``); a logistic regression; the score is the
  probability of "looks like the reference". Binary labels.
* **FineWeb-Edu style**: texts graded 0..5 by an LLM judge or by people; a ridge regression; the score is the
  predicted grade (FineWeb-Edu keeps documents scoring >= 3). Numeric labels.

Features come from :mod:`assay.models.embeddings`: all-MiniLM-L6-v2 sentence embeddings (default; better on unseen
sources) or hashed word 1-2-grams (the light fastText-like backend; no torch, ~100x faster).

A trained model is one ``.npz`` file (no pickle: it is safe to load a model someone sent you) holding the linear
weights and a JSON header with the backend spec, the task, the labels, training statistics and held-out metrics.
Inference needs only numpy and the embedding backend, not scikit-learn.

The steps that use it (``quality_score``, ``quality_filter``, ``quality_select``) are in :mod:`assay.harvest.quality`;
the CLI (``assay quality train | score | info``) is in :mod:`assay.harvest.quality_cli`.
"""

from __future__ import annotations

import math
import os
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import orjson
import xxhash

from assay.models.embeddings import EmbeddingBackend, HashedNgramBackend, backend_from_spec

FORMAT = "assay-quality-model"
FORMAT_VERSION = 1
DEFAULT_SIGNAL = "quality.score"
Task = Literal["binary", "regression"]

#: label values read as "the good class" when a binary label file uses words rather than 0/1
POSITIVE_WORDS = frozenset({"1", "true", "yes", "pos", "positive", "good", "high", "hq", "keep", "reference"})


# -- the model file ------------------------------------------------------------------------------------------------

class QualityModel:
    """A linear quality head on an embedding backend: ``score(texts) -> float32 array``.

    For ``task == "binary"`` the score is the probability of the positive class (0..1); for ``"regression"`` it is
    the predicted label (e.g. an educational grade 0..5), not clipped, so ranking by score stays meaningful.
    """

    def __init__(self, task: Task, backend_spec: dict[str, Any], coef: np.ndarray, intercept: float,
                 info: dict[str, Any] | None = None) -> None:
        if task not in ("binary", "regression"):
            raise ValueError(f"unknown task {task!r}")
        self.task: Task = task
        self.backend_spec = dict(backend_spec)
        self.coef = np.asarray(coef, dtype=np.float32).ravel()
        self.intercept = float(intercept)
        #: labels, training statistics, held-out metrics, provenance (JSON-serialisable)
        self.info = dict(info or {})
        self._backend: EmbeddingBackend | None = None
        if self.backend_spec.get("dim") is not None and int(self.backend_spec["dim"]) != len(self.coef):
            raise ValueError(f"model has {len(self.coef)} weights but its backend makes "
                             f"{self.backend_spec['dim']}-d features")

    # -- inference ---------------------------------------------------------------------------------------------
    def backend(self, **runtime: Any) -> EmbeddingBackend:
        """The embedding backend the model was trained on (built once; ``runtime``: batch_size, device)."""
        if self._backend is None:
            self._backend = backend_from_spec(self.backend_spec, **runtime)
        elif "batch_size" in runtime:  # the device is fixed once the model is loaded; the batch size is not
            self._backend.batch_size = int(runtime["batch_size"])
        return self._backend

    def raw_scores(self, texts: Sequence[str]) -> np.ndarray:
        """The linear output ``w·x + b`` (log-odds for binary models)."""
        backend = self.backend()
        if isinstance(backend, HashedNgramBackend):
            out = backend.encode_sparse(texts).dot(self.coef.astype(np.float64))
        else:
            out = backend.encode(texts).astype(np.float64) @ self.coef.astype(np.float64)
        return out + self.intercept

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Quality scores of ``texts`` (see the class docstring for their scale)."""
        z = self.raw_scores(texts)
        if self.task == "binary":
            z = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow warnings
        return z.astype(np.float32)

    # -- file --------------------------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "task": self.task, "backend": self.backend_spec,
                "intercept": self.intercept, **self.info}

    def save(self, path: str | Path) -> Path:
        """Write the model to one ``.npz`` file atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = np.frombuffer(orjson.dumps(self.header(), option=orjson.OPT_SERIALIZE_NUMPY), dtype=np.uint8)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # honours the umask
        try:
            with open(tmp, "xb") as f:
                np.savez_compressed(f, header=header, coef=self.coef)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> "QualityModel":
        """Read a model written by :meth:`save` (never unpickles anything)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                header = orjson.loads(z["header"].tobytes())
                coef = z["coef"]
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not an Assay quality model: {e}") from None
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not an Assay quality model (format {header.get('format')!r})")
        if header.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer Assay (model format {header['format_version']})")
        info = {k: v for k, v in header.items()
                if k not in ("format", "format_version", "task", "backend", "intercept")}
        return cls(header["task"], header["backend"], coef, header["intercept"], info)

    def __repr__(self) -> str:
        return f"QualityModel({self.task}, backend={self.backend_spec.get('kind')}, dim={len(self.coef)})"


# -- training ------------------------------------------------------------------------------------------------------

def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def encode_labels(labels: Sequence[Any], task: Literal["auto", "binary", "regression"] = "auto",
                  positive_label: Any = None) -> tuple[Task, np.ndarray, dict[str, Any]]:
    """Turn raw labels into numbers: ``(task, y, label_info)``.

    ``auto``: numbers that are all 0/1 (or booleans) → binary; other numbers → regression; exactly two distinct
    words → binary, the positive one being ``positive_label`` or the one in :data:`POSITIVE_WORDS`.
    """
    if len(labels) == 0:
        raise ValueError("no labelled texts")
    numbers = [_as_number(v) for v in labels]
    numeric = all(n is not None for n in numbers)
    if positive_label is not None:
        if task == "regression":
            raise ValueError("positive_label only makes sense for a binary task")
        pos = str(positive_label)
        classes = sorted({str(v) for v in labels})
        if pos not in classes:
            raise ValueError(f"positive label {pos!r} is not among the labels {classes[:10]}")
        y = np.array([str(v) == pos for v in labels], dtype=np.float64)
        return "binary", y, {"classes": classes, "positive_label": pos}
    if numeric:
        y = np.array(numbers, dtype=np.float64)
        distinct = set(np.unique(y).tolist())
        if task == "binary" or (task == "auto" and distinct <= {0.0, 1.0}):
            if not distinct <= {0.0, 1.0}:
                raise ValueError(f"a binary task needs 0/1 labels (got {sorted(distinct)[:10]}); "
                                 "pass positive_label to pick the good class")
            return "binary", y, {"classes": [0, 1], "positive_label": 1}
        return "regression", y, {"label_min": float(y.min()), "label_max": float(y.max()),
                                 "label_mean": float(y.mean())}
    if task == "regression":
        bad = next(v for v, n in zip(labels, numbers) if n is None)
        raise ValueError(f"regression needs numeric labels; got {bad!r}")
    classes = sorted({str(v) for v in labels})
    if len(classes) != 2:
        raise ValueError(f"a binary task needs exactly two label values, got {len(classes)}: {classes[:10]}")
    known = [c for c in classes if c.lower() in POSITIVE_WORDS]
    if len(known) != 1:
        raise ValueError(f"cannot tell which of {classes} is the good class: pass positive_label")
    y = np.array([str(v) == known[0] for v in labels], dtype=np.float64)
    return "binary", y, {"classes": classes, "positive_label": known[0]}


def _features(backend: EmbeddingBackend, texts: Sequence[str]) -> Any:
    if isinstance(backend, HashedNgramBackend):
        return backend.encode_sparse(texts).to_scipy()
    return backend.encode(texts)


def _binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score

    pred = (p >= 0.5).astype(np.float64)
    m: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum()), "accuracy": float((pred == y).mean()),
                         "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
                         "majority_baseline": float(max(y.mean(), 1 - y.mean()))}
    if 0 < y.sum() < len(y):
        m["auc"] = float(roc_auc_score(y, p))
        m["log_loss"] = float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return m


def _regression_metrics(y: np.ndarray, pred: np.ndarray, train_mean: float, lo: float, hi: float) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    err = pred - y
    m: dict[str, Any] = {"n": int(len(y)), "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                         "mae_baseline": float(np.abs(train_mean - y).mean()),
                         "rounded_accuracy": float((np.clip(np.rint(pred), lo, hi) == y).mean())}
    if len(y) > 2 and np.std(y) > 0 and np.std(pred) > 0:
        m["pearson"] = float(pearsonr(pred, y)[0])
        m["spearman"] = float(spearmanr(pred, y)[0])
    if lo < 3 <= hi:  # FineWeb-Edu's cut: "educational" means a grade of 3 or more
        truth, guess = y >= 3, pred >= 3
        tp = float((truth & guess).sum())
        denom = float(truth.sum() + guess.sum())
        m["f1_at_3"] = 2 * tp / denom if denom else 0.0
    return m


def train_quality_model(texts: Sequence[str], labels: Sequence[Any], *, backend: EmbeddingBackend,
                        task: Literal["auto", "binary", "regression"] = "auto", positive_label: Any = None,
                        eval_texts: Sequence[str] | None = None, eval_labels: Sequence[Any] | None = None,
                        test_fraction: float = 0.2, seed: int = 0, class_weight: str | None = "balanced",
                        cv: int = 3, sources: dict[str, Any] | None = None) -> QualityModel:
    """Fit a quality head on ``texts`` and measure it on held-out texts.

    The held-out set is ``eval_texts``/``eval_labels`` when given (e.g. split by site, so that pages of one site
    are never on both sides), otherwise a seeded ``test_fraction`` split (stratified for binary tasks). The saved
    model is the one fitted on the training part, so its recorded metrics describe exactly that model.
    Regularisation strength is chosen by ``cv``-fold cross-validation on the training part. Binary classes are
    weighted to balance by default: the ratio of reference to random texts is the user's choice, not a prior.
    """
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import train_test_split

    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if eval_texts is not None and (eval_labels is None or len(eval_texts) != len(eval_labels)):
        raise ValueError("eval_texts needs one eval_label per text")
    # texts with nothing to read carry no signal for either class: leave them out, and say how many
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    skipped_empty = len(texts) - len(keep)
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    task_, y_all, label_info = encode_labels(list(labels) + list(eval_labels or []), task, positive_label)
    y, y_eval = y_all[: len(texts)], y_all[len(texts):]
    if eval_texts is None:
        if not 0 < test_fraction < 1:
            raise ValueError("test_fraction must be between 0 and 1 when no evaluation set is given")
        stratify = y if task_ == "binary" else None
        idx_train, idx_test = train_test_split(np.arange(len(texts)), test_size=test_fraction, random_state=seed,
                                               stratify=stratify)
        eval_texts = [texts[i] for i in idx_test]
        y_eval = y[idx_test]
        texts, y = [texts[i] for i in idx_train], y[idx_train]
    else:
        eval_texts = list(eval_texts)
    if task_ == "binary":
        counts = np.bincount(y.astype(int), minlength=2)
        if counts.min() < 2:
            raise ValueError(f"each class needs at least 2 training texts (negatives={counts[0]}, "
                             f"positives={counts[1]})")

    t0 = time.perf_counter()
    X = _features(backend, texts)
    t_encode = time.perf_counter() - t0
    dense = isinstance(X, np.ndarray)
    if dense:  # standardise embedding dimensions so one regularisation grid suits every model; folded in below
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-6] = 1.0
        X = (X - mean) / scale
    else:
        # hashed features: fit on the buckets the training texts use (an L2-penalised weight of a bucket no
        # training text has stays 0 anyway); the same solution, found several times faster
        used = np.unique(X.indices)
        X = X[:, used]

    t1 = time.perf_counter()
    grid = np.logspace(-3, 3, 7)
    if task_ == "binary":
        folds = int(max(2, min(cv, np.bincount(y.astype(int)).min())))
        # sparse: liblinear's dual coordinate descent, fast when there are more features than texts
        solver = {"solver": "lbfgs", "tol": 1e-8} if dense else {"solver": "liblinear", "dual": True}
        clf = LogisticRegressionCV(Cs=1.0 / grid[::-1], cv=folds, scoring="neg_log_loss", max_iter=3000,
                                   class_weight=class_weight, random_state=seed, l1_ratios=(0.0,),
                                   use_legacy_attributes=False, **solver)
        clf.fit(X, y)
        fitted, intercept = clf.coef_.ravel().astype(np.float64), float(clf.intercept_[0])
        chosen = {"C": float(np.ravel(clf.C_)[0])}
    else:
        reg = RidgeCV(alphas=grid)
        reg.fit(X, y)
        fitted, intercept = np.ravel(reg.coef_).astype(np.float64), float(reg.intercept_)
        chosen = {"alpha": float(reg.alpha_)}
    t_fit = time.perf_counter() - t1
    if dense:
        coef = fitted / scale
        intercept = intercept - float(np.dot(coef, mean))
    else:
        coef = np.zeros(backend.dim, dtype=np.float64)
        coef[used] = fitted

    model = QualityModel(task_, backend.spec(), coef, intercept)
    pred = model.score(eval_texts).astype(np.float64) if len(eval_texts) else np.zeros(0)
    if task_ == "binary":
        metrics = _binary_metrics(y_eval, pred) if len(eval_texts) else {}
    else:
        metrics = _regression_metrics(y_eval, pred, float(y.mean()), label_info["label_min"],
                                      label_info["label_max"]) if len(eval_texts) else {}
    from assay import __version__

    model.info = {
        **label_info,
        "training": {"n_train": len(texts), "n_eval": len(eval_texts), "skipped_empty": skipped_empty,
                     "label_counts": {_label_key(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))},
                     "regularisation": chosen, "class_weight": class_weight if task_ == "binary" else None,
                     "seconds_encode": round(t_encode, 3), "seconds_fit": round(t_fit, 3), "seed": seed,
                     "held_out": "given" if eval_labels is not None else f"random {test_fraction:g}"},
        "metrics": metrics,
        "sources": sources or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "assay_version": __version__,
    }
    return model


def _label_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- loading once per process -------------------------------------------------------------------------------------

_MODELS: dict[tuple[str, float], QualityModel] = {}


def load_model_cached(path: str) -> QualityModel:
    """Load a model once per process (keyed by path and modification time), so steps in one worker share it."""
    p = Path(path).expanduser()
    try:
        key = (str(p.resolve()), p.stat().st_mtime)
    except FileNotFoundError:
        raise FileNotFoundError(f"quality model {path} not found (train one with `assay quality train`)") from None
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = QualityModel.load(p)
    return model


def model_digest(path: str) -> str | None:
    """A short hash of a model file's bytes (None if it does not exist yet, e.g. a recipe checked before training)."""
    try:
        return xxhash.xxh3_64_hexdigest(Path(path).expanduser().read_bytes())[:12]
    except OSError:
        return None

"""ImageReward-style reward model for images: a small head on frozen image-text embeddings, trained from pairwise
human preferences, and the step ``image_reward`` that scores records with it.

ImageReward (Xu et al., 2023) and PickScore (Kirstain et al., 2023) learn "which of two images for this prompt do
people prefer" as a Bradley-Terry model: ``P(a preferred to b | prompt) = sigmoid(r(a, prompt) - r(b, prompt))``,
with ``r`` a small network on vision-language features. Here ``r`` reads the features of any
:class:`~assay.models.image_embeddings.ImageTextEmbedder`::

    z = [image vector, text vector, image * text (elementwise), cosine(image, text)]     (standardised)
    r = w . z                              (hidden = 0: a linear Bradley-Terry / logistic model)
    r = v . tanh(W z + c)                  (hidden > 0: one hidden layer)

The product and cosine terms matter: in a pair both images share the prompt, so a reward that were linear in the
image and text vectors alone could never learn "the image that matches the prompt wins". Training is full-batch
Adam on the Bradley-Terry log-loss with L2 weight decay, in numpy (no torch needed for the head).

Preferences are records of modality ``preference`` (or plain rows) shaped like the annotation app's ``dpo``
export: ``{"prompt", "chosen", "rejected"}`` with images as bytes, ``data:image/`` URIs or file paths; Pick-a-Pic's
``{"caption", "jpg_0", "jpg_1", "label_0"}`` layout is read too (ties are left out).

The head is saved as ``.npz`` (arrays, plus its metadata as a JSON string; loaded with ``allow_pickle=False``).
Rewards are reported standardised on the training images (mean 0, sd 1), like ImageReward's.

Train: ``python -m assay.evolve.visual train prefs.jsonl --model auto --out head.npz``. Score in a recipe::

    - image_reward: {head: head.npz}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np
import xxhash

from assay.core.record import Record
from assay.core.step import Batch, Step, StepContext, StepParams

HEAD_FORMAT = "assay-image-reward"
HEAD_VERSION = 1
#: file names taken for local image paths in preference rows (any other string is text)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImagePreference:
    """One judgement: for ``prompt``, ``chosen`` was preferred to ``rejected`` (images in any form load_image reads)."""

    prompt: str
    chosen: Any
    rejected: Any


def _as_image(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value)
    if isinstance(value, dict) and set(value) == {"$bytes"}:
        return value
    if isinstance(value, str) and (value.startswith("data:image/") or value.lower().endswith(IMAGE_SUFFIXES)) \
            and not value.startswith(("http://", "https://")):
        return value  # data URI or local image path; remote URLs are not fetched here, other strings are text
    return None


def preference_of(content: Any) -> ImagePreference | None:
    """The image preference in a record's content or an export row, or ``None`` when it is not one."""
    if not isinstance(content, dict):
        return None
    prompt = content.get("prompt", content.get("caption"))
    if not isinstance(prompt, str) or not prompt.strip():
        return None
    if "chosen" in content and "rejected" in content:
        a, b = _as_image(content["chosen"]), _as_image(content["rejected"])
    elif "jpg_0" in content and "jpg_1" in content and "label_0" in content:  # Pick-a-Pic
        label = content["label_0"]
        if label not in (0, 1, 0.0, 1.0):
            return None  # a tie says nothing about which is better
        first, second = _as_image(content["jpg_0"]), _as_image(content["jpg_1"])
        a, b = (first, second) if float(label) == 1.0 else (second, first)
    else:
        return None
    if a is None or b is None:
        return None
    return ImagePreference(prompt, a, b)


def preferences_from(rows: Iterable[Any]) -> tuple[list[ImagePreference], int]:
    """Image preferences from records or plain dict rows; returns ``(preferences, number of rows skipped)``."""
    prefs, skipped = [], 0
    for row in rows:
        content = row.content if isinstance(row, Record) else row
        if isinstance(content, dict) and Record.is_record_dict(content):
            content = content.get("content")
        pref = preference_of(content)
        if pref is None:
            skipped += 1
        else:
            prefs.append(pref)
    return prefs, skipped


def _key(image: Any) -> str:
    if isinstance(image, dict):
        image = image["$bytes"]
    data = image if isinstance(image, bytes) else str(image).encode("utf-8", "surrogatepass")
    return xxhash.xxh3_128_hexdigest(data)


def reward_features(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """The head's input for rows of image and text vectors: ``[img, txt, img*txt, cos]`` (unstandardised)."""
    prod = img * txt
    return np.concatenate([img, txt, prod, prod.sum(axis=1, keepdims=True)], axis=1).astype(np.float64)


@dataclass
class TrainReport:
    pairs: int
    train_pairs: int
    val_pairs: int
    skipped: int
    undecodable: int
    train_accuracy: float
    val_accuracy: float | None
    final_loss: float
    epochs: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d


class RewardHead:
    """The Bradley-Terry reward head: standardisation, weights, and the embedder it was trained on."""

    def __init__(self, dim: int, hidden: int = 0, *, embedder_name: str = "", embedder_spec: str = "",
                 seed: int = 0) -> None:
        self.dim = dim
        self.hidden = hidden
        self.embedder_name = embedder_name
        self.embedder_spec = embedder_spec
        n_in = 3 * dim + 1
        rng = np.random.default_rng(seed)
        self.mean = np.zeros(n_in)
        self.std = np.ones(n_in)
        if hidden > 0:
            self.W = rng.normal(0.0, 1.0 / math.sqrt(n_in), (n_in, hidden))
            self.c = np.zeros(hidden)
            self.v = rng.normal(0.0, 1.0 / math.sqrt(hidden), hidden)
        else:
            self.w = np.zeros(n_in)
        self.score_mean = 0.0
        self.score_std = 1.0
        self.report: dict[str, Any] = {}

    # -- the function ---------------------------------------------------------------------------------------------
    def _params(self) -> list[np.ndarray]:
        return [self.W, self.c, self.v] if self.hidden > 0 else [self.w]

    def _raw(self, z: np.ndarray) -> tuple[np.ndarray, Any]:
        """Raw rewards for standardised features ``z``, plus what the backward pass needs."""
        if self.hidden > 0:
            h = np.tanh(z @ self.W + self.c)
            return h @ self.v, h
        return z @ self.w, None

    def _grads(self, z: np.ndarray, cache: Any, g: np.ndarray) -> list[np.ndarray]:
        """Gradients of ``sum(g * r(z))`` with respect to the parameters."""
        if self.hidden > 0:
            h = cache
            gv = h.T @ g
            gh = np.outer(g, self.v) * (1.0 - h * h)
            return [z.T @ gh, gh.sum(axis=0), gv]
        return [z.T @ g]

    def score(self, img: np.ndarray, txt: np.ndarray) -> np.ndarray:
        """Standardised rewards for rows of image and text vectors (higher: more preferred)."""
        if img.shape[1] != self.dim or txt.shape[1] != self.dim:
            raise ValueError(f"the head expects {self.dim}-d vectors ({self.embedder_name}), got {img.shape[1]}")
        z = (reward_features(img, txt) - self.mean) / self.std
        raw, _ = self._raw(z)
        return (raw - self.score_mean) / self.score_std

    # -- training -------------------------------------------------------------------------------------------------
    def fit(self, img_c: np.ndarray, img_r: np.ndarray, txt: np.ndarray, *, epochs: int = 400, lr: float = 0.02,
            weight_decay: float = 1e-3, val_fraction: float = 0.2, seed: int = 0) -> TrainReport:
        """Fit on pairs (``img_c[i]`` preferred to ``img_r[i]`` for the prompt ``txt[i]``); a random
        ``val_fraction`` of the pairs is held out and its pairwise accuracy reported."""
        n = len(txt)
        if n < 2:
            raise ValueError("need at least 2 preference pairs to train a reward head")
        order = np.random.default_rng(seed).permutation(n)
        n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
        n_val = min(n_val, n - 1)
        val, tr = order[:n_val], order[n_val:]
        fc, fr = reward_features(img_c, txt), reward_features(img_r, txt)
        both = np.concatenate([fc[tr], fr[tr]])
        self.mean = both.mean(axis=0)
        self.std = both.std(axis=0) + 1e-6
        zc, zr = (fc - self.mean) / self.std, (fr - self.mean) / self.std
        params = self._params()
        m1 = [np.zeros_like(p) for p in params]
        m2 = [np.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        loss = float("nan")
        for t in range(1, epochs + 1):
            rc, cache_c = self._raw(zc[tr])
            rr, cache_r = self._raw(zr[tr])
            margin = rc - rr
            # Bradley-Terry log-loss: mean softplus(-margin), computed stably
            loss = float(np.mean(np.logaddexp(0.0, -margin))) + weight_decay * sum(float((p * p).sum())
                                                                                for p in params)
            g = -1.0 / (1.0 + np.exp(margin)) / len(tr)  # d loss / d margin
            grads = [gc - gr + 2 * weight_decay * p for gc, gr, p in
                     zip(self._grads(zc[tr], cache_c, g), self._grads(zr[tr], cache_r, g), params)]
            for p, gr_, a, b in zip(params, grads, m1, m2):
                a *= b1
                a += (1 - b1) * gr_
                b *= b2
                b += (1 - b2) * gr_ * gr_
                p -= lr * (a / (1 - b1 ** t)) / (np.sqrt(b / (1 - b2 ** t)) + eps)
        raw_tr = np.concatenate([self._raw(zc[tr])[0], self._raw(zr[tr])[0]])
        self.score_mean = float(raw_tr.mean())
        self.score_std = float(raw_tr.std()) or 1.0

        def accuracy(idx: np.ndarray) -> float:
            return float(np.mean(self._raw(zc[idx])[0] > self._raw(zr[idx])[0]))

        return TrainReport(pairs=n, train_pairs=len(tr), val_pairs=len(val), skipped=0, undecodable=0,
                           train_accuracy=accuracy(tr), val_accuracy=accuracy(val) if len(val) else None,
                           final_loss=loss, epochs=epochs)

    # -- persistence ----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the head as ``.npz`` (no pickle): arrays plus a JSON metadata string."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": HEAD_FORMAT, "version": HEAD_VERSION, "dim": self.dim, "hidden": self.hidden,
                "embedder": self.embedder_name, "embedder_spec": self.embedder_spec,
                "score_mean": self.score_mean, "score_std": self.score_std, "report": self.report}
        arrays = {"mean": self.mean, "std": self.std}
        arrays.update({"W": self.W, "c": self.c, "v": self.v} if self.hidden > 0 else {"w": self.w})
        tmp = path.with_name(f".tmp-{path.name}")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RewardHead":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != HEAD_FORMAT:
                    raise ValueError(f"{path} is not an Assay image reward head")
                if int(meta.get("version", 0)) > HEAD_VERSION:
                    raise ValueError(f"{path} was written by a newer Assay (head version {meta['version']})")
                head = cls(int(meta["dim"]), int(meta["hidden"]), embedder_name=meta.get("embedder", ""),
                           embedder_spec=meta.get("embedder_spec", ""))
                head.mean, head.std = z["mean"], z["std"]
                if head.hidden > 0:
                    head.W, head.c, head.v = z["W"], z["c"], z["v"]
                else:
                    head.w = z["w"]
        except (OSError, KeyError, ValueError) as e:  # ValueError: not a zip, pickled data, bad JSON, our checks
            raise ValueError(f"cannot read reward head {path}: {e}") from e
        head.score_mean, head.score_std = float(meta["score_mean"]), float(meta["score_std"])
        head.report = meta.get("report", {})
        return head


def _embed_unique(embedder: Any, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for ``images``, each distinct image embedded once; returns ``(vectors, ok mask)`` where undecodable
    images have ``ok = False`` and a zero row."""
    from assay.models.image_embeddings import ImageDecodeError, load_image

    keys = [_key(im) for im in images]
    unique: dict[str, Any] = {}
    for k, im in zip(keys, images):
        unique.setdefault(k, im)
    decoded, ok_keys = [], []
    for k, im in unique.items():
        try:
            decoded.append(load_image(im))
            ok_keys.append(k)
        except ImageDecodeError:
            continue
    vecs = embedder.embed_images(decoded) if decoded else np.zeros((0, embedder.dim), dtype=np.float32)
    row = {k: i for i, k in enumerate(ok_keys)}
    out = np.zeros((len(images), embedder.dim), dtype=np.float32)
    ok = np.zeros(len(images), dtype=bool)
    for i, k in enumerate(keys):
        if k in row:
            out[i] = vecs[row[k]]
            ok[i] = True
    return out, ok


def train_reward_head(rows: Iterable[Any], embedder: Any | str | None = None, *, hidden: int = 0,
                      epochs: int = 400, lr: float = 0.02, weight_decay: float = 1e-3, val_fraction: float = 0.2,
                      seed: int = 0) -> tuple[RewardHead, TrainReport]:
    """Train a reward head from image preference rows/records (see the module doc) on ``embedder``'s features (an
    embedder or a spec; default ``auto``). Pairs with an undecodable image are left out and counted."""
    from assay.models.image_embeddings import get_image_text_embedder, resolve_spec

    spec = ""
    if embedder is None or isinstance(embedder, str):
        spec = resolve_spec(embedder)
        embedder = get_image_text_embedder(spec)
    prefs, skipped = preferences_from(rows)
    if not prefs:
        raise ValueError(f"no image preference pairs found ({skipped} rows were not image preferences)")
    vecs, oks = _embed_unique(embedder, [p.chosen for p in prefs] + [p.rejected for p in prefs])
    vc, vr, okc, okr = vecs[: len(prefs)], vecs[len(prefs):], oks[: len(prefs)], oks[len(prefs):]
    ok = okc & okr
    txt = embedder.embed_texts([p.prompt for p in prefs])
    head = RewardHead(embedder.dim, hidden, embedder_name=embedder.name, embedder_spec=spec, seed=seed)
    report = head.fit(vc[ok], vr[ok], txt[ok], epochs=epochs, lr=lr, weight_decay=weight_decay,
                      val_fraction=val_fraction, seed=seed)
    report.skipped = skipped
    report.undecodable = int((~ok).sum())
    head.report = report.as_dict()
    return head, report


# -- the step ------------------------------------------------------------------------------------------------------

class ImageRewardParams(StepParams):
    #: the trained head (.npz written by RewardHead.save / `python -m assay.evolve.visual train`)
    head: str
    #: embedder spec; None = the one the head was trained with (must give vectors of the head's dimension)
    model: str | None = None
    batch_size: int = 32
    device: str = "auto"


class ImageReward(Step):
    """Score images with an ImageReward-style head: reward.score for image_text records; reward.chosen,
    reward.rejected and reward.margin for image preference pairs."""

    name = "image_reward"
    version = "1"
    summary = "Score images with an ImageReward-style head trained from image preferences (reward.score)"
    Params: ClassVar = ImageRewardParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head: RewardHead | None = None
        self.embedder: Any = None

    def setup(self, ctx: StepContext) -> None:
        from assay.models.image_embeddings import get_image_text_embedder

        self.head = RewardHead.load(self.params.head)
        spec = self.params.model or self.head.embedder_spec or None
        self.embedder = get_image_text_embedder(spec, batch_size=self.params.batch_size, device=self.params.device)
        if self.embedder.dim != self.head.dim:
            raise ValueError(f"reward head {self.params.head} was trained on {self.head.dim}-d features "
                             f"({self.head.embedder_name}); {self.embedder.name} gives {self.embedder.dim}-d")

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        from assay.harvest.image.common import ImageProblem, image_bytes

        if self.head is None:
            self.setup(ctx)
        assert self.head is not None
        singles: list[tuple[Record, Any, str]] = []
        pairs: list[tuple[Record, ImagePreference]] = []
        for r in batch:
            if r.drop is not None:
                continue
            pref = preference_of(r.content) if r.modality == "preference" else None
            if pref is not None:
                pairs.append((r, pref))
                continue
            caption = r.content.get("caption") if isinstance(r.content, dict) else None
            try:
                image = image_bytes(r)
            except ImageProblem as e:
                self.count("skipped:not_an_image_with_caption" if e.reason == "no_image" else f"skipped:{e.reason}")
                continue
            if not isinstance(caption, str) or not caption.strip():
                self.count("skipped:not_an_image_with_caption")
                continue
            singles.append((r, image, caption))
        if singles:
            vecs, ok = _embed_unique(self.embedder, [im for _, im, _ in singles])
            txt = self.embedder.embed_texts([c for _, _, c in singles])
            scores = self.head.score(vecs, txt)
            for (r, _, _), s, good in zip(singles, scores, ok):
                if good:
                    r.signals["reward.score"] = round(float(s), 6)
                else:
                    self.count("skipped:undecodable_image")
        if pairs:
            n = len(pairs)
            vecs, oks = _embed_unique(self.embedder, [p.chosen for _, p in pairs] + [p.rejected for _, p in pairs])
            vc, vr, okc, okr = vecs[:n], vecs[n:], oks[:n], oks[n:]
            txt = self.embedder.embed_texts([p.prompt for _, p in pairs])
            sc, sr = self.head.score(vc, txt), self.head.score(vr, txt)
            for i, (r, _) in enumerate(pairs):
                if okc[i] and okr[i]:
                    r.signals["reward.chosen"] = round(float(sc[i]), 6)
                    r.signals["reward.rejected"] = round(float(sr[i]), 6)
                    r.signals["reward.margin"] = round(float(sc[i] - sr[i]), 6)
                else:
                    self.count("skipped:undecodable_image")
        self.count("scored", len(singles) + len(pairs))
        return batch


# -- command line --------------------------------------------------------------------------------------------------

def _read_rows(paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    import gzip

    import orjson

    for p in paths:
        if p.endswith(".parquet"):
            import pyarrow.parquet as pq

            yield from pq.read_table(p).to_pylist()
            continue
        opener = gzip.open if p.endswith(".gz") else open
        with opener(p, "rb") as f:
            for line in f:
                if line.strip():
                    row = orjson.loads(line)
                    yield Record.from_dict(row).content if Record.is_record_dict(row) else row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assay.evolve.visual",
                                     description="Train an ImageReward-style head from image preference pairs.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a head from JSONL/Parquet preference rows or records")
    t.add_argument("prefs", nargs="+")
    t.add_argument("--model", default="auto", help="embedder spec (auto, clip:/path, openai:URL#model, ocr)")
    t.add_argument("--out", required=True)
    t.add_argument("--hidden", type=int, default=0)
    t.add_argument("--epochs", type=int, default=400)
    t.add_argument("--val-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    head, report = train_reward_head(_read_rows(args.prefs), args.model, hidden=args.hidden, epochs=args.epochs,
                                     val_fraction=args.val_fraction)
    head.save(args.out)
    print(json.dumps({"out": args.out, **report.as_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

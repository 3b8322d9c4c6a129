"""Image-text alignment and image reward: speed and quality of the embedders, on images rendered here.

Prints, for each embedder asked for (default: the offline ``ocr`` model and the ``histogram`` fallback):

* load time, images/s and texts/s on this machine's CPU;
* for embedders with a text side: how often the true caption of a rendered-text image scores above a shuffled
  caption (issue 10's acceptance figure), the score distributions, and the threshold that best separates true from
  shuffled pairs (the number to put in DEFAULT_THRESHOLDS);
* the ``image_text_alignment`` step's records/s;
* an ImageReward-style head trained on a planted preference (the image showing the prompt's word wins): training
  time and pairwise accuracy on words never seen in training.

    .venv/bin/python benchmarks/image_alignment.py [--n 120] [--embedder ocr --embedder clip:/path/to/clip]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the image fixtures the tests use
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assay.core.record import Record  # noqa: E402
from assay.core.step import StepContext  # noqa: E402
from assay.evolve.visual import train_reward_head  # noqa: E402
from assay.harvest.image.alignment import ImageTextAlignment  # noqa: E402
from assay.models.image_embeddings import get_image_text_embedder  # noqa: E402
from image_text_fixtures import WORDS, render_text_image  # noqa: E402

TEMPLATES = ("a sign that says {}", "the word {} written on a wall", "{}", "a poster: {} in black letters",
             "photo of a shop window with {} painted on it", "{} in bold letters, white background")


def dataset(n: int) -> tuple[list[bytes], list[str], list[str]]:
    """``n`` rendered-text images (words x seeds), their captions, and each caption's word."""
    images, captions, words = [], [], []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        seed = i // len(WORDS)
        images.append(render_text_image(word, seed=100 + seed))
        captions.append(TEMPLATES[(i + seed) % len(TEMPLATES)].format(word))
        words.append(word)
    return images, captions, words


def best_threshold(true: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    """The cut with the best balanced accuracy between true (keep) and shuffled (drop) pairs."""
    cuts = np.unique(np.concatenate([true, wrong]))
    best = (0.0, 0.0)
    for c in cuts:
        acc = 0.5 * (np.mean(true >= c) + np.mean(wrong < c))
        if acc > best[1]:
            best = (float(c), float(acc))
    return best


def bench_embedder(spec: str, n: int) -> None:
    images, captions, words = dataset(n)
    t0 = time.perf_counter()
    emb = get_image_text_embedder(spec)
    emb.embed_images([render_text_image("warm up", seed=-1)])  # lazy models load on first use
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    iv = emb.embed_images(images)
    img_s = n / (time.perf_counter() - t0)
    print(f"\n== {spec} ({emb.name}, {emb.dim}-d): load {load:.2f} s, {img_s:.1f} images/s", end="")
    try:
        emb.embed_texts(["warm up"])
        t0 = time.perf_counter()
        tv = emb.embed_texts([f"{c} ({i})" for i, c in enumerate(captions)])  # uncached texts
        print(f", {n / (time.perf_counter() - t0):.0f} texts/s")
    except NotImplementedError:
        print(", no text side")
        copies = [render_text_image(w, seed=100 + i // len(WORDS), fmt="PNG") for i, w in enumerate(words)]
        cv = emb.embed_images(copies)
        nearest = (iv @ cv.T).argmax(axis=1) == np.arange(n)
        print(f"   JPEG image's nearest PNG copy is its own: {nearest.mean():.1%}")
        return
    tv = emb.embed_texts(captions)
    rng = random.Random(0)
    shift = [rng.randrange(1, n) for _ in range(n)]
    wrong_caps = [captions[(i + s) % n] for i, s in enumerate(shift)]
    keep = [i for i in range(n) if words[(i + shift[i]) % n] != words[i]]  # a shuffled caption naming the same
    true = np.einsum("ij,ij->i", iv, tv)[keep]                               # word is not wrong: left out
    wrong = np.einsum("ij,ij->i", iv, emb.embed_texts(wrong_caps))[keep]
    cut, acc = best_threshold(true, wrong)
    print(f"   true caption above shuffled: {np.mean(true > wrong):.1%} of {len(keep)} images")
    print(f"   cosine true  : mean {true.mean():.3f}  p5 {np.percentile(true, 5):.3f}  min {true.min():.3f}")
    print(f"   cosine shuf. : mean {wrong.mean():.3f}  p95 {np.percentile(wrong, 95):.3f}  max {wrong.max():.3f}")
    print(f"   best threshold {cut:.3f} (balanced accuracy {acc:.1%})")
    step = ImageTextAlignment({"model": spec})
    step.setup(StepContext())
    records = [Record(f"r{i}", {"caption": c + " ", "image": render_text_image(w, seed=999 + i)},
                      modality="image_text") for i, (c, w) in enumerate(zip(captions, words))]
    t0 = time.perf_counter()
    out = step.process_batch(records, StepContext())
    dt = time.perf_counter() - t0
    print(f"   image_text_alignment step: {n / dt:.1f} records/s, kept {sum(r.drop is None for r in out)}/{n} "
          f"at threshold {step.threshold}")

    train_words, test_words = WORDS[:26], WORDS[26:]

    def prefs(pool: list[str], k: int, seed: int) -> list[dict]:
        r = random.Random(seed)
        rows = []
        for j in range(k):
            want, other = r.sample(pool, 2)
            rows.append({"prompt": f"a poster that says {want}", "chosen": render_text_image(want, seed=j % 3),
                         "rejected": render_text_image(other, seed=(j + 1) % 3)})
        return rows

    for hidden in (0, 32):
        t0 = time.perf_counter()
        head, report = train_reward_head(prefs(train_words, 300, 1), emb, hidden=hidden, val_fraction=0.2)
        train_s = time.perf_counter() - t0
        test = prefs(test_words, 200, 2)
        txt = emb.embed_texts([p["prompt"] for p in test])
        sc = head.score(emb.embed_images([p["chosen"] for p in test]), txt)
        sr = head.score(emb.embed_images([p["rejected"] for p in test]), txt)
        print(f"   reward head (hidden={hidden}): trained on {report.train_pairs} pairs in {train_s:.1f} s "
              f"(embedding included); val {report.val_accuracy:.1%}; unseen words {np.mean(sc > sr):.1%} of "
              f"{len(test)} pairs (chance 50%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=120, help="rendered images per embedder")
    ap.add_argument("--embedder", action="append", help="spec(s) to measure (default: ocr, histogram)")
    args = ap.parse_args()
    print(f"CPU cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    for spec in args.embedder or ["ocr", "histogram"]:
        bench_embedder(spec, args.n)


if __name__ == "__main__":
    main()

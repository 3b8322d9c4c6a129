"""Client-side throughput of ``recaption`` and ``diff_caption`` against Assay's deterministic VLM stand-in on loopback.

A real vision model takes seconds per image, so what Assay itself adds is the point here: decoding, downscaling and
JPEG re-encoding each image, base64 data URLs, HTTP, the response cache. The server (``server --engine vlm``) answers
after a fixed ``--latency`` (as a remote API would) and decodes every image it is sent.

Figures printed:

1. image preparation alone (decode + shrink to ``max_side`` + JPEG), images/s, for 1600x1200 photos-like images;
2. ``recaption`` end to end at concurrency 1 and 8 (images/s), and the rerun served from the cache;
3. ``diff_caption`` of 8-keyframe clips (clips/s; 9 requests per clip with ``merge: llm``).

Usage: python benchmarks/recaption.py [--images 64] [--latency 0.05] [--max-side 768]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from assay.core.record import Record
from assay.core.step import StepContext
from assay.synthesize.recaption import DiffCaption, Recaption, prepare_image


def photo_like(seed: int, size: tuple[int, int] = (1600, 1200)) -> bytes:
    """A JPEG with smooth gradients plus noise (compresses like a photo, unlike a flat colour)."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    base = rng.uniform(0, 255, 3).astype(np.float32)
    pixels = base * (0.5 + 0.5 * x) * (0.6 + 0.4 * y) + rng.normal(0, 12, (h, w, 3)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds per answer")
    parser.add_argument("--max-side", type=int, default=768)
    args = parser.parse_args()

    images = [photo_like(i) for i in range(args.images)]
    print(f"{args.images} images of 1600x1200, {sum(map(len, images)) / len(images) / 1024:.0f} KiB each (JPEG)")

    started = time.perf_counter()
    for data in images:
        prepare_image(data, args.max_side, 90)
    took = time.perf_counter() - started
    print(f"prepare (decode, shrink to {args.max_side}, JPEG): {args.images / took:.1f} images/s")

    server = subprocess.Popen([sys.executable, "-m", "assay.models.llm.server", "--engine", "vlm",
                               "--port", "0", "--latency", str(args.latency)], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().split()[-1]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for concurrency in (1, 8):
                backend = {"kind": "openai", "base_url": url, "model": "describe", "api_key_env": "NO_KEY",
                           "concurrency": concurrency}
                cache = Path(tmp) / f"cache-{concurrency}.sqlite"
                for label in ("first run", "rerun (cache)"):
                    step = Recaption(backend=backend, cache=str(cache), max_side=args.max_side)
                    records = [Record(f"r{i}", {"caption": f"photo {i}", "image": d}, "image_text")
                               for i, d in enumerate(images)]
                    started = time.perf_counter()
                    out = [r for b in step.process([records], StepContext()) for r in b]
                    took = time.perf_counter() - started
                    assert all("picture" in r.content["caption"] for r in out)
                    print(f"recaption, concurrency {concurrency}, latency {args.latency * 1000:.0f} ms, {label}: "
                          f"{args.images / took:.1f} images/s")
            backend = {"kind": "openai", "base_url": url, "model": "describe", "api_key_env": "NO_KEY",
                       "concurrency": 8}
            frames = [photo_like(1000 + i, (1280, 720)) for i in range(8)]
            clips = [Record(f"c{i}", {"keyframes": frames, "keyframe_times": [k * 0.5 for k in range(8)],
                                      "caption": None}, "video") for i in range(args.clips)]
            step = DiffCaption(backend=backend, cache="off", max_side=args.max_side)
            started = time.perf_counter()
            out = [r for b in step.process([clips], StepContext()) for r in b]
            took = time.perf_counter() - started
            assert all(r.content["caption"] for r in out)
            print(f"diff_caption, 8 keyframes of 1280x720, merge llm, concurrency 8: {args.clips / took:.2f} clips/s "
                  f"({step.stats.counters['llm.calls']} requests)")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()

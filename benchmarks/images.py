"""Images through the LAION recipe: images/s without and with image-text alignment, and pHash speed vs imagehash.

Generates ``--n`` images with Pillow (random shapes and a rendered word, sides 160-800 px, JPEG) into ``--shards``
WebDataset tars, with planted trouble: ~10% resized/recompressed copies of other images (in other shards), ~5%
placeholder captions ("IMG_1234.jpg", "image"), ~3% images too small, ~1% truncated files. Then:

1. ``recipes/laion.yaml`` without its alignment step (decode + EXIF strip, filters, caption filter, pHash dedup,
   WebDataset output), through the real executor, images/s end to end, with the drops it made;
2. the same with ``image_text_alignment`` (model ``auto``: the best offline model installed; ``--align-n`` images,
   since the model dominates the cost);
3. pHash alone: ours (batched numpy DCT) vs ``imagehash.phash`` on the same decoded images, with the ratio and the
   bit-for-bit agreement; and the dedup quality on the planted copies (found / planted, false drops).

img2dataset, the usual peer, downloads and resizes but does not filter or dedup, so the comparison is with the
component that has a peer (imagehash). One worker by default (``-w``) so figures are per core.

``--photos N`` measures instead on real photographs (Debian's mate-backgrounds, GPL-2+: crops of 1,000-2,600 px,
re-saved as JPEG with an EXIF block, as cameras write them), side by side with a plain PIL loop doing the same work:
read the tar, decode, size/aspect and caption checks, ``imagehash.phash`` with an exact-hash dedup, tar write. The two
alternate ``--repeat`` times in one process (one core); wall and CPU seconds are printed with their ratio.
``--ocr`` times the ``ocr`` alignment model per real image (CPU seconds of its thread): photos, the Python manual's
figures (python3-doc) and a generated 1920x1080 documentation screenshot.

    .venv/bin/python benchmarks/images.py [--n 2000] [--shards 4] [--align-n 200] [-w 1]
    .venv/bin/python benchmarks/images.py --photos 120 --repeat 3
    .venv/bin/python benchmarks/images.py --ocr
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the image generators the tests use
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from assay.core.recipe import Recipe  # noqa: E402
from assay.run.executor import make_executor  # noqa: E402
from image_scenes import encode, resized, scene, truncated, write_tar  # noqa: E402


def make_corpus(folder: Path, n: int, shards: int, seed: int = 0) -> dict[str, str]:
    """Write the tars; returns each planted sample's expected drop reason (key → reason)."""
    rng = random.Random(seed)
    samples: list[list[dict]] = [[] for _ in range(shards)]
    planted: dict[str, str] = {}
    originals: list[tuple[int, Image.Image]] = []
    for i in range(n):
        shard = i % shards
        key = f"{shard:05d}/{i:09d}"
        r = rng.random()
        caption = f"a picture of shapes and the word number {i}"
        if r < 0.10 and originals:
            j, img = rng.choice(originals)
            data = encode(resized(img, rng.uniform(0.5, 0.9)), "JPEG", quality=rng.randint(40, 85))
            planted[key] = "duplicate_image"
        else:
            size = (rng.randint(160, 800), rng.randint(160, 600))
            if r < 0.13:
                size = (rng.randint(20, 60), rng.randint(20, 60))
                planted[key] = "too_small"
            img = scene(10_000 + i, size)
            data = encode(img, "JPEG", quality=rng.randint(70, 95))
            if r >= 0.19 and len(originals) < 2000:  # clean originals only: their copies must meet them in dedup
                originals.append((i, img))
            if 0.13 <= r < 0.18:
                caption = rng.choice(["IMG_%04d.jpg" % i, "image", "DSC%05d" % i, "click here"])
                planted[key] = "boilerplate_caption"
            elif 0.18 <= r < 0.19:
                data = truncated(data, 0.5)
                planted[key] = "corrupt_image"
        samples[shard].append({"__key__": key, "jpg": data, "txt": caption, "json": {"url": f"http://e/{i}"}})
    for k, group in enumerate(samples):
        write_tar(folder / f"{k:05d}.tar", group)
    return planted


def laion_recipe(path: Path, alignment: bool) -> Recipe:
    data = yaml.safe_load((ROOT / "recipes" / "laion.yaml").read_text())
    if not alignment:
        data["steps"] = [s for s in data["steps"] if "image_text_alignment" not in (s if isinstance(s, dict) else {s})]
    path.write_text(yaml.safe_dump(data))
    return Recipe.from_yaml(path)


def run_recipe(recipe: Recipe, inputs: Path, out: Path, workers: int) -> tuple[float, dict]:
    ex = make_executor("local", workers)
    t0 = time.perf_counter()
    stats = ex.run(recipe, [str(inputs)], str(out))
    return time.perf_counter() - t0, stats


def subset(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` samples of the corpus (in shard order), re-written as one tar."""
    from assay.core.errors import ErrorLog
    from assay.io.webdataset import read_webdataset

    out = []
    for f in sorted(src.glob("*.tar")):
        for r in read_webdataset(str(f), ErrorLog()):
            out.append({"__key__": r.meta["key"], "jpg": r.content["image"], "txt": r.content["caption"]})
            if len(out) >= n:
                break
        if len(out) >= n:
            break
    write_tar(dst / "subset.tar", out)


def bench_phash(folder: Path, limit: int) -> None:
    import imagehash

    from assay.core.errors import ErrorLog
    from assay.harvest.image.phash import phash_many, to_hex
    from assay.io.webdataset import read_webdataset

    images = []
    for f in sorted(folder.glob("*.tar")):
        for r in read_webdataset(str(f), ErrorLog()):
            try:
                img = Image.open(io.BytesIO(r.content["image"]))
                img.load()
            except OSError:
                continue
            images.append(img)
            if len(images) >= limit:
                break
    best_ours = best_theirs = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        ours = phash_many(images)
        best_ours = min(best_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = [str(imagehash.phash(im)) for im in images]
        best_theirs = min(best_theirs, time.perf_counter() - t0)
    same = sum(to_hex(a) == b for a, b in zip(ours, theirs))
    n = len(images)
    print(f"\npHash on {n} decoded images (best of 3, one core):")
    print(f"  assay phash_many  {n / best_ours:8.0f} images/s")
    print(f"  imagehash.phash   {n / best_theirs:8.0f} images/s")
    print(f"  ratio assay/imagehash: {best_theirs / best_ours:.2f}x; identical hashes: {same}/{n}")


PHOTO_DIRS = ("/usr/share/backgrounds/mate/nature", "/usr/share/backgrounds/mate/desktop",
              "/usr/share/backgrounds/mate/abstract")


def make_photo_corpus(folder: Path, n: int, seed: int = 0) -> float:
    """``n`` JPEGs cut from the real photographs installed here, in one tar; returns the mean megapixels."""
    sources = [p for d in PHOTO_DIRS for p in sorted(Path(d).glob("*.jpg")) if "_" not in p.stem]
    if not sources:
        sys.exit("--photos needs Debian's mate-backgrounds (make system-deps)")
    photos = [Image.open(p).convert("RGB") for p in sources]
    rng = random.Random(seed)
    samples, pixels = [], 0
    for i in range(n):
        photo = photos[i % len(photos)]
        scale = rng.uniform(0.45, 1.0)
        w, h = int(photo.width * scale), int(photo.height * scale)
        x, y = rng.randrange(photo.width - w + 1), rng.randrange(photo.height - h + 1)
        exif = Image.Exif()
        exif[0x010F], exif[0x0110], exif[0x0132] = "Camera maker", "Model X", "2024:05:01 10:00:00"
        samples.append({"__key__": f"{i:09d}", "jpg": encode(photo.crop((x, y, x + w, y + h)), "JPEG", quality=90,
                                                             exif=exif),
                        "txt": f"a photograph from the collection, number {i}", "json": {"url": f"http://e/{i}"}})
        pixels += w * h
    write_tar(folder / "00000.tar", samples)
    return pixels / n / 1e6


def plain_pil_loop(tar_in: Path, tar_out: Path) -> int:
    """What a short script does for the same result: decode, filters, caption rules, pHash + exact dedup, tar."""
    import imagehash
    import json
    import tarfile

    seen: set[str] = set()
    kept = 0
    with tarfile.open(tar_in) as src, tarfile.open(tar_out, "w") as dst:
        members = [m for m in src.getmembers() if m.isfile()]
        by_key: dict[str, dict[str, bytes]] = {}
        for m in members:
            key, _, ext = m.name.partition(".")
            by_key.setdefault(key, {})[ext] = src.extractfile(m).read()
        for key, sample in by_key.items():
            try:
                img = Image.open(io.BytesIO(sample["jpg"]))
                img.load()
            except OSError:
                continue
            w, h = img.size
            caption = sample.get("txt", b"").decode("utf-8", "replace")
            if min(w, h) < 64 or max(w, h) > 8192 or not 0.33 <= w / h <= 3.0:
                continue
            if not 5 <= len(caption) <= 1000 or len(caption.split()) < 2:
                continue
            digest = str(imagehash.phash(img))
            if digest in seen:
                continue
            seen.add(digest)
            meta = {**json.loads(sample.get("json", b"{}")), "width": w, "height": h, "phash": digest}
            for ext, data in (("jpg", sample["jpg"]), ("txt", caption.encode()), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
            kept += 1
    return kept


def bench_photos(tmp_path: Path, n: int, repeat: int) -> None:
    megapixels = make_photo_corpus(tmp_path / "photos", n)
    size = (tmp_path / "photos" / "00000.tar").stat().st_size
    print(f"real photos: {n} JPEGs with EXIF, {megapixels:.1f} Mpx on average, {size / 1e6:.1f} MB in one tar")
    recipe = laion_recipe(tmp_path / "photos.yaml", False)
    times: dict[str, list[tuple[float, float]]] = {"assay": [], "plain": []}
    for k in range(repeat):
        for name in ("assay", "plain"):
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "assay":
                _, stats = run_recipe(recipe, tmp_path / "photos", tmp_path / f"out-photos-{k}", 1)
                kept = stats["output"]["records"]
            else:
                kept = plain_pil_loop(tmp_path / "photos" / "00000.tar", tmp_path / f"plain-{k}.tar")
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            print(f"  run {k + 1} {name:<6} {n / times[name][-1][0]:6.1f} images/s wall, "
                  f"{n / times[name][-1][1]:6.1f} per CPU second; {kept} kept")
    best = {name: (min(t[0] for t in ts), min(t[1] for t in ts)) for name, ts in times.items()}
    print(f"LAION recipe without alignment vs plain PIL loop, best of {repeat}: "
          f"{n / best['assay'][0]:.1f} vs {n / best['plain'][0]:.1f} images/s wall "
          f"(ratio {best['plain'][0] / best['assay'][0]:.2f}x), "
          f"{n / best['assay'][1]:.1f} vs {n / best['plain'][1]:.1f} per CPU second "
          f"(ratio {best['plain'][1] / best['assay'][1]:.2f}x)")


def bench_ocr() -> None:
    import statistics

    from assay.models.image_embeddings import OcrTextEmbedder
    from image_text_fixtures import screenshot_image

    groups = {
        "photos (mate-backgrounds)": [p.read_bytes() for p in sorted(Path(PHOTO_DIRS[0]).glob("*.jpg"))],
        "figures (Python manual)": [p.read_bytes() for p in
                                    sorted(Path("/usr/share/doc/python3.11/html/_images").glob("*.png"))],
        "1920x1080 screenshot": [screenshot_image()],
    }
    emb = OcrTextEmbedder()
    emb.read_text(screenshot_image(size=(64, 48)))  # load the ONNX sessions
    print("OCR per image, CPU seconds of the reading thread (independent of other load):")
    for name, images in groups.items():
        secs = []
        for data in images:
            started = time.thread_time()
            emb.read_text(data)
            secs.append(time.thread_time() - started)
        if secs:
            print(f"  {name:<28} {len(secs):3d} images: median {statistics.median(secs):.2f} s, "
                  f"max {max(secs):.2f} s")
    print(f"  caps applied: {dict(getattr(emb, 'stats', {}))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--align-n", type=int, default=200, help="images run through the recipe with alignment")
    ap.add_argument("-w", "--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", type=int, default=0, help="real-photo corpus of this many images vs a plain PIL loop")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each side with --photos")
    ap.add_argument("--ocr", action="store_true", help="OCR alignment time per real image")
    args = ap.parse_args()
    if args.ocr:
        bench_ocr()
        return
    if args.photos:
        with tempfile.TemporaryDirectory(prefix="assay-photos-") as tmp:
            bench_photos(Path(tmp), args.photos, args.repeat)
        return

    with tempfile.TemporaryDirectory(prefix="assay-images-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        planted = make_corpus(tmp_path / "in", args.n, args.shards, args.seed)
        size = sum(f.stat().st_size for f in (tmp_path / "in").glob("*.tar"))
        print(f"corpus: {args.n} images in {args.shards} tars, {size / 1e6:.1f} MB, made in "
              f"{time.perf_counter() - t0:.1f} s; planted: "
              + ", ".join(f"{v} {sum(1 for x in planted.values() if x == v)}" for v in sorted(set(planted.values()))))

        secs, stats = run_recipe(laion_recipe(tmp_path / "noalign.yaml", False), tmp_path / "in", tmp_path / "out1",
                                 args.workers)
        print(f"\nLAION recipe without alignment ({args.workers} worker(s)): {args.n / secs:.1f} images/s "
              f"({secs:.2f} s, {stats['output']['records']} kept)")
        for s in stats["steps"]:
            print(f"  {s['name']:<22} {s['seconds']:7.2f} s  {s['records_in'] / max(s['seconds'], 1e-9):9.0f} rec/s"
                  f"  drops {s['drops']}")
        _score_drops(tmp_path / "out1", planted)

        if args.align_n > 0:
            subset(tmp_path / "in", tmp_path / "sub", args.align_n)
            for alignment in (False, True):
                name = "with" if alignment else "without"
                try:
                    secs, stats = run_recipe(laion_recipe(tmp_path / f"{name}.yaml", alignment), tmp_path / "sub",
                                             tmp_path / f"out-sub-{name}", args.workers)
                except Exception as e:  # the alignment model may be missing here: say so, keep the other figures
                    print(f"\nLAION recipe {name} alignment: not run ({type(e).__name__}: {e})")
                    continue
                n = stats["input"]["records_read"]
                print(f"\nLAION recipe {name} alignment on {n} images: {n / secs:.1f} images/s ({secs:.2f} s)")
                for s in stats["steps"]:
                    if s["name"] == "image_text_alignment":
                        print(f"  image_text_alignment {s['seconds']:.2f} s, drops {s['drops']}, "
                              f"counters {s['counters']}")
        bench_phash(tmp_path / "in", min(args.n, 1000))


def _score_drops(out: Path, planted: dict[str, str]) -> None:
    """Compare what the run dropped with what was planted (dedup recall and false drops)."""
    from assay.core.errors import ErrorLog
    from assay.io.sources import plan_shards, read_shard
    from assay.run.layout import rejected_files

    dropped = {}
    for f in rejected_files(str(out)):  # in the output's format (tars for a WebDataset run)
        for shard in plan_shards([f], "auto", 0):
            for r in read_shard(shard, ErrorLog()):
                dropped[r.meta["key"]] = r.drop[1]
    for reason in sorted(set(planted.values())):
        want = {k for k, v in planted.items() if v == reason}
        got = {k for k, v in dropped.items() if v == reason}
        earlier = {k for k in want - got if k in dropped}  # caught first by another rule (e.g. aspect ratio)
        print(f"  planted {reason:<20} {len(want):5d}: dropped as such {len(want & got):5d}, by another rule "
              f"{len(earlier):4d}, kept {len(want - got - earlier):4d}; unplanted records dropped as such "
              f"{len(got - want):4d}")


if __name__ == "__main__":
    main()

"""Perceptual hash (pHash) of images: the 64-bit DCT hash of ``imagehash.phash``, computed with numpy in batches.

The algorithm (Zauner 2010; the "Looks Like It" variant that imagehash implements): convert to 8-bit grey, resize to
32×32 with Lanczos, take the 2-D DCT-II, keep the 8×8 lowest frequencies, and set each bit where the coefficient is
above the median of those 64. Bits are read row-major, the first coefficient being the most significant bit, so the
16-hex-digit string equals ``str(imagehash.phash(img))``.

Instead of two full 32-point DCTs (scipy), only the 8 needed rows of the DCT matrix are applied: ``C @ P @ C.T`` with
``C[k, n] = 2 cos(pi k (2n + 1) / 64)`` — the same values as ``scipy.fftpack.dct`` (type II, unnormalised) up to
floating-point rounding. Coefficients within rounding noise of zero are set to exactly zero, as scipy's FFT gives
them for flat images (so a one-colour image hashes to ``8000000000000000`` in both). The result is then bit-for-bit
equal to imagehash except where a coefficient that is zero in exact arithmetic is compared with a median of zero and
scipy's noise is not exactly zero (rare: images with exact symmetries); the tests measure the agreement.

One deliberate difference: an image with transparency is first composed onto white, as a viewer sees it.
``imagehash`` converts RGBA to grey ignoring alpha, so it hashes the colours stored under transparent pixels, which
are invisible and arbitrary: a logo and its copy flattened to JPEG then differ by up to 58 bits (measured on
Debian's Adwaita icons). For images without transparency nothing changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

HASH_SIZE = 8
IMG_SIZE = 32  # HASH_SIZE × imagehash's highfreq_factor 4


def _dct_rows(n_out: int, n_in: int) -> np.ndarray:
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


_C = _dct_rows(HASH_SIZE, IMG_SIZE)
_ZERO_TOL = 1e-6  # far above rounding noise (~1e-10 at these magnitudes), far below any real coefficient step
_WEIGHTS = (1 << np.arange(HASH_SIZE * HASH_SIZE - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)


def phash_input(image: "Image.Image") -> np.ndarray:
    """The 32×32 grey pixels the hash is computed from (as imagehash: ``convert("L")`` then a Lanczos resize), after
    composing an image with transparency onto white (:func:`~assay.models.image_embeddings.flatten_alpha`)."""
    from PIL import Image

    from assay.models.image_embeddings import flatten_alpha

    grey = flatten_alpha(image).convert("L")
    return np.asarray(grey.resize((IMG_SIZE, IMG_SIZE), Image.Resampling.LANCZOS), dtype=np.float64)


def phash_from_pixels(pixels: np.ndarray) -> np.ndarray:
    """pHashes (uint64) of a stack of 32×32 grey images, shape ``(n, 32, 32)``."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[None]
    low = np.einsum("kn,bnm,lm->bkl", _C, pixels, _C, optimize=True)  # (n, 8, 8): rows then columns
    flat = low.reshape(low.shape[0], -1)
    # coefficients that are zero in exact arithmetic come out as ±1e-10 noise here; scipy's FFT-based DCT gives
    # exact zeros for them in flat regions, so clamp the noise to 0 to agree (a flat image hashes to 8000000000000000)
    flat[np.abs(flat) < _ZERO_TOL] = 0.0
    med = np.median(flat, axis=1, keepdims=True)
    bits = (flat > med).astype(np.uint64)
    return (bits * _WEIGHTS).sum(axis=1, dtype=np.uint64)


def phash(image: "Image.Image") -> int:
    """The 64-bit pHash of one image as an int."""
    return int(phash_from_pixels(phash_input(image))[0])


def phash_many(images: Iterable["Image.Image"]) -> np.ndarray:
    """pHashes of many images, the DCT done for all of them at once."""
    stack = [phash_input(im) for im in images]
    if not stack:
        return np.zeros(0, dtype=np.uint64)
    return phash_from_pixels(np.stack(stack))


def to_hex(h: int) -> str:
    """16 lowercase hex digits, as ``str(imagehash.phash(...))``."""
    return f"{int(h):016x}"


def from_hex(s: str) -> int:
    if len(s) != 16:
        raise ValueError(f"a pHash is 16 hex digits, got {s!r}")
    return int(s, 16)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Number of differing bits between 64-bit hashes (element-wise)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x)

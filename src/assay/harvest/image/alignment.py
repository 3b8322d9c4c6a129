"""Image-text alignment scoring: LAION's CLIP-score filter.

LAION-400M and LAION-5B kept a Common Crawl image with its alt-text only when the cosine similarity of their CLIP
ViT-B/32 embeddings was at least 0.28: the cheapest strong signal that a caption describes its image. The step
``image_text_alignment`` computes that cosine for every ``image_text`` record with any
:class:`~assay.models.image_embeddings.ImageTextEmbedder` (``model`` param: ``auto``, ``clip:/path``,
``openai:URL#model``, ``ocr``), writes it to ``signals["clip.score"]`` and drops (or, with ``action: flag``, marks)
pairs under the threshold. The threshold defaults to the documented value for the model family (0.28 for
ViT-B/32; see :data:`~assay.models.image_embeddings.DEFAULT_THRESHOLDS`).

Records are embedded a batch at a time. A record with no image, an undecodable image or an empty caption is not
scored; it is dropped (or flagged) with the reason ``no_image``, ``missing_image_file``, ``corrupt_image`` (the
reasons of the other image steps) or ``no_caption``. An image
the model finds nothing in (a zero vector: the ``ocr`` model on a photo without legible text) is no evidence of a
bad caption: it is kept unscored and counted (``unscorable: drop`` drops it as ``unscorable_image``; with
``action: flag`` it is kept and flagged ``unscorable_image``).

When ``model: auto`` resolves to the OCR stand-in (no CLIP model configured), the step flags instead of dropping
unless the recipe sets ``action`` itself: OCR reads only text inside the images, so on photographs and diagrams a
low score says little (on 105 real images it dropped 29 true pairs). The run says so in one line at its start and in
the data card (:meth:`notes`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from assay.core.record import Record
from assay.core.step import Batch, Filter, FilterParams, StepContext

#: the signal this step writes
SCORE_SIGNAL = "clip.score"


class ImageTextAlignmentParams(FilterParams):
    #: embedder spec: auto | clip:/path | openai:http://host/v1#model | ocr
    model: str = "auto"
    #: drop pairs whose cosine is below this; None = the model family's documented default
    threshold: float | None = None
    #: records embedded together (one model call per batch of this many images and captions)
    batch_size: int = 32
    device: str = "auto"
    #: the content key holding the caption
    caption_key: str = "caption"
    #: what to do with an image the model finds nothing in (a zero vector: with ``ocr``, an image without legible
    #: text): keep it unscored, or drop it as ``unscorable_image``
    unscorable: Literal["keep", "drop"] = "keep"


class AlignmentFilter(Filter):
    """What image-caption and clip-caption alignment share: the embedder and threshold from ``model``/``threshold``
    params, per-batch reasons for records that could not be scored, and the decision. Subclasses fill
    ``self._unscored`` and ``signals["clip.score"]`` in ``score_batch``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.embedder: Any = None
        self.threshold: float = 0.0
        self._unscored: dict[int, str] = {}
        self._model_counts: dict[str, int] = {}
        self.stand_in = _auto_is_ocr(self.params.model)
        if self.stand_in and "action" not in self.params.model_fields_set:
            # OCR scores only text inside images: a low score on a photo is no evidence against its caption
            self.params = self.params.model_copy(update={"action": "flag"})

    def notes(self) -> list[str]:
        if not self.stand_in:
            return []
        what = "pairs are flagged, not dropped" if self.params.action == "flag" else "action: drop as the recipe says"
        return [f"model 'auto' is the OCR stand-in (no CLIP model configured): it scores only text inside the "
                f"images; {what} (set ASSAY_IMAGE_TEXT_MODEL=clip:/path/to/model for CLIP scores)"]

    def setup(self, ctx: StepContext) -> None:
        from assay.models.image_embeddings import default_threshold, get_image_text_embedder

        p = self.params
        self.embedder = get_image_text_embedder(p.model, batch_size=p.batch_size, device=p.device)
        self.threshold = p.threshold if p.threshold is not None else default_threshold(self.embedder)

    def count_model_work(self) -> None:
        """Add what the embedder counted since the last call (the OCR model's caps: ``ocr.downscaled``,
        ``ocr.lines_capped``, ``ocr.time_capped``) to this step's counters."""
        counts = getattr(self.embedder, "stats", None)
        if not counts:
            return
        for key, value in counts.items():
            if value > self._model_counts.get(key, 0):
                self.count(f"ocr.{key}", value - self._model_counts.get(key, 0))
        self._model_counts = dict(counts)

    def applies(self, record: Record) -> bool:
        """Whether this step scores ``record`` at all (others pass untouched)."""
        return True

    def kept_unscored(self) -> set[str]:
        """Reasons for not scoring that keep the record (no evidence is not a low score)."""
        return {"unscorable_image"} if self.params.unscorable == "keep" else set()

    def decide(self, record: Record) -> str | None:
        if record.drop is not None or not self.applies(record):
            return None
        reason = self._unscored.get(id(record))
        if reason is not None:
            if reason not in self.kept_unscored():
                return reason
            # kept: with action flag an image the model saw nothing in is marked as unchecked
            return reason if reason == "unscorable_image" and self.params.action == "flag" else None
        score = record.signals.get(SCORE_SIGNAL)
        if score is None:
            return None
        return "low_clip_score" if score < self.threshold else None


def _auto_is_ocr(model: str | None) -> bool:
    """Whether ``model`` is ``auto`` and resolves here to the OCR stand-in (cheap: no model is loaded)."""
    from assay.models.image_embeddings import EmbedderUnavailable, resolve_spec

    if (model or "auto").strip() != "auto":
        return False
    try:
        return resolve_spec("auto") == "ocr"
    except EmbedderUnavailable:
        return False


class ImageTextAlignment(AlignmentFilter):
    """Score image-caption agreement with a CLIP-family model (cosine → clip.score) and drop pairs below a
    threshold."""

    name = "image_text_alignment"
    version = "1"
    summary = "Cosine of image and caption embeddings (clip.score); drop pairs under a threshold (LAION: 0.28)"
    Params: ClassVar = ImageTextAlignmentParams

    def score_batch(self, batch: Batch) -> None:
        from assay.models.image_embeddings import ImageDecodeError, load_image
        from assay.harvest.image.common import ImageProblem, image_bytes

        if self.embedder is None:
            self.setup(StepContext())
        self._unscored = {}
        images, captions, scored = [], [], []
        for r in batch:
            if r.drop is not None:
                continue
            caption = r.content.get(self.params.caption_key) if isinstance(r.content, dict) else None
            try:
                raw = image_bytes(r)
            except ImageProblem as e:
                self._unscored[id(r)] = e.reason  # no_image, missing_image_file
                continue
            if not isinstance(caption, str) or not caption.strip():
                self._unscored[id(r)] = "no_caption"
                continue
            try:
                images.append(load_image(raw))
            except ImageDecodeError:
                self._unscored[id(r)] = "corrupt_image"
                continue
            captions.append(caption)
            scored.append(r)
        for i in range(0, len(scored), self.params.batch_size):
            j = i + self.params.batch_size
            img_vecs = self.embedder.embed_images(images[i:j])
            txt_vecs = self.embedder.embed_texts(captions[i:j])
            sims = np.einsum("ij,ij->i", img_vecs, txt_vecs)
            empty = ~img_vecs.any(axis=1)
            for r, s, blank in zip(scored[i:j], sims, empty):
                if blank:  # no evidence either way: not a low score
                    self._unscored[id(r)] = "unscorable_image"
                    self.count("unscorable_image")
                else:
                    r.signals[SCORE_SIGNAL] = round(float(s), 6)
                    self.count("scored")
        self.count_model_work()

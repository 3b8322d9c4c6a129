"""``video_clip_alignment``: does a clip's caption describe it? Cosine of keyframe and caption embeddings.

Each clip's keyframes (``video_keyframes``) and its caption (the source's sidecar caption, or one written by
``recaption``/``diff_caption``) are embedded with an :class:`~assay.models.image_embeddings.ImageTextEmbedder`
(``model``: ``auto``, ``clip:/path``, ``openai:URL#model``, ``ocr``). The clip's score is the mean (or max, with
``reduce: max``) of the caption's cosine with each keyframe, written to ``signals["clip.score"]`` (the same signal
as ``image_text_alignment``), the per-keyframe values to ``signals["clip.keyframe_scores"]``. Clips under the
threshold (default: the model family's documented value, e.g. 0.28 for CLIP ViT-B/32) are dropped as
``low_clip_score`` (``action: flag`` keeps them).

Not scored: clips without a caption (kept unless ``missing_caption: drop``, reason ``no_caption``), without
keyframes (``no_keyframes``), and clips whose keyframes all embed to zero (the ``ocr`` model on frames without
legible text: no evidence, kept unless ``unscorable: drop``). Undecodable keyframes are ``corrupt_image``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from assay.core.record import Record
from assay.core.step import Batch, FilterParams, StepContext
from assay.harvest.image.alignment import SCORE_SIGNAL, AlignmentFilter
from assay.harvest.video.keyframes import is_clip


class VideoClipAlignmentParams(FilterParams):
    #: embedder spec: auto | clip:/path | openai:http://host/v1#model | ocr (histogram has no text side)
    model: str = "auto"
    #: drop clips whose score is below this; None = the model family's documented default
    threshold: float | None = None
    #: how keyframe cosines make the clip's score
    reduce: Literal["mean", "max"] = "mean"
    batch_size: int = 32
    device: str = "auto"
    caption_key: str = "caption"
    missing_caption: Literal["keep", "drop"] = "keep"
    unscorable: Literal["keep", "drop"] = "keep"


class VideoClipAlignment(AlignmentFilter):
    """Score caption-clip agreement from keyframe embeddings (clip.score); drop clips under a threshold."""

    name = "video_clip_alignment"
    version = "1"
    Params: ClassVar = VideoClipAlignmentParams

    def score_batch(self, batch: Batch) -> None:
        from assay.models.image_embeddings import ImageDecodeError, load_image

        if self.embedder is None:
            self.setup(StepContext())
        p: VideoClipAlignmentParams = self.params  # type: ignore[assignment]
        self._unscored = {}
        todo: list[tuple[Record, list[Any], str]] = []
        for r in batch:
            if r.drop is not None or not is_clip(r):
                continue
            caption = r.content.get(p.caption_key)
            if not isinstance(caption, str) or not caption.strip():
                self._unscored[id(r)] = "no_caption"
                self.count("no_caption")
                continue
            frames = r.content.get("keyframes") or []
            if not frames:
                self._unscored[id(r)] = "no_keyframes"
                continue
            try:
                images = [load_image(f) for f in frames]
            except ImageDecodeError:
                self._unscored[id(r)] = "corrupt_image"
                continue
            todo.append((r, images, caption))
        for i in range(0, len(todo), p.batch_size):
            chunk = todo[i:i + p.batch_size]
            texts = self.embedder.embed_texts([c for _, _, c in chunk])
            flat = [im for _, ims, _ in chunk for im in ims]
            vecs = self.embedder.embed_images(flat)
            at = 0
            for (r, ims, _), t in zip(chunk, texts):
                v = vecs[at:at + len(ims)]
                at += len(ims)
                live = v.any(axis=1)
                if not live.any():
                    self._unscored[id(r)] = "unscorable_image"
                    self.count("unscorable_image")
                    continue
                sims = v[live] @ t
                score = float(sims.max() if p.reduce == "max" else sims.mean())
                r.signals[SCORE_SIGNAL] = round(score, 6)
                r.signals["clip.keyframe_scores"] = [round(float(s), 6) for s in v @ t]
                self.count("scored")
        self.count_model_work()

    def applies(self, record: Record) -> bool:
        return is_clip(record)

    def kept_unscored(self) -> set[str]:
        keep = super().kept_unscored()
        return keep | {"no_caption"} if self.params.missing_caption == "keep" else keep

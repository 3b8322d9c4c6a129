"""``video_stitch``: merge adjacent clips of one source into longer takes when the picture carries on (MiraData).

Shot detection over-splits: a flash, a fast pan or a lighting change reads as a cut, and a long take comes out as
several short clips. MiraData stitched such clips back into long, semantically continuous takes by comparing
neighbouring clips' frames. Here: walking a source's clips in time order, the next clip joins the current take when

* it is adjacent: it starts where the take ends (within ``max_gap`` seconds; a clip dropped in between breaks
  the take),
* the cosine similarity of the take's last keyframe and the clip's first keyframe, embedded with ``model``, is at
  least ``threshold``; the default ``histogram`` embedder (colour histogram + colour layout, no model) sees "the
  same set, same light"; a CLIP-family spec (``clip:/path``, ``openai:URL#model``) sees "the same content",
* the take stays within ``max_duration`` seconds.

A take of several clips becomes one clip record (``id = derive_id(source id, "stitch", start_frame, end_frame)``)
covering them all: keyframes concatenated, ``meta["stitched_from"]`` the merged clip ids, ``signals["stitch.clips"]``
and ``signals["stitch.similarity"]`` (the weakest join), motion signals averaged by duration. Its ``clip_path`` is
``None`` (run ``video_split`` after stitching). Single clips pass unchanged. Clips need keyframes
(``video_keyframes`` first). All clips of a source are in one shard (one video file is one shard), which this step
relies on; it holds one source's clips at a time.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
from pydantic import Field

from assay.core.record import Record, derive_id
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.harvest.video.keyframes import is_clip


class VideoStitchParams(StepParams):
    #: embedder spec for keyframes: histogram (no model) | clip:/path | openai:URL#model | auto
    model: str = "histogram"
    #: minimum cosine similarity of the boundary keyframes for two clips to join
    threshold: float = Field(0.9, ge=-1, le=1)
    #: longest take, seconds
    max_duration: float = Field(60.0, gt=0)
    #: largest gap between a take's end and the next clip's start (seconds) that still counts as adjacent
    max_gap: float = Field(0.05, ge=0)
    batch_size: int = Field(64, gt=0)


class VideoStitch(Step):
    """Merge adjacent clips of one source whose boundary keyframes are similar (MiraData-style long takes)."""

    name = "video_stitch"
    version = "1"
    Params: ClassVar = VideoStitchParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.embedder: Any = None

    def setup(self, ctx: StepContext) -> None:
        from assay.models.image_embeddings import get_image_text_embedder

        self.embedder = get_image_text_embedder(self.params.model)  # type: ignore[attr-defined]

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        if self.embedder is None:
            self.setup(ctx)
        held: list[Record] = []  # the current source's clips
        out: Batch = []
        for batch in batches:
            for rec in batch:
                if rec.drop is not None or not is_clip(rec):
                    out.append(rec)
                    continue
                if held and _source_of(held[0]) != _source_of(rec):
                    out.extend(self._stitch(held, ctx))
                    held = []
                held.append(rec)
            if len(out) >= self.params.batch_size:  # type: ignore[attr-defined]
                yield out
                out = []
        if held:
            out.extend(self._stitch(held, ctx))
        if out:
            yield out

    def _stitch(self, clips: list[Record], ctx: StepContext) -> list[Record]:
        from assay.models.image_embeddings import ImageDecodeError

        p: VideoStitchParams = self.params  # type: ignore[assignment]
        clips = sorted(clips, key=lambda r: float(r.content["start"]))
        try:
            firsts, lasts = self._boundary_vectors(clips)
        except ImageDecodeError as e:
            ctx.errors.add("corrupt_keyframe", str(clips[0].content.get("path")), None, str(e))
            self.count("stitch.bad_keyframes")
            return clips
        takes: list[list[int]] = [[0]]
        joins: list[list[float]] = [[]]
        for i in range(1, len(clips)):
            take = takes[-1]
            head, prev, cur = clips[take[0]], clips[take[-1]], clips[i]
            sim = float(lasts[take[-1]] @ firsts[i]) if lasts[take[-1]] is not None and firsts[i] is not None \
                else None
            adjacent = float(cur.content["start"]) - float(prev.content["end"]) <= p.max_gap + 1e-9
            fits = float(cur.content["end"]) - float(head.content["start"]) <= p.max_duration + 1e-9
            if sim is not None and adjacent and fits and sim >= p.threshold:
                take.append(i)
                joins[-1].append(sim)
            else:
                takes.append([i])
                joins.append([])
        out = []
        for take, sims in zip(takes, joins):
            if len(take) == 1:
                out.append(clips[take[0]])
            else:
                out.append(self._merge([clips[i] for i in take], sims))
                self.count("stitch.takes")
                self.count("stitch.clips_merged", len(take))
        return out

    def _boundary_vectors(self, clips: list[Record]) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
        """Embeddings of each clip's first and last keyframe (None for a clip without keyframes)."""
        images, where = [], []
        for i, c in enumerate(clips):
            frames = c.content.get("keyframes") or []
            if frames:
                images.extend([frames[0], frames[-1]])
                where.append(i)
            else:
                self.count("stitch.no_keyframes")
        firsts: list[np.ndarray | None] = [None] * len(clips)
        lasts: list[np.ndarray | None] = [None] * len(clips)
        if images:
            vecs = self.embedder.embed_images(images)
            for k, i in enumerate(where):
                firsts[i], lasts[i] = vecs[2 * k], vecs[2 * k + 1]
        return firsts, lasts

    def _merge(self, parts: list[Record], sims: list[float]) -> Record:
        head, tail = parts[0], parts[-1]
        src_id = (head.meta.get("parents") or [head.id])[0]
        a, b = int(head.meta["start_frame"]), int(tail.meta["end_frame"])
        captions = [c.content.get("caption") for c in parts]
        distinct = {c for c in captions if isinstance(c, str)}
        content = {"path": head.content["path"], "start": head.content["start"], "end": tail.content["end"],
                   "clip_path": None,
                   "keyframes": [k for c in parts for k in c.content.get("keyframes") or []],
                   "keyframe_times": [t for c in parts for t in c.content.get("keyframe_times") or []],
                   "caption": distinct.pop() if len(distinct) == 1 else None}
        duration = round(float(tail.content["end"]) - float(head.content["start"]), 6)
        meta = {**head.meta, "start_frame": a, "end_frame": b, "duration": duration,
                "stitched_from": [c.id for c in parts]}
        for k in ("clip_start", "clip_end"):
            meta.pop(k, None)
        if len({c for c in captions if isinstance(c, str)}) > 1:
            meta["captions"] = captions
        weights = np.asarray([float(c.meta.get("duration") or 0.0) for c in parts]) + 1e-9
        signals: dict[str, Any] = {}
        for key in ("motion.score", "motion.jitter"):
            vals = [c.signals.get(key) for c in parts]
            if all(isinstance(v, (int, float)) for v in vals):
                signals[key] = round(float(np.average(vals, weights=weights)), 4)
        signals["stitch.clips"] = len(parts)
        signals["stitch.similarity"] = round(min(sims), 6)
        return Record(derive_id(src_id, "stitch", a, b), content, "video", meta, signals, list(head.lineage))


def _source_of(rec: Record) -> str:
    parents = rec.meta.get("parents") or []
    return str(parents[0]) if parents else str(rec.content.get("path"))

"""``video_split``: write every clip to its own file under ``clip_dir`` (``content["clip_path"]``; default: the
run's output folder's ``clips/``).

``mode``:

* ``auto`` (default): stream copy (packets copied, no re-encode: lossless and fast) when the clip starts on a
  keyframe and ends on one (or at the end of the source); otherwise re-encode just that clip, frame-exact. Shot
  boundaries often fall on keyframes, because encoders put one at a scene change.
* ``copy``: always stream copy. When a boundary is not on a keyframe, the file is cut at the keyframe at or
  before ``start`` and the one at or after ``end``; the times the file really covers are written to
  ``meta["clip_start"]``/``meta["clip_end"]`` (``content["start"]``/``["end"]`` keep the scene's times).
* ``reencode``: always re-encode (H.264 via libx264 when PyAV has it, else MPEG-4 Part 2), frame-exact.

Files are named ``<source stem>-<start_frame>-<id prefix><ext>`` (stream copies keep the source's container
extension; re-encodes are ``.mp4``), written under a temporary name and renamed, so a crash never leaves half a clip
behind. Only the video stream is written (audio is not kept). Counters: ``clips.copied``, ``clips.reencoded``,
``clips.snapped`` (copy mode moved a boundary to a keyframe). A clip that cannot be written is rejected
(``write_failed``) and logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from assay.core.record import Record
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.harvest.video.keyframes import is_clip

_COPY_EXT = {".mp4", ".mkv", ".webm", ".mov", ".m4v", ".ts"}


class VideoSplitParams(StepParams):
    #: folder for the clip files (relative paths are taken from the working directory); None: ``clips/`` in the
    #: run's output folder
    clip_dir: str | None = None
    mode: Literal["auto", "copy", "reencode"] = "auto"
    #: encoder for re-encoded clips: auto (libx264 if available, else mpeg4) or any PyAV encoder name
    codec: str = "auto"
    #: libx264 quality (lower is better; 18 is visually lossless)
    crf: int = 18


class VideoSplit(Step):
    """Write each clip to a file: stream copy when the cut is on keyframes, else re-encode that clip."""

    name = "video_split"
    version = "1"
    Params: ClassVar = VideoSplitParams

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        import av

        p: VideoSplitParams = self.params  # type: ignore[assignment]
        if p.clip_dir is not None:
            folder = Path(p.clip_dir)
        else:
            folder = ctx.files_beside_run(self, "clip files", "clip_dir") / "clips"
        folder.mkdir(parents=True, exist_ok=True)
        for rec in batch:
            if rec.drop is not None or not is_clip(rec):
                continue
            src = str(rec.content["path"])
            try:
                self._write(rec, src, folder)
            except (av.FFmpegError, OSError, ValueError, IndexError) as e:
                ctx.errors.add("clip_write_failed", src, rec.meta.get("start_frame"), f"{type(e).__name__}: {e}")
                self.reject(rec, "write_failed")
        return batch

    def _write(self, rec: Record, src: str, folder: Path) -> None:
        from assay.harvest.video.media import copy_clip, packet_index, reencode_clip

        p: VideoSplitParams = self.params  # type: ignore[assignment]
        index = packet_index(src)
        a, b = int(rec.meta["start_frame"]), int(rec.meta["end_frame"])
        b = min(b, len(index.pts))
        on_keys = index.is_keyframe(a) and index.is_keyframe(b)
        ext = Path(src).suffix.lower()
        copy = p.mode == "copy" or (p.mode == "auto" and on_keys)
        if copy and ext not in _COPY_EXT:
            ext = ".mkv"  # Matroska takes any codec's packets
        stem = Path(src).stem
        dst = folder / f"{stem}-{a:07d}-{rec.id[:8]}{ext if copy else '.mp4'}"
        tmp = dst.with_name(f".{dst.name}.part{ext if copy else '.mp4'}")
        if copy:
            ka, kb = a, b
            while ka > 0 and not index.keyframe[ka]:
                ka -= 1
            while kb < len(index.pts) and not index.keyframe[kb]:
                kb += 1
            if (ka, kb) != (a, b):
                self.count("clips.snapped")
            copy_clip(src, str(tmp), ka, kb, index)
            rec.meta["clip_start"], rec.meta["clip_end"] = round(index.seconds(ka), 6), round(index.seconds(kb), 6)
            self.count("clips.copied")
        else:
            reencode_clip(src, str(tmp), float(rec.content["start"]), float(rec.content["end"]), codec=p.codec,
                          crf=p.crf)
            rec.meta["clip_start"], rec.meta["clip_end"] = rec.content["start"], rec.content["end"]
            self.count("clips.reencoded")
        os.replace(tmp, dst)
        rec.content["clip_path"] = str(dst.resolve())

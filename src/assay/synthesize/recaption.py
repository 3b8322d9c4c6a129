"""Re-captioning with a vision-language model (Stage III): ``recaption`` for images, ``diff_caption`` for video clips.

``recaption`` (the DALL-E 3 recipe: train on dense synthetic captions instead of alt-text) sends each image-text
record's image, downscaled and re-encoded as JPEG, to a vision chat model, with the original caption as quoted
context, and writes the model's dense description to ``content["caption"]``; the old caption moves to
``meta["original_caption"]``.

``diff_caption`` (ShareGPT4Video's differential sliding-window captioning, DiffSW) captions a video clip from its
keyframes: the first keyframe is described in full, each consecutive pair of keyframes (a sliding window of two) is
sent together with the question "what changed?", and the notes are merged, by the model or by plain concatenation,
into one temporally ordered caption with timestamps. The per-step notes stay in ``meta["diff_captions"]``.

Both talk to any OpenAI-compatible server that takes image content parts (vLLM with Qwen2-VL, Ollama with llava,
OpenAI's gpt-4o-mini...) through the shared HTTP backend: bounded concurrency, retries with backoff, the SQLite
response cache (its key holds a hash of the image bytes), ``llm.*`` usage counters. ``meta["synth"]`` records the
backend, model and template hashes; the pipeline adds the step's lineage entry.

Untrusted text (an alt-text caption, an earlier model's notes) is put in the prompt as quoted data: between tags, with
``<`` and ``>`` escaped so it cannot close its block, under an instruction not to follow requests inside it.

A record that cannot be captioned (no image, undecodable image, failed or empty answer) keeps its old caption and gets
``signals["<step>.flag"] = reason`` (``on_failure: flag``, the default), or is dropped with that reason
(``on_failure: drop``).
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Literal

from pydantic import Field, model_validator

from assay.core.record import Record
from assay.core.step import Batch, StepContext, StepParams
from assay.models.llm.base import Completion, ImagePart, LLMRequest, SamplingParams
from assay.synthesize.common import SynthesisStep, SynthParams, clean_text

_LABEL = re.compile(r"^\s*(?:\*\*)?(?:dense\s+)?(?:caption|description)(?:\*\*)?\s*:\s*", re.IGNORECASE)


class ImageError(ValueError):
    """An image cannot be read or decoded; ``reason`` is the drop/flag category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send: JPEG bytes no larger than the step's ``max_side``, and their size."""

    jpeg: bytes
    width: int
    height: int


def load_image_bytes(value: Any) -> bytes:
    """The encoded image a record field holds: bytes as they are, a ``str`` as a file path to read."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value:
        try:
            return Path(value).expanduser().read_bytes()
        except OSError as e:
            raise ImageError("unreadable_image", f"{value}: {e.strerror or e}") from None
    raise ImageError("no_image", f"expected image bytes or a path, got {type(value).__name__}")


def prepare_image(data: bytes, max_side: int, quality: int) -> PreparedImage:
    """Decode ``data``, apply its EXIF orientation, flatten transparency onto white, shrink it so that its longer side
    is at most ``max_side`` (never enlarge), and re-encode it as JPEG (which also strips metadata)."""
    from PIL import Image, ImageOps

    from assay.models.image_embeddings import flatten_alpha

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if opened.format == "JPEG" and max(width, height) > max_side:
                # let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the final size: several times faster
                scale = max_side / max(width, height)
                opened.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
            image = ImageOps.exif_transpose(opened)
            image.load()
            image = flatten_alpha(image)
            if image.mode != "RGB":
                image = image.convert("RGB")
            if max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=quality)
    except Exception as e:  # noqa: BLE001 — Pillow raises many exception types on damaged or hostile files
        raise ImageError("undecodable_image", f"{type(e).__name__}: {e}") from None
    return PreparedImage(out.getvalue(), image.width, image.height)


def quote(text: str, max_chars: int) -> str:
    """``text`` made safe to put between tags in a prompt: cleaned, cut, and with ``<``, ``>`` and ``&`` escaped so
    that it cannot close its block or open another."""
    return html.escape(clean_text(text, max_chars), quote=False)


def clean_caption(text: str) -> str:
    """A model's answer as a caption: one paragraph, without a "Caption:" label or wrapping quotes."""
    text = " ".join(text.split())
    text = _LABEL.sub("", text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def stamp(seconds: float) -> str:
    """A time as captions show it: ``[2.50s]``."""
    return f"[{seconds:.2f}s]"


class VisualCaptionParams(SynthParams):
    """What ``recaption`` and ``diff_caption`` share."""

    #: images are shrunk so that their longer side is at most this many pixels before sending (never enlarged)
    max_side: int = Field(768, ge=32, le=8192)
    #: JPEG quality of the re-encoded image
    jpeg_quality: int = Field(90, ge=30, le=100)
    #: OpenAI's image "detail" hint ("low" is cheap, "high" reads small text); null sends none
    detail: Literal["low", "high", "auto"] | None = None
    #: a record that cannot be captioned: "flag" keeps it (old caption, ``signals["<step>.flag"]``), "drop" rejects it
    on_failure: Literal["flag", "drop"] = "flag"
    #: requests sent together; the backend's ``concurrency`` bounds how many are in flight
    batch_requests: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _needs_a_vision_server(self) -> "VisualCaptionParams":
        if self.backend.kind != "openai":
            raise ValueError("this step sends images: it needs a vision-language model behind an OpenAI-compatible "
                             "server, e.g. backend: {kind: openai, base_url: http://localhost:8000/v1, "
                             "model: Qwen/Qwen2-VL-7B-Instruct}")
        return self


class _VisualCaptionStep(SynthesisStep):
    """Shared plumbing: image preparation, chat requests with images, failure handling."""

    @property
    def vp(self) -> VisualCaptionParams:
        assert isinstance(self.params, VisualCaptionParams)
        return self.params

    def image_part(self, value: Any) -> tuple[ImagePart, PreparedImage]:
        prepared = prepare_image(load_image_bytes(value), self.vp.max_side, self.vp.jpeg_quality)
        return ImagePart(data=prepared.jpeg, mime="image/jpeg", detail=self.vp.detail), prepared

    @staticmethod
    def vision_request(images: list[ImagePart], text: str, sampling: SamplingParams) -> LLMRequest:
        """One user turn: the images first, then the instructions (the order most open VLM chat templates expect)."""
        return LLMRequest.chat([{"role": "user", "content": [*images, text]}], sampling)

    def fail(self, record: Record, reason: str) -> None:
        self.count(f"failed:{reason}")
        if self.vp.on_failure == "drop":
            self.reject(record, reason)
        else:
            record.signals[f"{self.name}.flag"] = reason

    def answer_text(self, completion: Completion) -> tuple[str | None, str | None]:
        """``(caption, None)`` or ``(None, failure reason)`` for one answer."""
        if not completion.ok:
            return None, "llm_error"
        if completion.finish_reason == "length":
            self.count("truncated")
        text = clean_caption(completion.text)
        return (text, None) if text else (None, "empty_caption")

    def set_caption(self, record: Record, caption: str) -> None:
        """Write ``caption``; the first caption the record ever had is kept in ``meta["original_caption"]``."""
        assert isinstance(record.content, dict)
        if "original_caption" not in record.meta:
            record.meta["original_caption"] = record.content.get("caption")
        record.content = {**record.content, "caption": caption}

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        self.ensure_backend(ctx)
        try:
            for batch in batches:
                for start in range(0, len(batch), self.vp.batch_requests):
                    self.caption_records(batch[start:start + self.vp.batch_requests])
                yield batch
        finally:
            self.report_usage()

    def caption_records(self, records: list[Record]) -> None:
        raise NotImplementedError


# -- recaption -------------------------------------------------------------------------------------------------------
class RecaptionParams(VisualCaptionParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {"recaption": {"original_caption", "width", "height"},
                                                 "recaption_no_context": {"width", "height"}}

    #: give the model the record's original caption as (quoted) context
    use_original_caption: bool = True
    #: longest original caption put into the prompt, in characters
    max_context_chars: int = Field(1000, ge=10)
    sampling: SamplingParams = SamplingParams(temperature=0.2, top_p=0.95, max_tokens=300)


class Recaption(_VisualCaptionStep):
    """Re-caption images with a vision-language model (dense captions, DALL-E 3 style); keeps the original."""

    name = "recaption"
    version = "1"
    Params: ClassVar[type[StepParams]] = RecaptionParams

    @property
    def p(self) -> RecaptionParams:
        assert isinstance(self.params, RecaptionParams)
        return self.params

    def caption_records(self, records: list[Record]) -> None:
        todo: list[tuple[Record, str, PreparedImage]] = []
        requests: list[LLMRequest] = []
        for record in records:
            if record.drop is not None:
                continue
            c = record.content
            source = None
            if isinstance(c, dict):
                source = c.get("image") if c.get("image") is not None else c.get("image_path")
            if source is None:
                self.fail(record, "no_image")
                continue
            assert isinstance(c, dict)
            try:
                part, prepared = self.image_part(source)
            except ImageError as e:
                self.fail(record, e.reason)
                continue
            original = c.get("caption") if isinstance(c.get("caption"), str) else ""
            if self.p.use_original_caption and original.strip():
                name = "recaption"
                prompt = self.templates[name].render(original_caption=quote(original, self.p.max_context_chars),
                                                     width=prepared.width, height=prepared.height)
            else:
                name = "recaption_no_context"
                prompt = self.templates[name].render(width=prepared.width, height=prepared.height)
            sampling = self.p.sampling.with_(seed=self.request_seed(record.id))
            requests.append(self.vision_request([part], prompt, sampling))
            todo.append((record, name, prepared))
        for (record, name, prepared), completion in zip(todo, self.generate(requests)):
            caption, failure = self.answer_text(completion)
            if caption is None:
                self.fail(record, failure or "llm_error")
                continue
            self.set_caption(record, caption)
            record.meta["synth"] = self.synth_meta([name], sent_width=prepared.width, sent_height=prepared.height)
            record.signals["recaption.words"] = len(caption.split())
            self.count("recaptioned")


# -- diff_caption ----------------------------------------------------------------------------------------------------
class DiffCaptionParams(VisualCaptionParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {"diff_caption_first": {"time"},
                                                 "diff_caption": {"start", "end"},
                                                 "diff_caption_merge": {"notes", "start", "end"}}

    #: clips with more keyframes are subsampled evenly to this many (first and last always kept)
    max_keyframes: int = Field(16, ge=1, le=256)
    #: "llm": one more call writes the final caption from the notes; "concat": the notes joined with timestamps
    merge: Literal["llm", "concat"] = "llm"
    first_sampling: SamplingParams = SamplingParams(temperature=0.2, top_p=0.95, max_tokens=300)
    diff_sampling: SamplingParams = SamplingParams(temperature=0.2, top_p=0.95, max_tokens=120)
    merge_sampling: SamplingParams = SamplingParams(temperature=0.2, top_p=0.95, max_tokens=500)


@dataclass
class _Clip:
    """One clip being captioned: its record, keyframe times, and the notes as they come back."""

    record: Record
    times: list[float]
    notes: list[str | None] = field(default_factory=list)
    failure: str | None = None


def keyframe_times(content: dict[str, Any], n: int) -> tuple[list[float], bool]:
    """The ``n`` keyframes' times: ``content["keyframe_times"]`` when it fits, else spread evenly over the clip's
    ``start``..``end`` (or 0, 1, 2, ... seconds without them). The flag says whether the times were made up."""
    given = content.get("keyframe_times")
    if isinstance(given, list) and len(given) == n and all(isinstance(t, (int, float)) for t in given):
        return [float(t) for t in given], False
    start, end = content.get("start"), content.get("end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end >= start and n > 1:
        return [float(start) + i * (float(end) - float(start)) / (n - 1) for i in range(n)], True
    base = float(start) if isinstance(start, (int, float)) else 0.0
    return [base + i for i in range(n)], True


def spread(n: int, k: int) -> list[int]:
    """``k`` indices out of ``range(n)``, evenly spread, first and last included."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


class DiffCaption(_VisualCaptionStep):
    """Caption video clips from keyframes: first frame, then what changed pair by pair, merged in time order."""

    name = "diff_caption"
    version = "1"
    Params: ClassVar[type[StepParams]] = DiffCaptionParams

    @property
    def p(self) -> DiffCaptionParams:
        assert isinstance(self.params, DiffCaptionParams)
        return self.params

    def caption_records(self, records: list[Record]) -> None:
        clips: list[_Clip] = []
        requests: list[LLMRequest] = []
        owner: list[tuple[_Clip, int]] = []  # request i → (clip, note index)
        for record in records:
            if record.drop is not None:
                continue
            prepared = self._keyframes(record)
            if prepared is None:
                continue
            parts, times = prepared
            clip = _Clip(record, times, [None] * len(parts))
            clips.append(clip)
            first = self.templates["diff_caption_first"].render(time=f"{times[0]:.2f}")
            requests.append(self.vision_request(
                [parts[0]], first, self.p.first_sampling.with_(seed=self.request_seed(record.id, "first"))))
            owner.append((clip, 0))
            for k in range(1, len(parts)):  # the sliding window: keyframes k-1 and k
                prompt = self.templates["diff_caption"].render(start=f"{times[k - 1]:.2f}", end=f"{times[k]:.2f}")
                requests.append(self.vision_request(
                    [parts[k - 1], parts[k]], prompt,
                    self.p.diff_sampling.with_(seed=self.request_seed(record.id, "diff", k))))
                owner.append((clip, k))
        for (clip, k), completion in zip(owner, self.generate(requests)):
            text, failure = self.answer_text(completion)
            if text is None:
                clip.failure = clip.failure or failure
            clip.notes[k] = text
        alive = [c for c in clips if c.failure is None]
        for clip in clips:
            if clip.failure is not None:
                self.fail(clip.record, clip.failure)
        for clip, (caption, failure) in zip(alive, self._merge(alive)):
            if caption is None:
                self.fail(clip.record, failure or "llm_error")
                continue
            self._finish(clip, caption)

    def _keyframes(self, record: Record) -> tuple[list[ImagePart], list[float]] | None:
        """The clip's keyframes (subsampled, prepared) and their times, or ``None`` after failing the record."""
        c = record.content
        frames = c.get("keyframes") if isinstance(c, dict) else None
        if not isinstance(frames, list) or not frames:
            self.fail(record, "no_keyframes")
            return None
        assert isinstance(c, dict)
        times, made_up = keyframe_times(c, len(frames))
        if made_up:
            self.count("keyframe_times_missing")
        keep = spread(len(frames), self.p.max_keyframes)
        if len(keep) < len(frames):
            self.count("keyframes_subsampled")
        parts = []
        try:
            for i in keep:
                part, _ = self.image_part(frames[i])
                parts.append(part)
        except ImageError as e:
            self.fail(record, e.reason)
            return None
        return parts, [times[i] for i in keep]

    def _notes(self, clip: _Clip) -> list[str]:
        """The notes with their times: ``[t0] first-frame description``, ``[t(k-1)-t(k)] change``, ..."""
        out = [f"{stamp(clip.times[0])} {clip.notes[0]}"]
        for k in range(1, len(clip.notes)):
            out.append(f"[{clip.times[k - 1]:.2f}s-{clip.times[k]:.2f}s] {clip.notes[k]}")
        return out

    def _merge(self, clips: list[_Clip]) -> list[tuple[str | None, str | None]]:
        """``(caption, None)`` or ``(None, failure reason)`` per clip."""
        if self.p.merge == "concat":
            return [(" ".join(f"{stamp(t)} {note}" for t, note in zip(c.times, c.notes)), None) for c in clips]
        merged: list[tuple[str | None, str | None]] = [(None, "llm_error")] * len(clips)
        requests = []
        todo = []
        for i, clip in enumerate(clips):
            if len(clip.notes) == 1:  # a single keyframe: nothing to merge
                merged[i] = (f"{stamp(clip.times[0])} {clip.notes[0]}", None)
                continue
            notes = "\n".join(f"<note>{quote(n, 4000)}</note>" for n in self._notes(clip))
            prompt = self.templates["diff_caption_merge"].render(notes=notes, start=f"{clip.times[0]:.2f}",
                                                                  end=f"{clip.times[-1]:.2f}")
            seed = self.request_seed(clip.record.id, "merge")
            requests.append(LLMRequest.chat(prompt, self.p.merge_sampling.with_(seed=seed)))
            todo.append(i)
        for i, completion in zip(todo, self.generate(requests)):
            merged[i] = self.answer_text(completion)
        return merged

    def _finish(self, clip: _Clip, caption: str) -> None:
        record = clip.record
        self.set_caption(record, caption)
        record.meta["diff_captions"] = [
            {"time": clip.times[k], **({"since": clip.times[k - 1]} if k else {}), "caption": clip.notes[k]}
            for k in range(len(clip.notes))]
        used = ["diff_caption_first"] + (["diff_caption"] if len(clip.notes) > 1 else []) + (
            ["diff_caption_merge"] if self.p.merge == "llm" and len(clip.notes) > 1 else [])
        record.meta["synth"] = self.synth_meta(used, merge=self.p.merge, keyframes=len(clip.notes))
        record.signals["diff_caption.keyframes"] = len(clip.notes)
        self.count("captioned")

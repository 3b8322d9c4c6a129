"""A deterministic stand-in for a vision-language model, served over the OpenAI API for tests and benchmarks.

``python -m assay.models.llm.server --engine vlm --port 0`` serves :class:`DescribeImagesBackend`. It answers
from a fixed function of what it is sent, so a test can predict every answer and check that the real client code
path (content parts, data URLs, retries, cache) carried the image intact:

* **one image**: ``A 64x48 picture, mostly red (100% of it), mean brightness 76/255.`` (the size is that of the image
  received, so a client's downscaling shows);
* **two images** (a pair of keyframes): what changed from the first to the second, e.g.
  ``The scene changes from mostly red to mostly blue; it gets darker (76 -> 29).`` or
  ``No visible change: still mostly red.``;
* **text only** (e.g. a merge request): the contents of the prompt's quoted blocks (``<tag>...</tag>``), in order,
  joined by spaces; with no such block, the last words of the prompt.

It also plays a *gullible* model, to test prompt-injection hygiene: if the phrase "ignore previous instructions"
appears in the prompt **outside** any quoted ``<tag>...</tag>`` block, it "obeys" and answers
:data:`INJECTION_FOLLOWED` instead. A template that quotes untrusted text (and escapes ``<``/``>`` inside it) never
triggers this; one that pastes the text in bare does.
"""

from __future__ import annotations

import html
import io
import re
import time
from collections import Counter
from dataclasses import dataclass

from assay.models.llm.base import (Completion, LLMBackend, LLMRequest, OnComplete, content_images,
                                            content_text)

#: what the gullible model answers when it finds an injected instruction outside quoted data
INJECTION_FOLLOWED = "INJECTION FOLLOWED: I ignored my instructions."

#: named colours a pixel is matched to (nearest in RGB)
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "red": (220, 30, 30),
    "orange": (245, 140, 20), "yellow": (240, 230, 40), "green": (40, 170, 50), "cyan": (40, 220, 220),
    "blue": (30, 40, 220), "purple": (140, 40, 180), "pink": (245, 150, 190), "brown": (130, 80, 30),
}

#: a quoted block ``<tag ...>text</tag>``; the text may not open the same tag again, so a prompt that *mentions*
#: "<note>" before its blocks still yields the innermost blocks
_QUOTED = re.compile(r"<(\w+)(?:\s[^<>]*)?>((?:(?!<\1[\s>]).)*?)</\1>", re.DOTALL)
_INJECTION = re.compile(r"ignore\s+(?:all\s+)?(?:the\s+)?previous\s+instructions", re.IGNORECASE)


@dataclass(frozen=True)
class ImageFacts:
    """What the stand-in model "sees" in an image."""

    width: int
    height: int
    colour: str  # the palette colour most pixels are nearest to
    share: float  # fraction of pixels nearest to it
    brightness: int  # mean luma, 0..255


def image_facts(data: bytes) -> ImageFacts:
    """Decode ``data`` with Pillow and measure it (raises on an undecodable image)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        rgb = image.convert("RGB")
    small = rgb.resize((32, 32)) if rgb.size != (32, 32) else rgb
    pixels = list(small.getdata())
    names = list(PALETTE)
    votes: Counter[str] = Counter()
    luma = 0.0
    for r, g, b in pixels:
        luma += 0.299 * r + 0.587 * g + 0.114 * b
        votes[min(names, key=lambda n: _distance((r, g, b), PALETTE[n]))] += 1
    colour, count = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))  # ties broken by name: deterministic
    return ImageFacts(width, height, colour, count / len(pixels), round(luma / len(pixels)))


def _distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> int:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def describe(facts: ImageFacts) -> str:
    return (f"A {facts.width}x{facts.height} picture, mostly {facts.colour} ({round(facts.share * 100)}% of it), "
            f"mean brightness {facts.brightness}/255.")


def describe_change(before: ImageFacts, after: ImageFacts) -> str:
    changes = []
    if before.colour != after.colour:
        changes.append(f"the scene changes from mostly {before.colour} to mostly {after.colour}")
    if abs(before.brightness - after.brightness) > 10:
        direction = "brighter" if after.brightness > before.brightness else "darker"
        changes.append(f"it gets {direction} ({before.brightness} -> {after.brightness})")
    if (before.width, before.height) != (after.width, after.height):
        changes.append(f"the frame changes from {before.width}x{before.height} to {after.width}x{after.height}")
    if not changes:
        return f"No visible change: still mostly {after.colour}."
    text = "; ".join(changes)
    return text[0].upper() + text[1:] + "."


def answer(request: LLMRequest) -> str:
    """The stand-in model's answer to ``request`` (see the module docstring)."""
    if request.prompt is not None:
        text, images = request.prompt, []
    else:
        messages = request.messages or ()
        text = "\n".join(content_text(c) for _, c in messages)
        images = [img for _, c in messages for img in content_images(c)]
    if _INJECTION.search(_QUOTED.sub(" ", text)):
        return INJECTION_FOLLOWED
    if any(img.data is None for img in images):
        raise ValueError("this server takes images as data: URLs only")
    facts = [image_facts(img.data or b"") for img in images]
    if len(facts) == 1:
        return describe(facts[0])
    if len(facts) >= 2:
        return " ".join(describe_change(a, b) for a, b in zip(facts, facts[1:]))
    quoted = [html.unescape(" ".join(m.group(2).split())) for m in _QUOTED.finditer(text)]
    if quoted:
        return " ".join(q for q in quoted if q)
    return " ".join(text.split()[-request.params.max_tokens:])


class DescribeImagesBackend(LLMBackend):
    """Answers with :func:`answer`, after ``latency`` seconds; an undecodable image fails that request."""

    kind = "vlm-describe"
    model = "assay-describe-images"

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__()
        self.latency = latency

    def generate(self, requests: list[LLMRequest], on_complete: OnComplete | None = None) -> list[Completion]:
        out = []
        for i, request in enumerate(requests):
            if self.latency:
                time.sleep(self.latency)
            try:
                text = answer(request)
            except Exception as e:  # noqa: BLE001 — Pillow raises many types on damaged images; one request fails
                completion = Completion.failed(f"cannot read the image: {type(e).__name__}: {e}", self.model)
                self.usage.add(errors=1)
            else:
                prompt_tokens = sum(len(content_text(c).split()) for _, c in request.messages or ()) or len(
                    (request.prompt or "").split())
                completion = Completion(text, "stop", prompt_tokens, len(text.split()), self.model)
                self.usage.add(calls=1, prompt_tokens=completion.prompt_tokens,
                               completion_tokens=completion.completion_tokens)
            if on_complete is not None:
                on_complete(i, completion)
            out.append(completion)
        return out

"""Test data for the image-text tests, made on the spot: words rendered onto images with Pillow, and a tiny randomly
initialised CLIP model folder in the Hugging Face layout (exercises the real transformers loading path)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

#: concrete nouns, all different, none a substring of another
WORDS = ("apple harbor violin rocket garden tiger river castle dragon pencil window bottle candle forest island "
         "jacket ladder mirror orange planet rabbit saddle turtle wallet yellow zebra anchor basket cactus donkey "
         "engine falcon guitar helmet igloo jungle kettle lemon marble needle").split()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default(size=size)


def render_text_image(text: str, seed: int = 0, size: tuple[int, int] = (256, 192), fmt: str = "JPEG") -> bytes:
    """``text`` in black on a random light background at a random place, encoded as ``fmt``."""
    rng = random.Random(f"{text}-{seed}")
    img = Image.new("RGB", size, tuple(rng.randrange(150, 256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    font = _font(rng.choice((26, 30, 34)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = rng.randrange(4, max(5, size[0] - (right - left) - 4))
    y = rng.randrange(4, max(5, size[1] - (bottom - top) - 4))
    draw.text((x, y), text, fill=tuple(rng.randrange(0, 60) for _ in range(3)), font=font)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def screenshot_image(title: str = "Pathlib object oriented filesystem paths", size: tuple[int, int] = (1920, 1080),
                     seed: int = 0) -> bytes:
    """A 2-megapixel screenshot of a documentation page as PNG: a large title over two columns of dense 15 px
    text (random words), the kind of image that made OCR take most of a minute."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((40, 20), title, fill=(20, 20, 20), font=_font(44))
    body = _font(15)
    for y in range(90, size[1] - 20, 22):
        for x in (20, size[0] // 2 + 10):
            draw.text((x, y), " ".join(rng.choice(WORDS) for _ in range(14)), fill=(30, 30, 30), font=body)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def shape_image(color: tuple[int, int, int], size: tuple[int, int] = (160, 120), fmt: str = "PNG") -> bytes:
    """A coloured ellipse on grey: an image with no text."""
    img = Image.new("RGB", size, (128, 128, 128))
    ImageDraw.Draw(img).ellipse((20, 15, size[0] - 20, size[1] - 15), fill=color)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_tiny_clip(folder: Path) -> Path:
    """A 2-layer CLIP (32-d towers, 16-d projection, 32 px images) with a byte-level BPE vocabulary and no merges,
    saved like any Hugging Face CLIP checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    # the byte-to-unicode table of byte-level BPE: printable bytes stand for themselves, the rest get code points 256+
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 512, 513
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    torch.manual_seed(0)
    text = dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=40, bos_token_id=512, eos_token_id=513, pad_token_id=513)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    return folder

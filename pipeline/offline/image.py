"""Turn one source image of any kind ImageNet holds into the stored 256×256 baseline RGB JPEG (§2).

CMYK, grayscale, palette and a PNG named `.JPEG` all become RGB. EXIF orientation is not applied,
as in the original data. Large JPEGs are decoded at a reduced DCT scale (Pillow's draft mode) when
the image is at least twice the target, which changes the output very little (see the tests) and
makes the multi-thousand-pixel images several times cheaper.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from alexnet.pipeline.paper import STORED_SIZE

RESAMPLE = Image.Resampling.BICUBIC  # antialiased: Pillow widens the kernel when it shrinks
RESIZE_FILTER = "bicubic"
CHROMA_SUBSAMPLING = "4:2:0"


class BadImage(Exception):
    """The file cannot be used as an image; the message is the reason recorded in quarantine."""


def load_rgb(path: Path, size: int = STORED_SIZE, draft: bool = True) -> tuple[Image.Image, str]:
    """Decode `path` to RGB, returning the image and the source's `FORMAT/mode` for the summary."""
    if path.stat().st_size == 0:
        raise BadImage("empty file")
    try:
        im = Image.open(path)
        source = f"{im.format}/{im.mode}"
        if draft and im.format == "JPEG":
            im.draft("RGB", short_side_size(im.size, size))
        im.load()
    except Image.UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"cannot decode: {e}") from None
    return (im if im.mode == "RGB" else im.convert("RGB")), source


def short_side_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(w, h) scaled so that the shorter side is `short`, rounding the longer side."""
    w, h = size
    if w <= h:
        return short, max(short, round(h * short / w))
    return max(short, round(w * short / h)), short


def resize_center_crop(im: Image.Image, size: int = STORED_SIZE) -> Image.Image:
    """Resize the short side to `size`, then take the central size×size patch (§2)."""
    rw, rh = short_side_size(im.size, size)
    left, top = (rw - size) // 2, (rh - size) // 2
    return im.resize((rw, rh), RESAMPLE).crop((left, top, left + size, top + size))


def encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """Baseline (non-progressive) JPEG with 4:2:0 chroma, which every decoder on every device reads."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=CHROMA_SUBSAMPLING, progressive=False)
    return buf.getvalue()


def prepare_image(path: Path, quality: int, size: int = STORED_SIZE, draft: bool = True) -> tuple[bytes, str]:
    """The stored JPEG for one source file, and its source `FORMAT/mode`. Raises BadImage."""
    im, source = load_rgb(path, size, draft)
    return encode_jpeg(resize_center_crop(im, size), quality), source


class _MemberFile(io.BytesIO):
    """A source held in memory (an archive member) with what `load_rgb` asks of a path: `stat()` and opening."""

    def stat(self) -> os.stat_result:
        return os.stat_result((0o100644, 0, 0, 1, 0, 0, len(self.getbuffer()), 0, 0, 0))


def prepare_image_bytes(data: bytes, quality: int, size: int = STORED_SIZE, draft: bool = True) -> tuple[bytes, str]:
    """`prepare_image` for a source already in memory (a tar member): the same checks, the same bytes out."""
    return prepare_image(_MemberFile(data), quality, size, draft)

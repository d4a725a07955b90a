"""Turn one source image of any kind ImageNet holds into the stored 256×256 baseline RGB JPEG (§2).

CMYK, grayscale, palette and a PNG named `.JPEG` all become RGB. EXIF orientation is not applied,
as in the original data. Large JPEGs are decoded at a reduced DCT scale (Pillow's draft mode) when
the image is at least twice the target, which changes the output very little (see the tests) and
makes the multi-thousand-pixel images several times cheaper.

Memory per image is bounded whatever the shape: the resize computes only the central square
(Pillow's `box`), so a 1×20000 strip never becomes a 256×5120000 intermediate, and an image of
more than `MAX_PIXELS` (Pillow's decompression-bomb limit) is refused before it is decoded.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from alexnet.pipeline.paper import STORED_SIZE

RESAMPLE = Image.Resampling.BICUBIC  # antialiased: Pillow widens the kernel when it shrinks
RESIZE_FILTER = "bicubic"
CHROMA_SUBSAMPLING = "4:2:0"
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # above this Pillow warns of a decompression bomb; we quarantine
UNREADABLE = "cannot read"  # how a quarantine reason starts when the file, not the image, is the problem


class BadImage(Exception):
    """The file cannot be used as an image; the message is the reason recorded in quarantine."""


class Unreadable(BadImage):
    """The file cannot be read (permissions, I/O error, gone): its reason starts with `UNREADABLE`."""


def is_unreadable(reason: str) -> bool:
    """Whether a quarantine reason is an unreadable file (counted apart; a re-run retries it)."""
    return reason.startswith(UNREADABLE)


def load_rgb(path: Path, size: int = STORED_SIZE, draft: bool = True) -> tuple[Image.Image, str]:
    """Decode the file at `path` to RGB, returning the image and the source's `FORMAT/mode` for the summary."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise Unreadable(f"{UNREADABLE}: {e.strerror or e}") from None
    with f:
        return decode_rgb(f, size, draft)


def decode_rgb(f: BinaryIO, size: int = STORED_SIZE, draft: bool = True) -> tuple[Image.Image, str]:
    """Decode an open source (a file, or an archive member in memory) to RGB, with its `FORMAT/mode`. Raises BadImage."""
    try:
        if f.seek(0, io.SEEK_END) == 0:
            raise BadImage("empty file")
        f.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(f)
        source = f"{im.format}/{im.mode}"
        if draft and im.format == "JPEG":
            im.draft("RGB", short_side_size(im.size, size))
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify") from None
    except OSError as e:
        if e.errno is not None:  # the OS failed a read (I/O error); Pillow's decode errors carry no errno
            raise Unreadable(f"{UNREADABLE}: {e.strerror or e}") from None
        raise BadImage(f"cannot decode: {e}") from None
    except (SyntaxError, ValueError) as e:
        raise BadImage(f"cannot decode: {e}") from None
    return (im if im.mode == "RGB" else im.convert("RGB")), source


def short_side_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(w, h) scaled so that the shorter side is `short`, rounding the longer side."""
    w, h = size
    if w <= h:
        return short, max(short, round(h * short / w))
    return max(short, round(w * short / h)), short


def resize_center_crop(im: Image.Image, size: int = STORED_SIZE) -> Image.Image:
    """The central size×size patch of the image resized to short side `size` (§2).

    Only the patch is computed: its region of the source is passed to the resize as `box`, so
    memory stays bounded for any aspect ratio (resizing a 1×20000 strip in full would take GBs).
    """
    w, h = im.size
    rw, rh = short_side_size(im.size, size)
    left, top = (rw - size) // 2, (rh - size) // 2
    sx, sy = w / rw, h / rh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return im.resize((size, size), RESAMPLE, box=box)


def encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """Baseline (non-progressive) JPEG with 4:2:0 chroma, which every decoder on every device reads."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=CHROMA_SUBSAMPLING, progressive=False)
    return buf.getvalue()


def prepare_image(path: Path, quality: int, size: int = STORED_SIZE, draft: bool = True) -> tuple[bytes, str]:
    """The stored JPEG for one source file, and its source `FORMAT/mode`. Raises BadImage."""
    im, source = load_rgb(path, size, draft)
    return encode_jpeg(resize_center_crop(im, size), quality), source


def prepare_image_bytes(data: bytes, quality: int, size: int = STORED_SIZE, draft: bool = True) -> tuple[bytes, str]:
    """`prepare_image` for a source already in memory (a tar member): the same checks, the same bytes out."""
    im, source = decode_rgb(io.BytesIO(data), size, draft)
    return encode_jpeg(resize_center_crop(im, size), quality), source

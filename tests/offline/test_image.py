"""Resize/crop geometry, colour-mode normalisation and the draft-mode decode bound."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.pipeline.offline.image import BadImage, load_rgb, prepare_image, resize_center_crop, short_side_size
from alexnet.pipeline.store.shards import decode_jpeg

DRAFT_PSNR_BOUND_DB = 32.0  # stated bound: draft decoding changes the stored image by less than this


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize(
    "size, expected",
    [((400, 300), (341, 256)), ((300, 400), (256, 341)), ((256, 256), (256, 256)), ((3000, 257), (2988, 256))],
)
def test_short_side_size(size, expected) -> None:
    assert short_side_size(size, 256) == expected


def test_center_crop_geometry_on_known_stripes() -> None:
    """A 1024×512 image: red left quarter, green middle half, blue right quarter.

    Short side 512→256 halves it to 512×256; the central 256 columns are exactly the green half,
    so every column away from the filter's reach of the edges is pure green.
    """
    a = np.zeros((512, 1024, 3), np.uint8)
    a[:, :256, 0] = 255
    a[:, 256:768, 1] = 255
    a[:, 768:, 2] = 255
    out = np.asarray(resize_center_crop(Image.fromarray(a)))
    assert out.shape == (256, 256, 3)
    assert (out[:, 3:-3] == [0, 255, 0]).all()
    assert (out[:, 0, 0] > 0).all() and (out[:, -1, 2] > 0).all()  # neighbours bleed in only at the edge


def test_center_crop_offsets_for_odd_sizes() -> None:
    """A single bright column/row in the source lands where the geometry says it must."""
    for h, w in [(300, 451), (613, 257), (256, 700)]:
        a = np.zeros((h, w, 3), np.uint8)
        rw, rh = short_side_size((w, h), 256)
        left, top = (rw - 256) // 2, (rh - 256) // 2
        cx, cy = left + 100, top + 60  # resized coordinates of a point inside the crop
        a[:, int((cx + 0.5) * w / rw), :] = 255
        a[int((cy + 0.5) * h / rh), :, :] = 255
        out = np.asarray(resize_center_crop(Image.fromarray(a))).astype(int)
        assert abs(int(out[128].sum(axis=1).argmax()) - 100) <= 1, (h, w)
        assert abs(int(out[:, 128].sum(axis=1).argmax()) - 60) <= 1, (h, w)


def test_modes_become_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    files = {
        "cmyk.JPEG": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "gray.JPEG": lambda p: rgb.convert("L").save(p, "JPEG"),
        "png.JPEG": lambda p: rgb.convert("P").save(p, "PNG"),
        "rgba.JPEG": lambda p: rgb.convert("RGBA").save(p, "PNG"),
        "progressive.JPEG": lambda p: rgb.save(p, "JPEG", progressive=True),
    }
    for name, save in files.items():
        save(tmp_path / name)
        jpeg, _ = prepare_image(tmp_path / name, quality=90)
        with Image.open(io.BytesIO(jpeg)) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (256, 256)), name
            assert not im.info.get("progressive"), name


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"hello, not an image\n", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 40, "cannot decode|not an image"),
    ],
)
def test_bad_files_raise_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.JPEG"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        load_rgb(path)


def test_draft_decode_changes_little(tmp_path: Path) -> None:
    """Draft mode (DCT-domain downscale) on a 2400×1600 photo-like JPEG, against a full decode."""
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (50, 75, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((2400, 1600), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 6, (1600, 2400, 3))
    big = Image.fromarray(np.clip(np.asarray(big) + noise, 0, 255).astype(np.uint8))
    big.save(tmp_path / "big.JPEG", quality=92)
    with Image.open(tmp_path / "big.JPEG") as im:
        im.draft("RGB", short_side_size(im.size, 256))
        assert im.size[1] < 1600  # draft really decoded at a reduced scale
    drafted = decode_jpeg(prepare_image(tmp_path / "big.JPEG", 95, draft=True)[0])
    full = decode_jpeg(prepare_image(tmp_path / "big.JPEG", 95, draft=False)[0])
    assert psnr(drafted, full) > DRAFT_PSNR_BOUND_DB

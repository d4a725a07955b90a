"""A small synthetic ILSVRC-2012-shaped tree, so the whole chain can run and be tested without ImageNet.

Each class has its own shape kind, hue palette and stripe texture (frequency and angle); every image
draws its own size, background, object position, scale, rotation, distractor shapes and noise, so a
small CNN learns the classes in a few epochs but cannot read them off one pixel.

The images carry photo-like detail at all scales: octaves of noise, each drawn small and upscaled,
sum to a roughly 1/f amplitude spectrum like photographs' (foliage-, ground- or sky-like texture on
the background, a fainter texture of its own on the object, whose edges, hues and stripes stay
sharp), plus a little sensor-like grain. The loader benchmarks need this: JPEG decode cost grows with
the detail a file holds, and smooth images would decode much faster than photographs stored the
same way (`docs/benchmarks.md` has the sizes and decode times).

Sizes follow ImageNet's (short side 200-600, aspect 0.6-1.8, about 1% above 2000 px), and the train
split carries the real set's oddities (PNG, CMYK, grayscale, progressive, empty and non-image
`.JPEG` files), listed in SYNTH_ODDITIES.txt. Every image has its own RNG seeded from (seed, split,
class, index), so the same arguments give byte-identical files whatever the worker scheduling.

`archives=True` writes the same images as the three official archives instead of the tree
(`pack_archives`): `ILSVRC2012_img_train.tar` (one tar per class inside), `ILSVRC2012_img_val.tar`
(flat) and `ILSVRC2012_devkit_t12.tar.gz` (the validation ground truth and a meta.mat whose ID order
is not sorted-wnid order, as the real one's is not).
"""

from __future__ import annotations

import colorsys
import gzip
import io
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw
from tqdm import tqdm

from alexnet.pipeline.offline.ilsvrc import DEVKIT_META, DEVKIT_TAR, DEVKIT_VAL, TRAIN_TAR, VAL_TAR
from alexnet.pipeline.store.atomic import publish, tmp_path

ODDITIES = ("png", "cmyk", "grayscale", "progressive", "empty", "not_an_image")
ODDITIES_FILE = "SYNTH_ODDITIES.txt"
KINDS = ("disc", "triangle", "square", "star", "ring", "cross", "hexagon", "crescent")
BIG_FRACTION = 0.01  # share of images above 2000 px on the long side
BIG_SCALE = 4  # big images are drawn this many times smaller, then upscaled
# Each detail octave's amplitude over the next coarser one's, per image: 1 is a 1/f amplitude spectrum;
# a little above 1 makes up for the smooth object and the resize to 256, so the stored images' spectra
# fall about as 1/f**1.15 (photographs: about 1/f**1.0-1.2) and their JPEGs average about 32 KB.
DETAIL_GAIN = (1.05, 1.35)
BACKGROUND_DETAIL = (24.0, 48.0)  # std of the background's multi-scale luma detail, 0-255 scale, per image
OBJECT_DETAIL = (0.12, 0.2)  # std of the object's own texture, as a fraction of its brightness, per image
TRAIN, VAL = 0, 1
ADJECTIVES = "spotted striped crested tufted lesser greater royal dwarf woolly horned banded speckled marsh alpine river desert".split()
COLOURS = (
    "amber azure crimson olive ochre slate ivory cobalt copper jade russet violet saffron teal umber coral".split()
)
NOUNS = "finch lantern beetle kettle wobbler heron marten orchid tortoise bellflower gecko trumpet moth lily badger cress".split()


@dataclass(frozen=True)
class Style:
    """What makes a class a class: one shape kind, a two-hue palette and a stripe texture."""

    kind: str
    hues: tuple[float, float]
    saturation: float
    values: tuple[float, float]
    frequency: float  # stripes across the object's diameter
    angle: float  # stripe direction, radians


@dataclass(frozen=True)
class Job:
    """One file to write: where, which RNG stream, its class style, whether it is big or odd."""

    path: Path
    split: int
    label: int
    index: int
    style: Style
    big: bool
    oddity: str | None


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator for one (seed, stream...) tuple; negative seeds are fine."""
    return np.random.default_rng([seed % 2**64, *stream])


def class_style(seed: int, label: int) -> Style:
    """The style of class `label`: hues spread by the golden ratio, kinds cycle, textures vary.

    Labels 8 apart get near hues (8 × 0.618 ≈ 0.06 mod 1), so the kind cycle shifts by one every
    len(KINDS) classes to give them different shapes.
    """
    rng = _rng(seed, 2, label)
    hue = (_rng(seed, 6).random() + label * 0.618034) % 1.0
    return Style(
        kind=KINDS[(label + label // len(KINDS)) % len(KINDS)],
        hues=(hue, (hue + rng.uniform(-0.09, 0.09)) % 1.0),
        saturation=float(rng.uniform(0.6, 0.95)),
        values=(float(rng.uniform(0.35, 0.6)), float(rng.uniform(0.75, 1.0))),
        frequency=float(rng.choice([1.5, 3.0, 5.0, 8.0])),
        angle=float(rng.uniform(0, np.pi)),
    )


def _outline(kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit-radius outline of a shape kind, and the hole cut out of it (ring, crescent), as (k, 2)."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    disc = np.stack([np.cos(t), 0.85 * np.sin(t)], 1)
    if kind in ("triangle", "square", "hexagon", "star"):
        n = {"triangle": 3, "square": 4, "hexagon": 6, "star": 10}[kind]
        a = np.arange(n) * 2 * np.pi / n
        r = np.where(np.arange(n) % 2, 0.42, 1.0) if kind == "star" else np.ones(n)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1), None
    if kind == "cross":
        w = 0.33
        return np.array(
            [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        ), None
    if kind == "ring":
        return disc, 0.55 * disc
    if kind == "crescent":
        return disc, 0.85 * disc + [0.45, 0.0]
    return disc, None


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    kind: str,
    cx: float,
    cy: float,
    r: float,
    rot: float,
    fill: int | tuple,
    hole: int | tuple,
) -> None:
    """Draw a rotated, scaled `kind` centred at (cx, cy), cutting its hole with the `hole` colour."""
    c, s = np.cos(rot), np.sin(rot)
    turn = np.array([[c, s], [-s, c]]) * r
    outline, cut = _outline(kind)
    for pts, colour in ((outline, fill), (cut, hole)):
        if pts is not None:
            draw.polygon([tuple(p) for p in (pts @ turn + [cx, cy]).round(1)], fill=colour)


def _size(rng: np.random.Generator, big: bool) -> tuple[int, int]:
    """(w, h): short side 200-600 (or long side 2000-3200 when big), aspect w/h in 0.6-1.8."""
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.8))))
    if big:
        long = int(rng.integers(2001, 3201))
        return (long, round(long / aspect)) if aspect >= 1 else (round(long * aspect), long)
    short = int(rng.integers(200, 601))
    return (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    """An HSV colour (hue wraps around) as float32 RGB on the 0-255 scale."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A low-saturation two-colour gradient with blotches and mottling, drawn small and upscaled."""
    gw, gh = max(2, w // 20), max(2, h // 20)
    hue = rng.random()
    c0, c1 = (_rgb(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.05, 0.35), rng.uniform(0.25, 0.9)) for _ in range(2))
    a = rng.uniform(0, 2 * np.pi)
    u, v = np.linspace(0, w, gw, dtype=np.float32)[None, :], np.linspace(0, h, gh, dtype=np.float32)[:, None]
    ramp = ((u * np.cos(a) + v * np.sin(a)) / (w + h) + 0.5).clip(0, 1)[..., None]
    blotch = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((gw, gh), Image.Resampling.BICUBIC)
    grid = c0 + ramp * (c1 - c0) + 0.25 * (np.asarray(blotch, np.float32) - 128) + rng.normal(0, 10, (gh, gw, 3))
    return Image.fromarray(grid.clip(0, 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)


def _detail(rng: np.random.Generator, w: int, h: int, gain: float) -> np.ndarray:
    """Zero-mean multi-scale noise of about unit std, (h, w) float32: a natural-image-like texture.

    Octaves of uniform noise, from 4-8 samples across the short side up to one per pixel, each twice
    the previous resolution and `gain` times its amplitude, are summed coarse to fine by bicubic
    upscaling (a Laplacian pyramid run backwards). Each finer octave spreads its variance over 4x the
    spatial-frequency area, so gain 1 gives an amplitude spectrum falling as 1/f, as photographs' do
    on average (gain 0.5 would give 1/f**2). All octaves together cost about 4/3 of the finest one.
    """
    levels = max(0, int(np.log2(max(1, min(w, h)))) - 2)
    amp, var, acc = np.float32(2 * np.sqrt(3)), 0.0, None  # uniform on [-amp/2, amp/2): std amp/sqrt(12)
    for k in range(levels, -1, -1):
        size = (max(1, -(-w >> k)), max(1, -(-h >> k)))
        layer = rng.random(size[::-1], dtype=np.float32) - np.float32(0.5)
        layer *= amp
        if acc is not None:
            layer += np.asarray(Image.fromarray(acc).resize(size, Image.Resampling.BICUBIC))
        acc, var, amp = layer, var + amp * amp / 12, amp * np.float32(gain)
    return acc * np.float32(1.2 / np.sqrt(var))  # 1.2: bicubic upscaling smooths the coarser octaves


def render(job: Job, seed: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The RGB image for one job and the object's bounding box (xmin, ymin, xmax, ymax).

    The background gets strong multi-scale luma detail (`_detail` at half resolution, upscaled), the
    object a fainter texture of its own that modulates its brightness, so its edges stay sharp and
    its hues and stripes stay clear; distractors share the background's detail, and everything the
    sensor-like grain.
    """
    rng = _rng(seed, job.split, job.label, job.index)
    full_w, full_h = _size(rng, job.big)
    k = BIG_SCALE if job.big else 1
    w, h = -(-full_w // k), -(-full_h // k)
    im = _background(rng, w, h)
    detail_rng = rng.spawn(1)[0]  # the detail's own stream, so the layout and colours are what they were without it
    texture = _detail(detail_rng, -(-w // 2), -(-h // 2), detail_rng.uniform(*DETAIL_GAIN))
    luma = texture * np.float32(detail_rng.uniform(*BACKGROUND_DETAIL))
    luma += np.float32(128)
    luma = Image.fromarray(np.clip(luma, 0, 255, out=luma).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)

    st = job.style
    r = min(w, h) * rng.uniform(0.2, 0.42)
    cx, cy = rng.uniform(0.8 * r, w - 0.8 * r), rng.uniform(0.8 * r, h - 0.8 * r)
    x0, y0, x1, y1 = (
        int(max(0, cx - 1.1 * r)),
        int(max(0, cy - 1.1 * r)),
        int(min(w, cx + 1.1 * r)),
        int(min(h, cy + 1.1 * r)),
    )
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    _draw_shape(ImageDraw.Draw(mask), st.kind, cx - x0, cy - y0, r, rng.uniform(0, 2 * np.pi), 255, 0)
    x = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    y = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    angle = st.angle + rng.normal(0, 0.15)
    tex = 0.5 + 0.5 * np.sin(
        (x * np.cos(angle) + y * np.sin(angle)) * np.float32(np.pi * st.frequency / r) + rng.uniform(0, 2 * np.pi)
    )
    light = rng.uniform(0, 2 * np.pi)
    shade = 1 + (x * np.cos(light) + y * np.sin(light)) * np.float32(0.25 / r)
    # The object's own texture: the same half-resolution detail read point-mirrored, so it does not
    # continue the background's across the object's edge.
    mirrored = Image.fromarray(np.ascontiguousarray(texture[::-1, ::-1]))
    surface = mirrored.resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC, box=(x0 / 2, y0 / 2, x1 / 2, y1 / 2))
    shade += np.asarray(surface) * np.float32(detail_rng.uniform(*OBJECT_DETAIL))
    jitter, sat, val = rng.normal(0, 0.025), st.saturation * rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.1)
    dark, bright = (_rgb(hue + jitter, sat, min(1.0, v * val)) for hue, v in zip(st.hues, st.values))
    fill = tex[..., None] * (bright - dark)
    fill += dark
    fill *= shade[..., None]
    im.paste(Image.fromarray(np.clip(fill, 0, 255, out=fill).astype(np.uint8)), (x0, y0), mask)
    luma.paste(128, (x0, y0, x1, y1), mask)  # no background detail on the object

    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(0, 3))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        dr = min(w, h) * rng.uniform(0.04, 0.12)
        _draw_shape(
            draw,
            KINDS[int(rng.integers(len(KINDS)))],
            rng.uniform(0, w),
            rng.uniform(0, h),
            dr,
            rng.uniform(0, 7),
            colour,
            colour,
        )
    grain = int(rng.integers(3, 14))  # uniform sensor-like luma noise in [-grain, grain]
    luma = ImageChops.add(luma, Image.fromarray(rng.integers(0, 2 * grain + 1, (h, w), dtype=np.uint8)), offset=-grain)
    im = ImageChops.add(im, Image.merge("RGB", (luma, luma, luma)), offset=-128)
    if job.big:
        im = im.resize((full_w, full_h), Image.Resampling.BICUBIC)
    box = (max(0, cx - r), max(0, cy - r), min(w - 1, cx + r), min(h - 1, cy + r))
    return im, tuple(int(v * full_w / w) for v in box)


def _encode(im: Image.Image, oddity: str | None) -> bytes:
    """The file's bytes: baseline RGB JPEG quality 90, or the requested oddity."""
    if oddity == "empty":
        return b""
    if oddity == "not_an_image":
        return b"This is not an image. ILSVRC-2012 has files that lie about their type; so does this tree.\n"
    buf = io.BytesIO()
    if oddity == "png":
        im.save(buf, "PNG")
    else:
        im = im.convert({"cmyk": "CMYK", "grayscale": "L"}.get(oddity or "", "RGB"))
        im.save(buf, "JPEG", quality=90, progressive=oddity == "progressive")
    return buf.getvalue()


def _write(args: tuple[Job, int]) -> tuple[Path, tuple[int, int, int, int]]:
    """Pool worker: render and write one file; returns its path and object box."""
    job, seed = args
    im, box = render(job, seed)
    job.path.write_bytes(_encode(im, job.oddity))
    return job.path, box


def wnids_and_names(classes: int, seed: int) -> list[tuple[str, str]]:
    """Distinct well-formed wnids (`n` + 8 digits) and readable made-up names, in generation order."""
    rng = _rng(seed, 3)
    numbers = rng.choice(14_000_000, size=classes, replace=False) + 1_000_000
    combos = rng.choice(len(ADJECTIVES) * len(COLOURS) * len(NOUNS), size=classes, replace=False)
    out = []
    for number, combo in zip(numbers, combos):
        a, c, n = np.unravel_index(combo, (len(ADJECTIVES), len(COLOURS), len(NOUNS)))
        adj, colour, noun = ADJECTIVES[a], COLOURS[c], NOUNS[n]
        out.append((f"n{number:08d}", f"{adj} {colour} {noun}, {noun.capitalize()}ia {colour}ensis"))
    return out


def _plan(
    out: Path, classes: int, train_per_class: int, val_per_class: int, seed: int
) -> tuple[list[tuple[str, str]], list[Job], list[str]]:
    """The (wnid, name) list, every file's job, and the val wnids in file-number order.

    Oddity k goes to class k % classes, counting back from the last index, and never takes a class's
    first image, so every class keeps at least one normal image (with one image per class there are
    no oddities). When train has 20 or more images, the last class's first image is forced big.
    """
    names = wnids_and_names(classes, seed)
    styles = [class_style(seed, c) for c in range(classes)]
    odd = {
        (k % classes, train_per_class - 1 - k // classes): kind
        for k, kind in enumerate(ODDITIES)
        if k // classes < train_per_class - 1
    }
    big = _rng(seed, 4).random((2, classes, max(train_per_class, val_per_class))) < BIG_FRACTION
    if classes * train_per_class >= 20:
        big[TRAIN, classes - 1, 0] = True
    jobs = [
        Job(
            out / "train" / wnid / f"{wnid}_{i + 1}.JPEG",
            TRAIN,
            c,
            i,
            styles[c],
            bool(big[TRAIN, c, i]) and (c, i) not in odd,
            odd.get((c, i)),
        )
        for c, (wnid, _) in enumerate(names)
        for i in range(train_per_class)
    ]
    order = _rng(seed, 5).permutation(classes * val_per_class)
    val_wnids = []
    for n, flat in enumerate(order, 1):
        c, i = divmod(int(flat), val_per_class)
        jobs.append(Job(out / "val" / f"ILSVRC2012_val_{n:08d}.JPEG", VAL, c, i, styles[c], bool(big[VAL, c, i]), None))
        val_wnids.append(names[c][0])
    return names, jobs, val_wnids


def write_tree(
    out: Path, classes: int, train_per_class: int, val_per_class: int, seed: int, archives: bool = False
) -> str:
    """Write the synthetic tree under `out` (which must be absent or empty); returns a summary line.

    `archives`: write it as the three official archives instead (see `pack_archives`).
    """
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; pass a new --out folder or empty this one first")
    names, jobs, val_wnids = _plan(out, classes, train_per_class, val_per_class, seed)
    for wnid, _ in names:
        (out / "train" / wnid).mkdir(parents=True)
    (out / "val").mkdir()
    workers = os.cpu_count() or 1
    boxes = {}
    with Pool(workers) as pool:
        chunk = max(1, min(16, len(jobs) // (workers * 8)))
        work = pool.imap_unordered(_write, [(job, seed) for job in jobs], chunksize=chunk)
        for path, box in tqdm(work, total=len(jobs), desc="synth", unit="img"):
            boxes[path] = box
    rows = [
        f"{job.path.stem},{wnid} {' '.join(map(str, boxes[job.path]))}"
        for job, wnid in zip(jobs[-len(val_wnids) :], val_wnids)
    ]
    (out / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    (out / "LOC_synset_mapping.txt").write_text("".join(f"{w} {name}\n" for w, name in sorted(names)))

    def listed(job: Job) -> str:  # the path prepare's quarantine list will show
        rel = job.path.relative_to(out)
        return f"{TRAIN_TAR}/{rel.parent.name}.tar/{rel.name}" if archives else rel.as_posix()

    odd = [f"{listed(job)} {job.oddity}\n" for job in jobs if job.oddity]
    (out / ODDITIES_FILE).write_text("".join(odd))
    form = ""
    if archives:
        id_order = [names[int(i)][0] for i in _rng(seed, 7).permutation(classes)]
        pack_archives(out, out, val_wnids, id_order, dict(names))
        for folder in ("train", "val"):
            shutil.rmtree(out / folder)
        (out / "LOC_val_solution.csv").unlink()
        form = f" as {TRAIN_TAR}, {VAL_TAR} and {DEVKIT_TAR}"
    return (
        f"Wrote {classes} classes, {classes * train_per_class} train and {len(val_wnids)} val images{form} "
        f"({len(odd)} planted oddities, listed in {ODDITIES_FILE}) to {out} in {time.perf_counter() - start:.1f} s."
    )


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One regular member with fixed metadata, so the same files give byte-identical archives."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def devkit_files(val_wnids: list[str], id_order: list[str], names: dict[str, str] | None = None) -> dict[str, bytes]:
    """The devkit's ILSVRC2012_validation_ground_truth.txt (1-based IDs) and a meta.mat whose ID order is `id_order`."""
    from scipy.io import savemat

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    names = names or {}
    synsets = np.array([(i + 1, w, names.get(w, f"class {w}"), 0) for i, w in enumerate(id_order)], dtype=dtype)
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    ids = {w: i + 1 for i, w in enumerate(id_order)}
    truth = "".join(f"{ids[w]}\n" for w in val_wnids)
    return {DEVKIT_VAL: truth.encode(), DEVKIT_META: meta.getvalue()}


def pack_archives(
    tree: Path, dest: Path, val_wnids: list[str], id_order: list[str], names: dict[str, str] | None = None
) -> None:
    """Pack an extracted tree (`train/<wnid>/`, flat `val/`) into the three official archives in `dest`.

    `val_wnids` labels the flat val files in name order; `id_order` is meta.mat's class order.
    """
    dest.mkdir(parents=True, exist_ok=True)
    train, val = dest / TRAIN_TAR, dest / VAL_TAR
    with tarfile.open(tmp_path(train), "w", format=tarfile.GNU_FORMAT) as outer:
        for folder in sorted(p for p in (tree / "train").iterdir() if p.is_dir()):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for f in sorted(folder.iterdir()):
                    _add(tar, f.name, f.read_bytes())
            _add(outer, f"{folder.name}.tar", inner.getvalue())
    publish(tmp_path(train), train)
    with tarfile.open(tmp_path(val), "w", format=tarfile.GNU_FORMAT) as tar:
        for f in sorted((tree / "val").iterdir()):
            _add(tar, f.name, f.read_bytes())
    publish(tmp_path(val), val)
    devkit = dest / DEVKIT_TAR
    with open(tmp_path(devkit), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in devkit_files(val_wnids, id_order, names).items():
                _add(tar, f"ILSVRC2012_devkit_t12/data/{name}", data)
    publish(tmp_path(devkit), devkit)

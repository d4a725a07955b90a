"""Tiny hand-made ILSVRC trees for the layout, prepare and verify tests (full control of every file)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.pipeline.offline.synth import devkit_files, pack_archives

WNIDS = ["n02000003", "n01000001", "n03000002"]  # created out of sorted order on purpose


def photo(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth random image (JPEG-friendly, unlike white noise)."""
    small = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def make_train(root: Path, per_class: int = 6, seed: int = 0) -> None:
    """train/<wnid>/<wnid>_<n>.JPEG for the three WNIDS, with varied sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    for wnid in WNIDS:
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = int(rng.integers(200, 400)), int(rng.integers(200, 500))
            photo(rng, h, w).save(folder / f"{wnid}_{i}.JPEG", quality=90)


def make_flat_val(root: Path, labels: list[str], seed: int = 1) -> list[str]:
    """Flat val/ILSVRC2012_val_NNNNNNNN.JPEG files, one per label; returns their stems in order."""
    rng = np.random.default_rng(seed)
    (root / "val").mkdir(parents=True)
    stems = [f"ILSVRC2012_val_{i:08d}" for i in range(1, len(labels) + 1)]
    for stem in stems:
        photo(rng, 300, 260).save(root / "val" / f"{stem}.JPEG", quality=90)
    return stems


def write_kaggle_csv(path: Path, stems: list[str], labels: list[str]) -> None:
    """Kaggle's LOC_val_solution.csv: the first token of PredictionString is the wnid."""
    rows = [f"{s},{w} 10 20 100 120 {w} 5 5 50 50" for s, w in zip(stems, labels)]
    path.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")


def write_devkit(folder: Path, labels: list[str], id_order: list[str]) -> None:
    """The devkit's ground truth (1-based ILSVRC2012_IDs) and a meta.mat (written with scipy) whose ID order is `id_order`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in devkit_files(labels, id_order).items():
        (folder / name).write_bytes(data)


def make_prepared(root: Path, out: Path, per_class: int = 7, shard_size: int = 5) -> Path:
    """A hand-made tree with flat Kaggle-labelled val, prepared into `out` (returned)."""
    from alexnet.pipeline.offline.prepare import Settings, prepare

    make_train(root, per_class=per_class)
    labels = [WNIDS[i % 3] for i in range(4)]
    write_kaggle_csv(root / "LOC_val_solution.csv", make_flat_val(root, labels), labels)
    prepare(root=root, out=out, settings=Settings(shard_size=shard_size), workers=2)
    return out


def make_archives(tree: Path, dest: Path, val_labels: list[str], id_order: list[str]) -> Path:
    """The three official archives in `dest` holding `tree`'s images (flat val labelled `val_labels`); returns dest."""
    pack_archives(tree, dest, val_labels, id_order)
    return dest


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A plain tar of (name, bytes) members, as a WebDataset writer makes one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_webdataset(
    tree: Path,
    dest: Path,
    val_labels: list[str],
    cls_order: list[str],
    tars: int = 3,
    json_meta: bool = True,
    seed: int = 5,
) -> Path:
    """`tree`'s images as WebDataset tars in `dest` (`wds-train-000N.tar`, `wds-validation-00.tar`), shuffled across tars.

    Each sample is `KEY.jpg` (the file's bytes), `KEY.cls` (the wnid's position in `cls_order`, which
    need not be sorted) and, with `json_meta`, `KEY.json` with the source file name and label.
    """
    dest.mkdir(parents=True, exist_ok=True)

    def members(path: Path, wnid: str) -> list[tuple[str, bytes]]:
        label = cls_order.index(wnid)
        out = [(f"{path.stem}.jpg", path.read_bytes()), (f"{path.stem}.cls", str(label).encode())]
        if json_meta:
            out.append((f"{path.stem}.json", json.dumps({"filename": path.name, "label": label}).encode()))
        return out

    train = [(p, p.parent.name) for p in sorted((tree / "train").glob("*/*.JPEG"))]
    np.random.default_rng(seed).shuffle(train)
    for n in range(tars):
        (dest / f"wds-train-{n:04d}.tar").write_bytes(tar_bytes([m for p, w in train[n::tars] for m in members(p, w)]))
    val = sorted((tree / "val").glob("*.JPEG"))
    (dest / "wds-validation-00.tar").write_bytes(tar_bytes([m for p, w in zip(val, val_labels) for m in members(p, w)]))
    return dest

"""Tiny hand-made ILSVRC trees for the layout, prepare and verify tests (full control of every file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
    """The devkit's ground truth (1-based ILSVRC2012_IDs) and a meta.mat whose ID order is `id_order`."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array([(i + 1, w, f"class {w}", 0) for i, w in enumerate(id_order)], dtype=dtype)
    savemat(folder / "meta.mat", {"synsets": synsets})
    ids = [id_order.index(w) + 1 for w in labels]
    (folder / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, ids)) + "\n")


def make_prepared(root: Path, out: Path, per_class: int = 7, shard_size: int = 5) -> Path:
    """A hand-made tree with flat Kaggle-labelled val, prepared into `out` (returned)."""
    from alexnet.pipeline.offline.prepare import Settings, prepare

    make_train(root, per_class=per_class)
    labels = [WNIDS[i % 3] for i in range(4)]
    write_kaggle_csv(root / "LOC_val_solution.csv", make_flat_val(root, labels), labels)
    prepare(root=root, out=out, settings=Settings(shard_size=shard_size), workers=2)
    return out

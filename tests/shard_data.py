"""Prepared folders the tests share, and small helpers to read them back.

`write_prepared`: tiny synthetic shards for the loader tests, where every sample has its own label,
so a label names its image: train labels 0..47 in shard order (so a training label is also the
sample's id), val 100..120. `tiny_prepared`: synth's ILSVRC-shaped tree through the real
`prepare` and `pca-stats`, for the trainer and the benchmarks.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet.pipeline.augment import normalise_constants
from alexnet.pipeline.offline.image import encode_jpeg
from alexnet.pipeline.offline.pca import compute_pca
from alexnet.pipeline.offline.prepare import Settings, prepare
from alexnet.pipeline.offline.synth import write_tree
from alexnet.pipeline.store.manifest import FORMAT_VERSION, index_path, read_manifest, shards_digest, write_manifest
from alexnet.pipeline.store.pca_file import PCA_FILE, PcaStats, save_pca
from alexnet.pipeline.store.shards import ShardReader, ShardWriter, read_index, shard_name

TRAIN_SHARDS = [20, 20, 8]  # 48 samples; the last shard short, as prepare's often is
VAL_SHARDS = [16, 5]  # 21 samples: odd, so ranks and batches never divide it
VAL_LABEL0 = 100
BATCH = 8
QUALITY = 90
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
PCA = PcaStats(
    mean=[0.48, 0.46, 0.41],
    std=[0.23, 0.22, 0.225],
    covariance=np.eye(3).tolist(),
    eigval=[0.2175, 0.0188, 0.0045],
    eigvec=EIGVEC.tolist(),
    pixel_count=1,
    image_count=1,
    manifest_sha256="",
)


def textured(rng: np.random.Generator, i: int) -> np.ndarray:
    """A 256×256 image with a per-image gradient and noise, so a crop one pixel off looks different."""
    yy, xx = np.mgrid[0:256, 0:256]
    base = np.stack([(xx * 3 + i * 7) % 256, (yy * 5 + i * 11) % 256, ((xx + yy) * 2 + i) % 256], -1)
    return np.clip(0.7 * base + rng.normal(0, 20, (256, 256, 3)), 0, 255).astype(np.uint8)


def write_split(out: Path, split: str, sizes: list[int], first_label: int, rng: np.random.Generator) -> dict:
    """The split's shards; returns its manifest record (as `prepare` writes it)."""
    (out / split).mkdir(parents=True)
    label, shards = first_label, []
    for n, size in enumerate(sizes):
        writer = ShardWriter(out / split / shard_name(split, n))
        for _ in range(size):
            writer.add(f"img{label:04d}", encode_jpeg(Image.fromarray(textured(rng, label)), QUALITY), label)
            label += 1
        writer.close()
        shards.append(
            {"name": writer.path.name, "samples": size, "bytes": writer.path.stat().st_size, "sha256": writer.sha256}
        )
    return {"samples": sum(sizes), "shards": shards, "class_counts": [], "quarantine": []}


def write_prepared(out: Path, splits: dict[str, tuple[list[int], int]] | None = None) -> Path:
    """Shards, the manifest and pca.json, as `prepare` and `pca-stats` would leave them."""
    rng = np.random.default_rng(0)
    records = {
        split: write_split(out, split, sizes, first_label, rng)
        for split, (sizes, first_label) in (
            splits or {"train": (TRAIN_SHARDS, 0), "val": (VAL_SHARDS, VAL_LABEL0)}
        ).items()
    }
    manifest = {
        "format_version": FORMAT_VERSION,
        "complete": True,
        "settings": {"size": 256, "quality": QUALITY},
        "splits": records,
    }
    write_manifest(out, manifest)
    save_pca(dataclasses.replace(PCA, manifest_sha256=shards_digest(manifest)), out / PCA_FILE)
    return out


def tiny_prepared(root: Path) -> Path:
    """synth (3 classes, 8 train and 4 val images each) → prepare (8-image shards) → pca.json under `root`; returns the output."""
    src, out = root / "src", root / "out"
    write_tree(src, classes=3, train_per_class=8, val_per_class=4, seed=0)
    prepare(root=src, out=out, settings=Settings(shard_size=8), workers=2)
    save_pca(compute_pca(out, workers=2), out / PCA_FILE)
    return out


def tar_samples(tar: Path):
    """(key, JPEG bytes, label) of every sample of one shard, in order."""
    keys, _ = read_index(index_path(tar))
    reader = ShardReader([tar])
    for i, jpeg, label in reader.samples():
        yield keys[i], bytes(jpeg), label


def split_tars(data: Path, split: str) -> list[Path]:
    """A split's tars in manifest order."""
    return [data / split / s["name"] for s in read_manifest(data)["splits"][split]["shards"]]


def decode_stored(data: Path) -> dict[int, torch.Tensor]:
    """Every stored image decoded by Pillow (the reference decoder), by label."""
    return {
        label: torch.from_numpy(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).copy())
        for tar in sorted(data.glob("*/*.tar"))
        for _, jpeg, label in tar_samples(tar)
    }


def labels_of(batches) -> list[int]:
    return [int(v) for b in batches for v in b[1]]


def assert_levels_close(
    actual: torch.Tensor, expected: torch.Tensor, what: str, tolerance: tuple[float, float], normalize: str = "mean"
) -> None:
    """Normalised images equal up to (max, mean) pixel levels, scaled back through the normalisation.

    Under "mean" the values are in levels already; under "std" they are levels / (255·std).
    """
    largest, average = tolerance
    divisor = torch.tensor(normalise_constants(PCA, normalize)[1], device=actual.device).view(3, 1, 1)
    levels = (actual - expected).abs() * divisor
    assert levels.max() <= largest, f"{what}: max {levels.max():.3f} levels"
    assert levels.mean() <= average, f"{what}: mean {levels.mean():.3f} levels"


def kill_after_first_shard(cmd: list[str], out: Path, timeout: float = 60) -> None:
    """Start `cmd` (a prepare into `out`), SIGKILL it once the manifest records a finished train shard."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "manifest.json").exists() and read_manifest(out)["splits"]["train"]["shards"]:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

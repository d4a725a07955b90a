"""RGB statistics of the training set for the paper's PCA lighting (§4.1) and normalisation.

Every training image (decoded 256×256) contributes float64 pixel sums and cross-products; the
shards are processed in parallel and the partial sums merged, so the result does not depend on the
number of workers. All values in `pca.json` are on the 0–1 pixel scale.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numba
import numpy as np
from tqdm import tqdm

from alexnet.pipeline.files import write_atomic
from alexnet.pipeline.image import decode_rgb
from alexnet.pipeline.manifest import manifest_path, read_manifest, shard_paths
from alexnet.pipeline.shards import index_path, iter_samples, read_index, sha256_file

PCA_FILE = "pca.json"
CHUNK = 128  # images per worker task: small enough to spread one shard over every core


@dataclass(frozen=True)
class PcaStats:
    """Mean, std, covariance and eigen-decomposition of the RGB pixels, on the 0–1 scale.

    `eigvec` holds the eigenvectors as columns (rows are R, G, B), ordered like `eigval` (descending).
    """

    mean: list[float]
    std: list[float]
    covariance: list[list[float]]
    eigval: list[float]
    eigvec: list[list[float]]
    pixel_count: int
    image_count: int
    manifest_sha256: str


BLOCK_PIXELS = 16384  # 16384 · 255² < 2³¹: a block's sums fit int32 exactly


@numba.njit(nogil=True, cache=True)
def _pixel_sums(pixels: np.ndarray) -> np.ndarray:
    """[Σr, Σg, Σb, Σrr, Σrg, Σrb, Σgg, Σgb, Σbb] over N×3 uint8 pixels, exact, as int64.

    Each block is summed in small integers (which LLVM vectorises: several times faster than
    numpy's strided sums), then added into int64 totals.
    """
    out = np.zeros(9, np.int64)
    n = pixels.shape[0]
    for start in range(0, n, BLOCK_PIXELS):
        sr = sg = sb = rr = rg = rb = gg = gb = bb = np.int32(0)
        for k in range(start, min(start + BLOCK_PIXELS, n)):
            r, g, b = np.int32(pixels[k, 0]), np.int32(pixels[k, 1]), np.int32(pixels[k, 2])
            sr += r
            sg += g
            sb += b
            rr += r * r
            rg += r * g
            rb += r * b
            gg += g * g
            gb += g * b
            bb += b * b
        out += np.array([sr, sg, sb, rr, rg, rb, gg, gb, bb], np.int64)
    return out


@dataclass
class Moments:
    """Exact integer sums of pixels and of their cross-products (0–255 scale).

    `sums` is [Σr, Σg, Σb, Σrr, Σrg, Σrb, Σgg, Σgb, Σbb], as `_pixel_sums` returns it.
    """

    n: int = 0
    images: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(9, np.int64))

    def add_image(self, rgb: np.ndarray) -> None:
        """Accumulate one H×W×3 uint8 image (in place: this runs once per image)."""
        self.sums += _pixel_sums(rgb.reshape(-1, 3))
        self.n += rgb.shape[0] * rgb.shape[1]
        self.images += 1

    def merge(self, other: "Moments") -> None:
        """Add another set of sums (from another worker) to this one."""
        self.sums += other.sums
        self.n += other.n
        self.images += other.images

    @property
    def total(self) -> np.ndarray:
        return self.sums[:3]

    @property
    def cross(self) -> np.ndarray:
        return self.sums[[3, 4, 5, 4, 6, 7, 5, 7, 8]].reshape(3, 3)


def stats_from_moments(m: Moments, manifest_sha256: str) -> PcaStats:
    """Mean, covariance and its eigenbasis from the sums, on the 0–1 scale.

    Eigenvectors have a sign fixed so each column sums to ≤ 0 (the published ImageNet first
    eigenvector is −[0.5675, 0.5808, 0.5836]); the sign does not matter to the lighting itself.
    """
    if m.n == 0:
        raise ValueError("no pixels to compute statistics from")
    mean = m.total / m.n
    cov = (m.cross / m.n - np.outer(mean, mean)) / 255.0**2  # int64 sums stay exact to 2^63
    mean = mean / 255.0
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    eigvec = eigvec * np.where(eigvec.sum(axis=0) > 0, -1.0, 1.0)
    return PcaStats(
        mean=mean.tolist(),
        std=np.sqrt(np.diag(cov)).tolist(),
        covariance=cov.tolist(),
        eigval=eigval.tolist(),
        eigvec=eigvec.tolist(),
        pixel_count=int(m.n),
        image_count=int(m.images),
        manifest_sha256=manifest_sha256,
    )


def save_pca(stats: PcaStats, path: Path) -> None:
    """Write pca.json atomically."""
    write_atomic(path, json.dumps(asdict(stats), indent=2) + "\n")


def load_pca(path: Path) -> PcaStats:
    """Read pca.json; a missing file gets a one-line hint to run `alexnet-tools pca-stats`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no PCA statistics; run `alexnet-tools pca-stats --data {path.parent}` first")
    return PcaStats(**json.loads(path.read_text()))


def _chunk_moments(task: tuple[Path, list]) -> Moments:
    """Worker: the sums over one chunk of one shard's samples."""
    tar, entries = task
    m = Moments()
    for _, jpeg, _ in iter_samples(tar, entries):
        m.add_image(decode_rgb(jpeg))
    return m


def plan_chunks(out: Path, manifest: dict, max_images: int | None) -> list[tuple[Path, list]]:
    """(tar, index entries) tasks over the train split; `max_images` keeps an evenly spread subset."""
    entries = [(tar, e) for tar in shard_paths(out, manifest, "train") for e in read_index(index_path(tar))]
    if max_images is not None and max_images < len(entries):
        keep = np.unique(np.linspace(0, len(entries) - 1, max_images).round().astype(int))
        entries = [entries[i] for i in keep]
    tasks: list[tuple[Path, list]] = []
    for tar, e in entries:
        if not tasks or tasks[-1][0] != tar or len(tasks[-1][1]) == CHUNK:
            tasks.append((tar, []))
        tasks[-1][1].append(e)
    return tasks


def compute_pca(out: Path, max_images: int | None = None, workers: int | None = None) -> PcaStats:
    """Stream the prepared train images in parallel and return their RGB statistics."""
    manifest = read_manifest(out)
    if not manifest["splits"].get("train", {}).get("shards"):
        raise FileNotFoundError(f"{out}: no prepared train split; run `alexnet-tools prepare --out {out}` first")
    tasks = plan_chunks(out, manifest, max_images)
    _pixel_sums(np.zeros((1, 3), np.uint8))  # compile once here; forked workers inherit it
    total = Moments()
    with Pool(workers or os.cpu_count()) as pool, tqdm(total=sum(len(t[1]) for t in tasks), desc="pca-stats", unit="img") as bar:
        for m in pool.imap(_chunk_moments, tasks):
            total.merge(m)
            bar.update(m.images)
    return stats_from_moments(total, sha256_file(manifest_path(out)))


def format_stats(s: PcaStats) -> str:
    """A short human-readable print of pca.json."""
    rows = [
        f"images {s.image_count}, pixels {s.pixel_count}",
        "mean   " + " ".join(f"{v:.4f}" for v in s.mean),
        "std    " + " ".join(f"{v:.4f}" for v in s.std),
        "eigval " + " ".join(f"{v:.4f}" for v in s.eigval),
        "eigvec (columns)",
        *("  " + " ".join(f"{v:+.4f}" for v in row) for row in s.eigvec),
    ]
    return "\n".join(rows)

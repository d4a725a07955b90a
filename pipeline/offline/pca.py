"""RGB statistics of the training set for the paper's PCA lighting (§4.1) and normalisation.

Every training image (decoded 256×256) contributes float64 pixel sums and cross-products; the
shards are processed in parallel and the partial sums merged, so the result does not depend on the
number of workers. All values in `pca.json` (`alexnet.pipeline.store.pca_file`) are on the 0–1
pixel scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
from tqdm import tqdm

from alexnet.pipeline.store.manifest import read_manifest, shards_digest
from alexnet.pipeline.store.pca_file import PcaStats
from alexnet.pipeline.store.shards import ShardReader, decode_jpeg, reader_pool, worker_reader

CHUNK = 128  # images per worker task: small enough to spread one shard over every core


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

    def merge(self, other: Moments) -> None:
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


def _chunk_moments(indices: np.ndarray) -> Moments:
    """Worker: the sums over one chunk of one shard's samples."""
    m = Moments()
    for _, jpeg, _ in worker_reader().samples(indices):
        m.add_image(decode_jpeg(jpeg))
    return m


def plan_chunks(reader: ShardReader, max_images: int | None) -> list[np.ndarray]:
    """Chunks of sample indices over the train split; `max_images` keeps an evenly spread subset."""
    indices = np.arange(len(reader))
    if max_images is not None and max_images < len(reader):
        indices = np.unique(np.linspace(0, len(reader) - 1, max_images).round().astype(int))
    return reader.chunks(CHUNK, indices)


def compute_pca(out: Path, max_images: int | None = None, workers: int | None = None) -> PcaStats:
    """Stream the prepared train images in parallel and return their RGB statistics."""
    reader = ShardReader.for_split(out, "train")
    chunks = plan_chunks(reader, max_images)
    _pixel_sums(np.zeros((1, 3), np.uint8))  # compile once here; forked workers inherit it
    total = Moments()
    with reader_pool(reader, workers) as pool, tqdm(total=sum(map(len, chunks)), desc="pca-stats", unit="img") as bar:
        for m in pool.imap(_chunk_moments, chunks):
            total.merge(m)
            bar.update(m.images)
    return stats_from_moments(total, shards_digest(read_manifest(out)))


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

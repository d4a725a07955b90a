"""Benchmarks of the offline tools, each against its baseline measured in the same run.

- `prepare` on every core against a naive one-process Pillow loop (full decode, resize, crop,
  encode) over the same source images;
- `pca-stats` against plain JPEG decoding of the same shards on the same cores.
"""

from __future__ import annotations

import os
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from alexnet.pipeline.image import decode_rgb, encode_jpeg, resize_center_crop
from alexnet.pipeline.manifest import read_manifest, shard_paths
from alexnet.pipeline.pca import compute_pca
from alexnet.pipeline.prepare import Settings, plan_splits, prepare
from alexnet.pipeline.shards import iter_samples


def naive_prepare(root: Path, paths: list[str], quality: int) -> int:
    """The loop a first script would be: one process, full decode, resize, crop, encode."""
    done = 0
    for rel in paths:
        try:
            with Image.open(root / rel) as im:
                encode_jpeg(resize_center_crop(im.convert("RGB")), quality)
            done += 1
        except OSError:
            pass  # the planted oddities: not part of the timing's work
    return done


def _decode_shard(tar: Path) -> int:
    return sum(decode_rgb(jpeg).shape[0] > 0 for _, jpeg, _ in iter_samples(tar))


def decode_all(out: Path, workers: int) -> int:
    """Plain JPEG decoding of every train shard on `workers` processes: the pca-stats ceiling."""
    with Pool(workers) as pool:
        return sum(pool.map(_decode_shard, shard_paths(out, read_manifest(out), "train")))


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def bench_offline(root: Path, workers: int | None = None, naive_images: int = 300) -> dict:
    """Rates (images/s) of prepare, its naive baseline, pca-stats and plain decoding, with ratios."""
    workers = workers or os.cpu_count() or 1
    _, splits = plan_splits(root, None)
    images = sum(len(s) for s in splits.values())
    sample = [s.path for s in splits["train"][:naive_images]]
    naive_n, naive_s = timed(naive_prepare, root, sample, Settings().quality)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        _, prepare_s = timed(prepare, root=root, out=out, settings=Settings(shard_size=256), workers=workers)
        decoded, decode_s = timed(decode_all, out, workers)
        compute_pca(out, 8, workers)  # warm-up: numba's compile (or cache load) is not the steady rate
        stats, pca_s = timed(compute_pca, out, None, workers)
    rates = {
        "prepare": images / prepare_s,
        "naive_prepare": naive_n / naive_s,
        "pca_stats": stats.image_count / pca_s,
        "plain_decode": decoded / decode_s,
    }
    return {
        "workers": workers,
        "images": images,
        "images_per_s": rates,
        "prepare_vs_naive": rates["prepare"] / rates["naive_prepare"],
        "prepare_goal": 0.9 * workers,
        "pca_vs_decode": rates["pca_stats"] / rates["plain_decode"],
        "pca_goal": 0.8,
    }

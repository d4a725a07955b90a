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


CLOCK_TICK = 0.01  # the kernel counts CPU time in ticks; a shorter step reads as one tick


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool workers are reaped on close)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, *args, **kwargs) -> tuple[object, float, float]:
    """fn's value, its wall time, and the CPU time it took (which the machine's other load does not change)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start, cpu_seconds() - cpu


def bench_offline(root: Path, workers: int | None = None, naive_images: int = 300) -> dict:
    """Rates (images/s) of prepare, its naive baseline, pca-stats and plain decoding, with ratios."""
    workers = workers or os.cpu_count() or 1
    _, splits = plan_splits(root, None)
    images = sum(len(s) for s in splits.values())
    sample = [s.path for s in splits["train"][:naive_images]]
    naive_n, naive_s, naive_cpu = timed(naive_prepare, root, sample, Settings().quality)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        _, prepare_s, prepare_cpu = timed(prepare, root=root, out=out, settings=Settings(shard_size=256), workers=workers)
        decoded, decode_s, decode_cpu = timed(decode_all, out, workers)
        compute_pca(out, 8, workers)  # warm-up: numba's compile (or cache load) is not the steady rate
        stats, pca_s, pca_cpu = timed(compute_pca, out, None, workers)
    rows = {
        "prepare": (images, prepare_s, prepare_cpu),
        "naive_prepare": (naive_n, naive_s, naive_cpu),
        "pca_stats": (stats.image_count, pca_s, pca_cpu),
        "plain_decode": (decoded, decode_s, decode_cpu),
    }
    rate = {k: n / s for k, (n, s, _) in rows.items()}
    per_cpu = {k: n / max(c, CLOCK_TICK) for k, (n, _, c) in rows.items()}
    return {
        "workers": workers,
        "images": images,
        "images_per_s": rate,
        "images_per_cpu_s": per_cpu,
        "prepare_vs_naive": rate["prepare"] / rate["naive_prepare"],
        "prepare_vs_naive_per_cpu": per_cpu["prepare"] / per_cpu["naive_prepare"],
        "prepare_goal": 0.9 * workers,
        "pca_vs_decode": rate["pca_stats"] / rate["plain_decode"],
        "pca_vs_decode_per_cpu": per_cpu["pca_stats"] / per_cpu["plain_decode"],
        "pca_goal": 0.8,
    }

"""Benchmarks of the offline tools, each against its baseline measured in the same run.

- `prepare` on this process's cores (`default_workers()`) against a naive one-process Pillow loop (full decode, resize, crop,
  encode) over the same source images;
- `pca-stats` against plain JPEG decoding of the same shards on the same cores.

On real ImageNet `limit` keeps the first N images of each split (train in its shuffled order, so
every class is represented) and `work_dir` says where the shards go (a temporary folder inside
it, removed afterwards).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.pipeline.bench.timing import measure
from alexnet.pipeline.loaders.contract import default_workers
from alexnet.pipeline.offline.image import encode_jpeg, resize_center_crop
from alexnet.pipeline.offline.pca import compute_pca
from alexnet.pipeline.offline.prepare import Settings, plan_splits, prepare
from alexnet.pipeline.store.shards import ShardReader, decode_jpeg, reader_pool, worker_reader


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


def _decode_chunk(indices: np.ndarray) -> int:
    return sum(decode_jpeg(jpeg).shape[0] > 0 for _, jpeg, _ in worker_reader().samples(indices))


def decode_all(out: Path, workers: int) -> int:
    """Plain JPEG decoding of every train image on `workers` processes: the pca-stats ceiling."""
    reader = ShardReader.for_split(out, "train")
    with reader_pool(reader, workers) as pool:
        return sum(pool.imap_unordered(_decode_chunk, reader.chunks(128)))


def bench_offline(
    root: Path,
    workers: int | None = None,
    naive_images: int = 300,
    limit: int | None = None,
    work_dir: Path | None = None,
) -> dict:
    """Rates (images/s and per CPU-second) of prepare, its naive baseline, pca-stats and plain decoding, with ratios."""
    workers = workers or default_workers()
    _, splits = plan_splits(root, None, limit=limit)
    sample = [s.path for s in splits["train"][:naive_images]]
    rows = {}
    _, rows["naive_prepare"] = measure(lambda n: n, naive_prepare, root, sample, Settings().quality)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="alexnet-bench-offline-") as tmp:
        out = Path(tmp) / "out"
        prepared = lambda results: sum(r.written + r.quarantined + r.unreadable for r in results.values())  # noqa: E731
        _, rows["prepare"] = measure(
            prepared, prepare, root=root, out=out, settings=Settings(shard_size=256), workers=workers, limit=limit
        )
        _, rows["plain_decode"] = measure(lambda n: n, decode_all, out, workers)
        compute_pca(out, 8, workers)  # warm-up: numba's compile (or cache load) is not the steady rate
        _, rows["pca_stats"] = measure(lambda s: s.image_count, compute_pca, out, None, workers)
    rate = {k: m.images_per_s for k, m in rows.items()}
    per_cpu = {k: m.images_per_cpu_s for k, m in rows.items()}

    def ratio(a: dict, x: str, y: str) -> float | None:
        return a[x] / a[y] if a[x] and a[y] else None

    return {
        "workers": workers,
        "images": rows["prepare"].images,
        "images_per_s": rate,
        "images_per_cpu_s": per_cpu,
        "prepare_vs_naive": ratio(rate, "prepare", "naive_prepare"),
        "prepare_vs_naive_per_cpu": ratio(per_cpu, "prepare", "naive_prepare"),
        "prepare_goal": 0.9 * workers,
        "pca_vs_decode": ratio(rate, "pca_stats", "plain_decode"),
        "pca_vs_decode_per_cpu": ratio(per_cpu, "pca_stats", "plain_decode"),
        "pca_goal": 0.8,
    }

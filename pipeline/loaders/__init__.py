"""The loaders, run every epoch: `make_loader(kind, ...)` over prepared shards, one contract for all (`contract`).

`torch_loader` (the PyTorch DataLoader baseline), `dali_loader` (with its CPU finishing kernel,
`dali_cpu_finish`) and `ffcv_loader`; each is imported only when asked for, so the contract at the
bottom of this folder imports no loader and every loader imports the contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alexnet.pipeline.augment import Normalize, check_normalize
from alexnet.pipeline.loaders.contract import (
    LOADER_KINDS,
    OUTPUT_DTYPES,
    LastBatch,
    Loader,
    LoaderConfig,
    LoaderKind,
    default_workers,
)
from alexnet.pipeline.store.storage import Location, StorageError, is_url, parse_location

__all__ = ["LOADER_KINDS", "Loader", "LoaderConfig", "make_loader"]


def make_loader(
    kind: LoaderKind,
    data: Path | str,
    split: str,
    batch_size: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    last_batch: LastBatch | None = None,
    train: bool | None = None,
    ten_crop: bool = False,
    dtype: torch.dtype = torch.float32,
    workers: int | None = None,
    with_draws: bool = False,
    epochs: int | None = None,
    normalize: Normalize = "mean",
    channels_last: bool = False,
    cache_dir: Path | None = None,
    cache_max_bytes: int | None = None,
    **options: Any,
) -> Loader:
    """Build a `kind` loader over `data/split`; defaults follow the split.

    `train` (augment) defaults to `split == "train"`, `last_batch` to `"drop"` when training and
    `"partial"` otherwise; `workers` (DALI threads, DataLoader processes; 0 loads in the main
    process) defaults to `default_workers()`: this process's cores over the ranks on this machine.
    `epochs`, when given, is the run's length: a loader prepares no epoch past the last.
    `normalize` and `channels_last`: the values and memory format (module docstring).
    `data` may be an `s3://bucket/prefix` URL: DALI streams the shards itself; the torch and FFCV
    loaders (and DALI when `cache_dir` is given) read them from a local copy in `cache_dir`, fetched
    and checked first (`store/cache.py`, bounded by `cache_max_bytes`).
    `options` go to the loader class (e.g. DALI's `prefetch_queue_depth`).
    """
    train = split == "train" if train is None else train
    if ten_crop and train:
        raise ValueError("ten_crop is a validation mode; pass train=False (or a split other than train)")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    if last_batch not in (None, "drop", "partial"):
        raise ValueError(f"last_batch {last_batch!r}: choose drop or partial")
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype {dtype}: choose one of {', '.join(map(str, OUTPUT_DTYPES))}")
    check_normalize(normalize)
    data = local_or_streamed(kind, parse_location(data), split, cache_dir, cache_max_bytes)
    config = LoaderConfig(
        data=data,
        split=split,
        batch_size=batch_size,
        device=torch.device(device),
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        last_batch=last_batch or ("drop" if train else "partial"),
        train=train,
        ten_crop=ten_crop,
        dtype=dtype,
        workers=default_workers() if workers is None else workers,
        with_draws=with_draws,
        epochs=epochs,
        normalize=normalize,
        channels_last=channels_last,
    )
    if kind == "dali":
        from alexnet.pipeline.loaders.dali_loader import DaliLoader

        return DaliLoader(config, **options)
    if kind == "torch":
        from alexnet.pipeline.loaders.torch_loader import TorchLoader

        return TorchLoader(config, **options)
    if kind in ("ffcv", "ffcv-raw"):
        from alexnet.pipeline.loaders.ffcv_loader import FfcvLoader

        return FfcvLoader(config, mode="raw" if kind == "ffcv-raw" else "jpg", **options)
    raise ValueError(f"unknown loader {kind!r}; choose one of {', '.join(LOADER_KINDS)}")


def local_or_streamed(
    kind: LoaderKind, data: Location, split: str, cache_dir: Path | None, max_bytes: int | None
) -> Location:
    """`data` itself, or the local cached copy a loader that reads local files needs of an s3:// `data`."""
    if not is_url(data) or (kind == "dali" and cache_dir is None):
        return data
    if cache_dir is None:
        raise StorageError(f"--loader {kind} reads shards from local disk: give --cache-dir DIR to fetch {data} into")
    from alexnet.pipeline.store.betons import beton_name
    from alexnet.pipeline.store.cache import fill_cache

    betons = [beton_name(split, "raw" if kind == "ffcv-raw" else "jpg")] if kind.startswith("ffcv") else []
    return fill_cache(data, cache_dir, [split], betons, max_bytes)

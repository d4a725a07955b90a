"""A local cache of shards kept in object storage, for the loaders that read local files (torch, FFCV).

`fill_cache(url, cache_dir, splits)` makes `cache_dir/<bucket>/<prefix>/` a prepared folder like
the one `prepare` wrote: the split's tars and indexes (and, for FFCV, the betons) are fetched in
parallel before the loader starts, each tar checked against the manifest's sha256, then pca.json,
and the manifest last, so the copy is only ever used whole. A tar whose size and verified sha256
(recorded beside it as `NAME.sha256`) match the manifest is a hit and is not fetched again, across
runs. The cache is bounded: when `max_bytes` would be passed, files of other data sets in
`cache_dir` go first, least recently used; a data set that alone exceeds the bound is refused in
one line. An object whose bytes differ from the manifest is refused in one line too.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alexnet.pipeline.store import storage
from alexnet.pipeline.store.atomic import write_atomic
from alexnet.pipeline.store.betons import FFCV_DIR, MANIFEST_KEY
from alexnet.pipeline.store.manifest import MANIFEST_FILE, index_path, read_manifest
from alexnet.pipeline.store.pca_file import PCA_FILE
from alexnet.pipeline.store.shards import sha256_file
from alexnet.pipeline.store.storage import StorageError, split_url

FETCH_THREADS = 8  # concurrent GETs: an object store answers each request with some latency
VERIFIED_SUFFIX = ".sha256"


class CacheFull(StorageError):
    """The data set a run needs does not fit in the cache's bound."""


def cache_folder(cache_dir: Path, url: str) -> Path:
    """Where the copy of `s3://bucket/prefix` lives: `cache_dir/bucket/prefix`."""
    bucket, key = split_url(url)
    return cache_dir.joinpath(bucket, *[p for p in key.split("/") if p])


def fill_cache(
    url: str, cache_dir: Path, splits: list[str], ffcv_betons: list[str] = (), max_bytes: int | None = None
) -> Path:
    """Fetch what a loader of `splits` needs from `url` into the cache; returns the local prepared folder.

    `ffcv_betons`: beton file names (under ffcv/) to fetch as well, checked by the manifest's size.
    """
    manifest = read_manifest(url)
    folder = cache_folder(cache_dir, url)
    wanted = planned_files(url, manifest, splits, ffcv_betons)
    make_room(cache_dir, folder, wanted, max_bytes)
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        list(pool.map(lambda item: fetch(url, folder, *item), wanted.items()))
    if storage.exists(storage.join(url, PCA_FILE)):  # small: fetched every time, so a new pca-stats is seen
        storage.download(storage.join(url, PCA_FILE), folder / PCA_FILE)
    write_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")  # last: the copy is whole
    return folder


def planned_files(url: str, manifest: dict, splits: list[str], ffcv_betons: list[str]) -> dict[str, tuple[int, str]]:
    """name → (bytes, sha256 or "") of every file the run needs; indexes sized by one listing per split."""
    wanted: dict[str, tuple[int, str]] = {}
    for split in splits:
        listed = storage.list_folder(storage.join(url, split))
        for shard in manifest.get("splits", {}).get(split, {}).get("shards", []):
            wanted[f"{split}/{shard['name']}"] = (shard["bytes"], shard["sha256"])
            idx = storage.name(index_path(Path(shard["name"])))
            if idx in listed:
                wanted[f"{split}/{idx}"] = (listed[idx], "")
    for beton in ffcv_betons:
        info = manifest.get(MANIFEST_KEY, {}).get(Path(beton).stem)
        if info:
            wanted[f"{FFCV_DIR}/{beton}"] = (info["bytes"], "")
    return wanted


def fetch(url: str, folder: Path, name: str, expected: tuple[int, str]) -> None:
    """One file into the cache unless it is a hit; a tar's bytes are checked against the manifest's sha256."""
    size, sha256 = expected
    local = folder / name
    if is_hit(local, size, sha256):
        os.utime(local)  # recently used: eviction takes the others first
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    storage.download(storage.join(url, *name.split("/")), local)
    if local.stat().st_size != size or (sha256 and sha256_file(local) != sha256):
        local.unlink()
        raise StorageError(
            f"{storage.join(url, *name.split('/'))}: its bytes differ from the manifest (changed since prepare wrote it); "
            f"check it with `alexnet-tools verify --data {url}` and re-run prepare"
        )
    if sha256:
        write_atomic(verified_path(local), sha256 + "\n")


def is_hit(local: Path, size: int, sha256: str) -> bool:
    """The cached file has the manifest's size and (for a tar) its sha256 was verified when it was fetched."""
    if not local.is_file() or local.stat().st_size != size:
        return False
    if not sha256:
        return True
    stamp = verified_path(local)
    return stamp.is_file() and stamp.read_text().strip() == sha256


def verified_path(local: Path) -> Path:
    return local.with_name(local.name + VERIFIED_SUFFIX)


def make_room(cache_dir: Path, folder: Path, wanted: dict[str, tuple[int, str]], max_bytes: int | None) -> None:
    """Keep the cache within `max_bytes` once `wanted` is in: evict other files, least recently used first."""
    if max_bytes is None:
        return
    need = sum(size for size, _ in wanted.values())
    if need > max_bytes:
        raise CacheFull(
            f"{cache_dir}: the shards this run reads take {need / 1e9:.2f} GB, more than the cache's "
            f"{max_bytes / 1e9:.2f} GB; raise --cache-max-gb or stream with --loader dali"
        )
    keep = {folder / name for name in wanted} | {verified_path(folder / name) for name in wanted}
    others = sorted((p for p in cache_dir.rglob("*") if p.is_file() and p not in keep), key=lambda p: p.stat().st_mtime)
    used = need + sum(p.stat().st_size for p in others)
    for path in others:
        if used <= max_bytes:
            break
        used -= path.stat().st_size
        path.unlink()

"""Check a prepared folder against its manifest: bytes, sha256, counts, indexes, and every sample.

Each problem is one line naming the file and what is wrong; shards are checked in parallel. Every
file in a split folder that the manifest does not list is reported too: no tool reads it, and a
stray tar there would look like data to anyone who globs the folder.
"""

from __future__ import annotations

import os
import tarfile
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from alexnet.pipeline.store import storage
from alexnet.pipeline.store.atomic import TMP_SUFFIX
from alexnet.pipeline.store.manifest import SPLITS, index_path, read_manifest
from alexnet.pipeline.store.shards import ShardReader, decode_jpeg, read_index, sha256_file
from alexnet.pipeline.store.storage import Location


def check_shard(task: tuple[Location, dict, int, int]) -> list[str]:
    """All problems of one shard: file, size, hash, index ↔ tar agreement, and each sample.

    A shard in an object store is downloaded once (tar and index) and checked from that copy.
    """
    tar, record, num_classes, size = task
    if not storage.exists(tar):
        return [f"{tar}: missing"]
    files = [tar, index_path(tar)] if storage.exists(index_path(tar)) else [tar]
    with storage.local_copies(files) as (local, *_):
        problems = check_local_shard(local, record, num_classes, size)
    return [p.replace(str(local.parent), str(tar).rsplit("/", 1)[0], 1) for p in problems]


def check_local_shard(tar: Path, record: dict, num_classes: int, size: int) -> list[str]:
    """`check_shard` on a tar (with its index beside it) on local disk."""
    problems = []
    if tar.stat().st_size != record["bytes"]:
        problems.append(f"{tar}: {tar.stat().st_size} bytes, manifest says {record['bytes']}")
    if sha256_file(tar) != record["sha256"]:
        problems.append(f"{tar}: sha256 differs from the manifest (corrupted or replaced)")
    try:
        keys, table = read_index(index_path(tar))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return problems + [f"{index_path(tar)}: unreadable index ({e})"]
    if len(keys) != record["samples"]:
        problems.append(f"{index_path(tar)}: {len(keys)} samples, manifest says {record['samples']}")
    problems += index_mismatches(tar, keys, table)
    if problems:
        return problems
    reader = ShardReader([tar])
    for i, jpeg, label in reader.samples():
        key = keys[i]
        try:
            shape = decode_jpeg(jpeg).shape
        except Exception as e:  # any decoder failure is a finding, not a crash
            problems.append(f"{tar}: sample {key} does not decode ({e})")
            continue
        if shape != (size, size, 3):
            problems.append(f"{tar}: sample {key} is {shape}, expected ({size}, {size}, 3)")
        if not 0 <= label < num_classes:
            problems.append(f"{tar}: sample {key} has label {label}, outside 0..{num_classes - 1}")
    return problems


def index_mismatches(tar: Path, keys: list[str], table) -> list[str]:
    """Compare the index with the tar's own member table (offsets, sizes, names)."""
    try:
        with tarfile.open(tar) as t:
            members = {m.name: (m.offset_data, m.size) for m in t.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError) as e:
        return [f"{tar}: not a readable tar ({e})"]
    expected = {}
    for key, (jo, js, co, cs) in zip(keys, table.tolist()):
        expected[f"{key}.jpg"] = (jo, js)
        expected[f"{key}.cls"] = (co, cs)
    if members != expected:
        wrong = sorted(set(members.items()) ^ set(expected.items()))
        return [f"{index_path(tar)}: disagrees with its tar at {wrong[0][0]} ({len(wrong)} differences)"]
    return []


def unlisted_files(out: Location, manifest: dict) -> list[str]:
    """One line per file in OUT's split folders that the manifest does not list, and per temporary file in OUT."""
    problems = [
        f"{storage.join(out, n)}: leftover temporary file" for n in storage.list_folder(out) if n.endswith(TMP_SUFFIX)
    ]
    for split in sorted({*SPLITS, *manifest["splits"]}):
        listed = {
            n
            for s in manifest["splits"].get(split, {}).get("shards", [])
            for n in (s["name"], index_path(Path(s["name"])).name)
        }
        for found in storage.list_folder(storage.join(out, split)):
            path = storage.join(out, split, found)
            if found.endswith(TMP_SUFFIX):
                problems.append(f"{path}: leftover temporary file")
            elif found not in listed:
                problems.append(f"{path}: not listed in the manifest; no tool reads it: remove it")
    return problems


def verify(out: Location, workers: int | None = None) -> list[str]:
    """Every problem found in OUT (empty when all is well)."""
    manifest = read_manifest(out)
    size = manifest["settings"]["size"]
    problems = [] if manifest.get("complete") else [f"{out}: manifest says prepare did not finish; re-run prepare"]
    problems += unlisted_files(out, manifest)
    tasks = []
    for split, record in manifest["splits"].items():
        tasks += [(storage.join(out, split, s["name"]), s, len(manifest["classes"]), size) for s in record["shards"]]
        if sum(s["samples"] for s in record["shards"]) != record["samples"]:
            problems.append(f"{out}: {split} shard counts do not add up to the manifest's {record['samples']}")
    with Pool(workers or os.cpu_count()) as pool:
        for found in tqdm(pool.imap(check_shard, tasks), total=len(tasks), desc="verify", unit="shard"):
            problems += found
    return problems

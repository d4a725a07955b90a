"""ILSVRC JPEGs → 256×256 JPEG shards + manifest (DESIGN.md, "Shard format").

Images are processed by a pool of worker processes (every core by default); the main process
appends their results, in order, to the shard being written. Train samples are shuffled across
shards with a fixed seed so every shard mixes classes. Each finished shard is published atomically
and recorded in the manifest at once, so a killed run resumes by skipping finished shards and ends
byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from alexnet.pipeline.offline import ilsvrc, tar_sources
from alexnet.pipeline.offline.image import (
    CHROMA_SUBSAMPLING,
    RESIZE_FILTER,
    BadImage,
    prepare_image,
    prepare_image_bytes,
)
from alexnet.pipeline.paper import STORED_SIZE
from alexnet.pipeline.store.atomic import TMP_SUFFIX
from alexnet.pipeline.store.betons import FFCV_DIR
from alexnet.pipeline.store.manifest import FORMAT_VERSION, SPLITS, manifest_path, read_manifest, write_manifest
from alexnet.pipeline.store.shards import ShardWriter, index_path, shard_name

# The defaults of every setting; the CLI reads them from here.
JPEG_QUALITY = 90
SHARD_SIZE = 1024
SHUFFLE_SEED = 0


class SettingsMismatch(Exception):
    """OUT holds shards made with other settings or other input; `--overwrite` replaces them."""


@dataclass(frozen=True)
class Settings:
    """Everything that changes the bytes of the output. A re-run must match them to resume."""

    size: int = STORED_SIZE
    quality: int = JPEG_QUALITY
    shard_size: int = SHARD_SIZE
    resize_filter: str = RESIZE_FILTER
    chroma_subsampling: str = CHROMA_SUBSAMPLING
    draft_decode: bool = True
    shuffle_seed: int = SHUFFLE_SEED


@dataclass
class SplitResult:
    """What one split's run did, for the summary."""

    written: int = 0
    quarantined: int = 0
    skipped_shards: int = 0
    converted: Counter | None = None


def plan_splits(
    root: Path,
    val_labels: Path | None,
    shuffle_seed: int = SHUFFLE_SEED,
    limit: int | None = None,
    classes: Path | None = None,
    workers: int | None = None,
) -> tuple[list[str], dict[str, list[ilsvrc.Sample]]]:
    """The class list and the ordered samples of each split (train shuffled by `shuffle_seed`).

    DIR may be an extracted tree, the official archives or WebDataset tars (`ilsvrc.find_form`);
    every form lists its samples in the same order, so the same images give the same shards.
    `classes` is the WebDataset class list (`--classes`); `workers` index the archives in parallel.
    `limit` keeps the first that many samples of each split (for benchmarks on a part of ImageNet).
    """
    form = ilsvrc.find_form(root)
    if classes is not None and form.kind != ilsvrc.WEBDATASET:
        raise ilsvrc.LayoutError(
            f"{classes}: --classes is for WebDataset tars; {root} names its classes by wnid already"
        )
    if form.kind == ilsvrc.ARCHIVES:
        wnids, splits = tar_sources.official_samples(root, form, val_labels, workers)
    elif form.kind == ilsvrc.WEBDATASET:
        wnids, splits = tar_sources.webdataset_samples(root, form, classes, workers)
    else:
        wnids = ilsvrc.find_classes(root)
        splits = {"train": ilsvrc.list_train(root, wnids), "val": ilsvrc.list_val(root, wnids, val_labels)}
    random.Random(shuffle_seed).shuffle(splits["train"])
    return wnids, {name: samples[:limit] for name, samples in splits.items() if samples}


def input_digest(samples: list[ilsvrc.Sample]) -> str:
    """A fingerprint of a split's input (paths and labels, in order; where in its archive, for a member) to detect a changed source."""
    h = hashlib.sha256()
    for s in samples:
        where = f"\t{s.offset}\t{s.size}" if s.archive else ""
        h.update(f"{s.path}\t{s.label}{where}\n".encode())
    return h.hexdigest()


def new_manifest(
    root: Path,
    settings: Settings,
    wnids: list[str],
    splits: dict[str, list[ilsvrc.Sample]],
    classes: Path | None = None,
) -> dict:
    """The manifest before any shard is written: settings, classes (named by `classes` or a synset mapping), empty split records."""
    names = dict(ilsvrc.read_synset_lines(classes)) if classes is not None else ilsvrc.read_class_names(root)
    return {
        "format_version": FORMAT_VERSION,
        "complete": False,
        "settings": asdict(settings),
        "inputs": {name: {"images": len(s), "sha256": input_digest(s)} for name, s in splits.items()},
        "classes": [{"index": i, "wnid": w, "name": names.get(w, "")} for i, w in enumerate(wnids)],
        "splits": {name: {"samples": 0, "shards": [], "class_counts": [], "quarantine": []} for name in splits},
    }


def open_out(out: Path, fresh: dict, overwrite: bool) -> dict:
    """Create OUT, or reopen it for a resume; refuse other settings unless `overwrite`."""
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))
    if manifest_path(out).is_file():
        old = read_manifest(out)
        same = all(old.get(k) == fresh[k] for k in ("format_version", "settings", "inputs", "classes"))
        if same:
            return old
        if not overwrite:
            raise SettingsMismatch(
                f"{out}: holds shards made with other settings or input; use another --out, or --overwrite to replace them"
            )
    if overwrite:
        for folder in (*SPLITS, FFCV_DIR):  # ffcv/: export-ffcv's copies of the old shards
            shutil.rmtree(out / folder, ignore_errors=True)
        manifest_path(out).unlink(missing_ok=True)
    return fresh


def finished_shards(out: Path, split: str, record: dict) -> dict[str, dict]:
    """Shards the manifest records whose tar and index are on disk with the recorded size."""
    done = {}
    for shard in record["shards"]:
        tar = out / split / shard["name"]
        if tar.is_file() and tar.stat().st_size == shard["bytes"] and index_path(tar).is_file():
            done[shard["name"]] = shard
    return done


def remove_leftovers(folder: Path) -> None:
    """Delete temporary files a killed run left behind (they are never complete)."""
    for tmp in folder.glob(f"*{TMP_SUFFIX}"):
        tmp.unlink()


def _process(task: tuple[Path | tuple[Path, int, int, str], int, int, bool]) -> tuple[bytes | None, str]:
    """Worker: one source (a file, or an archive member's place) → (stored JPEG, source FORMAT/mode) or (None, quarantine reason)."""
    source, quality, size, draft = task
    try:
        if isinstance(source, tuple):
            return prepare_image_bytes(tar_sources.read_member(*source), quality, size, draft)
        return prepare_image(source, quality, size, draft)
    except BadImage as e:
        return None, str(e)


def prepare(
    root: Path,
    out: Path,
    settings: Settings = Settings(),
    val_labels: Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    classes: Path | None = None,
) -> dict[str, SplitResult]:
    """Write every split's shards and the manifest; returns what each split's run did (`limit`, `classes`: see plan_splits)."""
    wnids, splits = plan_splits(root, val_labels, settings.shuffle_seed, limit, classes, workers)
    manifest = open_out(out, new_manifest(root, settings, wnids, splits, classes), overwrite)
    results = {}
    with Pool(workers or os.cpu_count()) as pool:
        for split, samples in splits.items():
            results[split] = prepare_split(pool, root, out, split, samples, settings, manifest)
    manifest["complete"] = True
    write_manifest(out, manifest)
    return results


def prepare_split(
    pool: Pool, root: Path, out: Path, split: str, samples: list[ilsvrc.Sample], settings: Settings, manifest: dict
) -> SplitResult:
    """Write the unfinished shards of one split, updating the manifest after each."""
    folder = out / split
    folder.mkdir(exist_ok=True)
    remove_leftovers(folder)
    record = manifest["splits"][split]
    done = finished_shards(out, split, record)
    chunks = [samples[i : i + settings.shard_size] for i in range(0, len(samples), settings.shard_size)]
    names = [shard_name(split, n) for n in range(len(chunks))]
    kept_paths = {s.path for name, chunk in zip(names, chunks) if name in done for s in chunk}
    record["shards"] = [done[name] for name in names if name in done]
    record["quarantine"] = [q for q in record["quarantine"] if q["path"] in kept_paths]
    todo = [(name, chunk) for name, chunk in zip(names, chunks) if name not in done]
    result = SplitResult(skipped_shards=len(done), converted=Counter())
    tasks = (
        (s.source(root), settings.quality, settings.size, settings.draft_decode) for _, chunk in todo for s in chunk
    )
    outputs = pool.imap(_process, tasks, chunksize=8)
    with tqdm(total=sum(len(c) for _, c in todo), desc=f"prepare {split}", unit="img", smoothing=0.05) as bar:
        for name, chunk in todo:
            shard, quarantine = write_shard(folder / name, chunk, outputs, result, bar)
            record["shards"].append(shard)
            record["quarantine"].extend(quarantine)
            record["shards"].sort(key=lambda s: s["name"])
            record["quarantine"].sort(key=lambda q: q["path"])
            write_manifest(out, manifest)
    bad = {q["path"] for q in record["quarantine"]}
    counts = Counter(s.label for s in samples if s.path not in bad)
    record["class_counts"] = [counts.get(i, 0) for i in range(len(manifest["classes"]))]
    record["samples"] = sum(s["samples"] for s in record["shards"])
    return result


def write_shard(
    tar: Path, chunk: list[ilsvrc.Sample], outputs: Iterator, result: SplitResult, bar: tqdm
) -> tuple[dict, list[dict]]:
    """Append one chunk's results to a new shard and publish it; returns its record and quarantine."""
    writer, quarantine = ShardWriter(tar), []
    try:
        for sample in chunk:
            jpeg, info = next(outputs)
            if jpeg is None:
                quarantine.append({"path": sample.path, "reason": info})
                result.quarantined += 1
            else:
                writer.add(sample.key, jpeg, sample.label)
                result.written += 1
                if info != "JPEG/RGB":
                    result.converted[info] += 1
            bar.update()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"name": tar.name, "samples": writer.count, "bytes": tar.stat().st_size, "sha256": writer.sha256}, quarantine


def format_summary(results: dict[str, SplitResult], seconds: float, out: Path) -> str:
    """The lines `prepare` ends with: per split written/quarantined/converted, time and rate."""
    lines = []
    for split, r in results.items():
        converted = ", ".join(f"{k} {v}" for k, v in sorted(r.converted.items())) or "none"
        lines.append(
            f"{split}: {r.written} written, {r.quarantined} quarantined, {r.skipped_shards} finished shards kept; "
            f"converted to RGB: {converted}"
        )
    total = sum(r.written + r.quarantined for r in results.values())
    lines.append(f"{total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} img/s) → {out}")
    return "\n".join(lines)

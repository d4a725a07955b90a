"""ILSVRC JPEGs → 256×256 JPEG shards + manifest (docs/design.md, "Shard format").

Images are processed by a pool of worker processes (every core by default); the main process
appends their results, in order, to the shard being written. Train samples are shuffled across
shards with a fixed seed so every shard mixes classes. Each finished shard is published atomically
and recorded in the manifest at once, so a killed run resumes by skipping finished shards and ends
byte-identical to an uninterrupted one. A re-run keeps a finished shard only when its bytes still
hash to the manifest's sha256, and rebuilds the others. Workers ignore Ctrl-C: the main process
stops, lets the few chunks in flight finish, removes its temporary files and closes the pool.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from alexnet.pipeline.offline import ilsvrc, tar_sources
from alexnet.pipeline.offline.image import (
    CHROMA_SUBSAMPLING,
    RESIZE_FILTER,
    BadImage,
    is_unreadable,
    prepare_image,
    prepare_image_bytes,
)
from alexnet.pipeline.offline.verify import index_mismatches
from alexnet.pipeline.paper import STORED_SIZE
from alexnet.pipeline.store import storage
from alexnet.pipeline.store.atomic import TMP_SUFFIX, tmp_path
from alexnet.pipeline.store.betons import FFCV_DIR
from alexnet.pipeline.store.manifest import (
    FORMAT_VERSION,
    SPLITS,
    index_path,
    manifest_path,
    read_manifest,
    shards_digest,
    write_manifest,
)
from alexnet.pipeline.store.pca_file import PCA_FILE
from alexnet.pipeline.store.shards import ShardWriter, read_index, sha256_file, shard_name
from alexnet.pipeline.store.storage import Location

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
    quarantined: int = 0  # bad images: empty, not an image, cannot decode, decompression bomb
    unreadable: int = 0  # files the OS would not read (also in the quarantine list; a re-run retries them)
    skipped_shards: int = 0
    rebuilt_shards: int = 0  # finished shards whose bytes no longer hashed to the manifest's sha256
    converted: Counter | None = None
    empty_classes: list[str] = field(default_factory=list)  # wnids with no sample in this split


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


def open_out(out: Location, fresh: dict, overwrite: bool, announce: Callable[[str], None] = print) -> dict:
    """Create OUT (or check the bucket answers), or reopen it for a resume; refuse other settings or input unless `overwrite`.

    The refusal names what differs, old value → new. `overwrite` removes the old shards, the
    manifest and everything derived from them (pca.json, ffcv/), and `announce`s what it removed.
    """
    storage.check_writable(out)
    if storage.exists(manifest_path(out)):
        old = read_manifest(out)
        differences = manifest_differences(old, fresh)
        if not differences:
            return old
        if not overwrite:
            raise SettingsMismatch(
                f"{out}: holds shards made with other settings or input ({'; '.join(differences)}); "
                "use another --out, or --overwrite to replace them"
            )
        removed = remove_derived(out) + [storage.name(manifest_path(out))]
        storage.delete(manifest_path(out))  # first, so that nothing trusts the old shards once they start to go
        removed += [f"{f}/" for f in SPLITS if storage.list_folder(storage.join(out, f))]
        for folder in SPLITS:
            storage.remove_tree(storage.join(out, folder))
        announce(f"--overwrite: removed {', '.join(removed)} from {out} ({'; '.join(differences)})")
    return fresh


def manifest_differences(old: dict, fresh: dict) -> list[str]:
    """What makes OUT's manifest other than this run's: `name: old → new` for each setting or input that differs."""
    diffs = []
    if old.get("format_version") != fresh["format_version"]:
        diffs.append(f"format_version: {old.get('format_version')} → {fresh['format_version']}")
    settings = old.get("settings", {})
    for key, value in fresh["settings"].items():
        if settings.get(key) != value:
            diffs.append(f"{key}: {settings.get(key, '(none)')} → {value}")
    diffs += [f"{key}: {value} → (none)" for key, value in settings.items() if key not in fresh["settings"]]
    inputs = old.get("inputs", {})
    for split in sorted(inputs.keys() | fresh["inputs"].keys()):
        a, b = inputs.get(split, {}), fresh["inputs"].get(split, {})
        if a.get("images") != b.get("images"):
            diffs.append(f"{split} input: {a.get('images', 0)} → {b.get('images', 0)} images")
        elif a != b:
            diffs.append(f"{split} input: other files or labels ({b['images']} images either way)")
    classes = [c.get("wnid") for c in old.get("classes", [])], [c["wnid"] for c in fresh["classes"]]
    if classes[0] != classes[1]:
        if len(classes[0]) != len(classes[1]):
            diffs.append(f"classes: {len(classes[0])} → {len(classes[1])}")
        else:
            i = next(i for i, (a, b) in enumerate(zip(*classes)) if a != b)
            diffs.append(f"class {i}: {classes[0][i]} → {classes[1][i]}")
    elif old.get("classes") != fresh["classes"]:
        diffs.append("class names (LOC_synset_mapping.txt) differ")
    return diffs


def remove_derived(out: Location) -> list[str]:
    """Delete what other tools computed from OUT's shards (pca.json, ffcv/); returns the names removed."""
    removed = []
    if storage.exists(storage.join(out, PCA_FILE)):
        storage.delete(storage.join(out, PCA_FILE))
        removed.append(PCA_FILE)
    ffcv = storage.join(out, FFCV_DIR)
    if storage.list_folder(ffcv) or (not storage.is_url(ffcv) and Path(ffcv).exists()):
        storage.remove_tree(ffcv)
        removed.append(f"{FFCV_DIR}/")
    return removed


def finished_shards(out: Location, split: str, record: dict) -> tuple[dict[str, dict], list[str]]:
    """The shards the manifest records that are whole in OUT, and the names of those that differ.

    The split's folder (prefix) is listed once. A recorded shard is kept when its tar has the
    recorded size and sha256 (streamed: a sequential read; from S3, one download of tar and index)
    and its index lists the recorded count at the offsets the tar holds. A shard that is absent is
    simply not finished; one that is present but differs is returned to be rebuilt.
    """
    done, differ = {}, []
    present = storage.list_folder(storage.join(out, split))
    shards = [s for s in record["shards"] if s["name"] in present]
    for shard in tqdm(shards, desc=f"check {split}", unit="shard", disable=not shards):
        whole = present[shard["name"]] == shard["bytes"] and shard_agrees(
            storage.join(out, split, shard["name"]), shard
        )
        if whole and shard["samples"]:  # an empty shard (an older prepare's) goes: no loader can read it
            done[shard["name"]] = shard
        else:
            differ.append(shard["name"])
    return done, differ


def shard_agrees(tar: Location, shard: dict) -> bool:
    """The tar hashes to the recorded sha256 and its index agrees with it (read from a local copy when remote)."""
    files = [tar, index_path(tar)] if storage.exists(index_path(tar)) else [tar]
    with storage.local_copies(files) as (local, *_):
        return sha256_file(local) == shard["sha256"] and index_agrees(local, shard)


def index_agrees(tar: Path, shard: dict) -> bool:
    """The shard's index exists, lists the recorded number of samples, and matches its tar's members."""
    try:
        keys, table = read_index(index_path(tar))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return len(keys) == shard["samples"] and not index_mismatches(tar, keys, table)


def remove_leftovers(out: Path) -> None:
    """Delete the temporary files of a killed or failed run in a local OUT (they are never complete)."""
    tmp_path(manifest_path(out)).unlink(missing_ok=True)
    for split in SPLITS:
        if (out / split).is_dir():
            for tmp in (out / split).glob(f"*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def worker_pool(workers: int | None) -> Iterator[Pool]:
    """A pool whose workers ignore SIGINT and which is never terminated, only closed and joined.

    Ctrl-C goes to the whole process group; only the main process stops. It then lets the few
    chunks in flight (see `in_order`) finish and the workers exit by themselves: terminating a
    worker can kill it inside a queue's `put()`, leaving that queue's lock held and the pool's
    shutdown hanging for ever. SIGINT is blocked while the workers are forked, so a Ctrl-C in
    that moment is delivered once the pool is up, not lost and not raised inside a new worker.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = Pool(workers or os.cpu_count(), initializer=_ignore_sigint)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        raise
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C pending since is raised here
        yield pool
    finally:
        pool.close()
        pool.join()


def _run_chunk(fn: Callable, tasks: list) -> list:
    return [fn(task) for task in tasks]


def in_order(pool: Pool, fn: Callable, tasks: Iterator, chunk: int = 4, ahead: int = 2) -> Iterator:
    """`fn(task)` for every task, computed on `pool` in chunks and yielded in order.

    At most `ahead` chunks per worker are in flight, so that an interrupted run waits only for
    those (a fraction of a second) before the pool is closed.
    """
    window = ahead * pool._processes  # the pool's size (Pool has no public accessor)
    pending: deque = deque()
    batch: list = []
    for task in tasks:
        batch.append(task)
        if len(batch) == chunk:
            pending.append(pool.apply_async(_run_chunk, (fn, batch)))
            batch = []
            if len(pending) >= window:
                yield from pending.popleft().get()
    if batch:
        pending.append(pool.apply_async(_run_chunk, (fn, batch)))
    while pending:
        yield from pending.popleft().get()


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
    out: Location,
    settings: Settings = Settings(),
    val_labels: Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    announce: Callable[[str], None] = print,
    classes: Path | None = None,
) -> dict[str, SplitResult]:
    """Write every split's shards and the manifest; returns what each split's run did (`limit`, `classes`: see plan_splits).

    `announce` gets a line for each thing removed beside the shards (see `open_out`). A run that
    fails or is interrupted removes its temporary files before the error reaches the caller. OUT
    may be an `s3://` URL: each shard is written in a local temporary folder, uploaded once
    complete (index, then tar), and the manifest is put after it.
    """
    wnids, splits = plan_splits(root, val_labels, settings.shuffle_seed, limit, classes, workers)
    if "train" not in splits:
        raise ilsvrc.LayoutError(
            f"{root / 'train'}: the {len(wnids)} class folders hold no images; expected train/<wnid>/*.JPEG"
        )
    manifest = open_out(out, new_manifest(root, settings, wnids, splits, classes), overwrite, announce)
    manifest["complete"] = False  # until every shard is checked or rebuilt (a re-run may rebuild some)
    before = shards_digest(manifest)
    results = {}
    with staging_folder(out) as staged:
        staging = Path(staged)
        remove_leftovers(staging)
        try:
            with worker_pool(workers) as pool:
                for split, samples in splits.items():
                    results[split] = prepare_split(pool, root, out, staging, split, samples, settings, manifest)
        except BaseException:
            remove_leftovers(staging)
            raise
    if shards_digest(manifest) != before and (removed := remove_derived(out)):
        announce(f"removed {', '.join(removed)} from {out}: computed from shards that were rebuilt differently")
    manifest["complete"] = True
    write_manifest(out, manifest)
    return results


def staging_folder(out: Location):
    """Where shards are written before they are published: OUT itself when local, else a temporary folder."""
    if storage.is_url(out):
        return tempfile.TemporaryDirectory(prefix="alexnet-prepare-")
    return nullcontext(out)


def prepare_split(
    pool: Pool,
    root: Path,
    out: Location,
    staging: Path,
    split: str,
    samples: list[ilsvrc.Sample],
    settings: Settings,
    manifest: dict,
) -> SplitResult:
    """Write the unfinished shards of one split (through `staging`), updating the manifest after each.

    A finished shard is rebuilt when its bytes differ from the manifest, or when it lacks a file
    that could not be read last time (retried: the permissions may have been fixed since).
    """
    folder = staging / split
    folder.mkdir(exist_ok=True)
    record = manifest["splits"][split]
    done, differ = finished_shards(out, split, record)
    chunks = [samples[i : i + settings.shard_size] for i in range(0, len(samples), settings.shard_size)]
    names = [shard_name(split, n) for n in range(len(chunks))]
    retry = {q["path"] for q in record["quarantine"] if is_unreadable(q["reason"])}
    for name, chunk in zip(names, chunks):
        if name in done and any(s.path in retry for s in chunk):
            del done[name]
    kept_paths = {s.path for name, chunk in zip(names, chunks) if name in done for s in chunk}
    record["shards"] = [done[name] for name in names if name in done]
    record["quarantine"] = [q for q in record["quarantine"] if q["path"] in kept_paths]
    todo = [(name, chunk) for name, chunk in zip(names, chunks) if name not in done]
    result = SplitResult(skipped_shards=len(done), rebuilt_shards=len(differ), converted=Counter())
    tasks = (
        (s.source(root), settings.quality, settings.size, settings.draft_decode) for _, chunk in todo for s in chunk
    )
    outputs = in_order(pool, _process, tasks)
    with tqdm(total=sum(len(c) for _, c in todo), desc=f"prepare {split}", unit="img", smoothing=0.05) as bar:
        for name, chunk in todo:
            shard, quarantine = write_shard(folder / name, storage.join(out, split, name), chunk, outputs, result, bar)
            if shard is not None:  # None: every image of the chunk is in quarantine, and no shard is written
                record["shards"].append(shard)
            record["quarantine"].extend(quarantine)
            record["shards"].sort(key=lambda s: s["name"])
            record["quarantine"].sort(key=lambda q: q["path"])
            write_manifest(out, manifest)
    bad = {q["path"] for q in record["quarantine"]}
    counts = Counter(s.label for s in samples if s.path not in bad)
    record["class_counts"] = [counts.get(i, 0) for i in range(len(manifest["classes"]))]
    record["samples"] = sum(s["samples"] for s in record["shards"])
    result.empty_classes = [c["wnid"] for c, n in zip(manifest["classes"], record["class_counts"]) if n == 0]
    return result


def write_shard(
    tar: Path, dest: Location, chunk: list[ilsvrc.Sample], outputs: Iterator, result: SplitResult, bar: tqdm
) -> tuple[dict | None, list[dict]]:
    """Append one chunk's results to a new shard at `tar`, publish it to `dest`; returns its record and quarantine.

    `dest` is `tar` itself for a local OUT; an object is uploaded whole, its index first, so the
    tar's presence still means the shard is complete. A chunk whose every image is quarantined
    writes no shard (record None): a 0-sample tar is one DALI refuses to index. Its name is
    skipped, so the other shards keep theirs.
    """
    writer, quarantine = ShardWriter(tar), []
    try:
        for sample in chunk:
            jpeg, info = next(outputs)
            if jpeg is None:
                quarantine.append({"path": sample.path, "reason": info})
                if is_unreadable(info):
                    result.unreadable += 1
                else:
                    result.quarantined += 1
            else:
                writer.add(sample.key, jpeg, sample.label)
                result.written += 1
                if info != "JPEG/RGB":
                    result.converted[info] += 1
            bar.update()
        if not writer.count:
            writer.abort()
            storage.delete(dest)  # an empty shard an older prepare left under this name
            storage.delete(index_path(dest))
            return None, quarantine
        writer.close()
    except BaseException:
        writer.abort()
        raise
    record = {"name": tar.name, "samples": writer.count, "bytes": tar.stat().st_size, "sha256": writer.sha256}
    if dest != tar:
        storage.publish_file(index_path(tar), index_path(dest))
        storage.publish_file(tar, dest)
    return record, quarantine


def format_summary(results: dict[str, SplitResult], seconds: float, out: Path) -> str:
    """The lines `prepare` ends with: per split written/quarantined/converted, warnings, time and rate."""
    lines, warnings = [], []
    for split, r in results.items():
        converted = ", ".join(f"{k} {v}" for k, v in sorted(r.converted.items())) or "none"
        rebuilt = f", {r.rebuilt_shards} rebuilt (their bytes differed from the manifest)" if r.rebuilt_shards else ""
        lines.append(
            f"{split}: {r.written} written, {r.quarantined} quarantined, {r.skipped_shards} finished shards kept"
            f"{rebuilt}; converted to RGB: {converted}"
        )
        if r.unreadable:
            warnings.append(
                f"warning: {split}: {r.unreadable} file(s) cannot be read (listed in the manifest's quarantine); "
                "fix their permissions and re-run: they are retried"
            )
        if r.empty_classes:
            names = ", ".join(r.empty_classes[:5]) + (
                f" and {len(r.empty_classes) - 5} more" if len(r.empty_classes) > 5 else ""
            )
            warnings.append(f"warning: {split}: {len(r.empty_classes)} class(es) have no images: {names}")
    total = sum(r.written + r.quarantined + r.unreadable for r in results.values())
    lines += warnings
    lines.append(f"{total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} img/s) → {out}")
    return "\n".join(lines)

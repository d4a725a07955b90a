"""`OUT/manifest.json`: what `prepare` wrote, with the settings it used (docs/design.md, shard format).

The manifest is rewritten atomically after every finished shard, with `"complete": false` until
the last one, so an interrupted `prepare` knows which shards it can keep. Everything that reads
shards finds them here (`split_shards`), never by listing a folder, and refuses an output that
is unfinished or whose files disagree with the manifest.
"""

from __future__ import annotations

import hashlib
import json

from alexnet.pipeline.store import storage
from alexnet.pipeline.store.storage import Location

MANIFEST_FILE = "manifest.json"
# 2: the stored image is the resize of the central square region (earlier outputs resized the whole
# image first: pixels up to 2 levels apart), so a version-1 output refuses to resume into a mixed one.
FORMAT_VERSION = 2
SPLITS = ("train", "val")


class NotPrepared(FileNotFoundError):
    """The output folder is missing, unfinished, or disagrees with its manifest; re-run prepare."""


def manifest_path(out: Location) -> Location:
    return storage.join(out, MANIFEST_FILE)


def index_path(tar_path: Location) -> Location:
    """The DALI index file that belongs to `tar_path` (a local path or an object URL)."""
    return storage.with_suffix(tar_path, ".idx")


def read_manifest(out: Location) -> dict:
    """The manifest of a prepared folder (or prefix); a clear error when there is none or it is not JSON."""
    path = manifest_path(out)
    try:
        text = storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotPrepared(f"{path}: no manifest; run `alexnet-tools prepare --out {out}` first") from None
    try:
        return json.loads(text.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotPrepared(
            f"{path}: not a readable manifest ({e}); re-run `alexnet-tools prepare --out {out}`"
        ) from None


def write_manifest(out: Location, manifest: dict) -> None:
    """Write the manifest atomically (temporary name, fsync, rename; one PUT on S3)."""
    storage.write_bytes(manifest_path(out), json.dumps(manifest, indent=1) + "\n")


def split_shards(out: Location, split: str) -> list[Location]:
    """The tars of a finished split, in manifest order, after checking them against the manifest.

    Refuses (NotPrepared, one line naming what is wrong) an unfinished prepare, a split the
    manifest does not hold, and a listed tar or index that is missing or of another size. The
    split's folder is listed once (one LIST request on S3, not a HEAD per shard).
    """
    manifest = read_manifest(out)
    hint = f"re-run `alexnet-tools prepare --out {out}`"
    if not manifest.get("complete", False):
        raise NotPrepared(f'{manifest_path(out)}: prepare did not finish ("complete": false); {hint}')
    check_class_counts(out, manifest)
    shards = manifest.get("splits", {}).get(split, {}).get("shards", [])
    if not shards:
        raise NotPrepared(f"{out}: the manifest lists no {split} shards; {hint} on a source with a {split} split")
    tars, present = [], storage.list_folder(storage.join(out, split))
    for record in shards:
        tar = storage.join(out, split, record["name"])
        if record["name"] not in present:
            raise NotPrepared(f"{tar}: listed in the manifest but missing; {hint}")
        if present[record["name"]] != record["bytes"]:
            raise NotPrepared(f"{tar}: {present[record['name']]} bytes, the manifest says {record['bytes']}; {hint}")
        if storage.name(index_path(tar)) not in present:
            raise NotPrepared(f"{index_path(tar)}: missing index of {record['name']}; {hint}")
        tars.append(tar)
    return tars


def check_class_counts(out: Location, manifest: dict) -> None:
    """Refuse a manifest whose class list and per-class counts disagree (a hand-edited `classes`):
    a model sized by the list would meet labels past its last class. NotPrepared, one line."""
    classes = manifest.get("classes")
    if classes is None:
        return
    for split, record in sorted(manifest.get("splits", {}).items()):
        counts = record.get("class_counts") or []
        if counts and len(counts) != len(classes):
            raise NotPrepared(
                f"{manifest_path(out)}: lists {len(classes)} classes, but its {split} split counts images of "
                f"{len(counts)}; undo the edit, or re-run `alexnet-tools prepare --out {out} --overwrite`"
            )


def shards_digest(manifest: dict) -> str:
    """sha256 of the manifest's shard records (names, counts, bytes, hashes) of every split.

    What `pca.json` records as the data it was computed from: it changes when the shards do, and
    not when a tool adds its own entry to the manifest (as `export-ffcv` does).
    """
    shards = {split: record.get("shards", []) for split, record in sorted(manifest.get("splits", {}).items())}
    return hashlib.sha256(json.dumps(shards, sort_keys=True).encode()).hexdigest()

"""`OUT/manifest.json`: what `prepare` wrote, with the settings it used (DESIGN.md, shard format).

The manifest is rewritten atomically after every finished shard, with `"complete": false` until
the last one, so an interrupted `prepare` knows which shards it can keep.
"""

from __future__ import annotations

import json
from pathlib import Path

from alexnet.pipeline.files import write_atomic

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


def manifest_path(out: Path) -> Path:
    return out / MANIFEST_FILE


def read_manifest(out: Path) -> dict:
    """The manifest of a prepared folder; a clear error when there is none."""
    path = manifest_path(out)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run `alexnet-tools prepare --out {out}` first")
    return json.loads(path.read_text())


def write_manifest(out: Path, manifest: dict) -> None:
    """Write the manifest to a temporary name, fsync, then rename over the old one."""
    write_atomic(manifest_path(out), json.dumps(manifest, indent=1) + "\n")


def shard_paths(out: Path, manifest: dict, split: str) -> list[Path]:
    """The tar paths of a split, in manifest order."""
    return [out / split / s["name"] for s in manifest["splits"].get(split, {}).get("shards", [])]

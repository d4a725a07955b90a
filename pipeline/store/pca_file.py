"""`OUT/pca.json`: the RGB statistics `pca-stats` computes and every loader's lighting and normalisation read.

All values are on the 0–1 pixel scale. `manifest_sha256` is the digest of the manifest's shard
records (`shards_digest`) the statistics were computed from; `load_pca` checks it against the
manifest beside it and warns in one line when the shards have changed since.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import asdict, dataclass

from alexnet.pipeline.store import storage
from alexnet.pipeline.store.manifest import manifest_path, read_manifest, shards_digest
from alexnet.pipeline.store.storage import Location

PCA_FILE = "pca.json"


@dataclass(frozen=True)
class PcaStats:
    """Mean, std, covariance and eigen-decomposition of the RGB pixels, on the 0–1 scale.

    `eigvec` holds the eigenvectors as columns (rows are R, G, B), ordered like `eigval` (descending).
    """

    mean: list[float]
    std: list[float]
    covariance: list[list[float]]
    eigval: list[float]
    eigvec: list[list[float]]
    pixel_count: int
    image_count: int
    manifest_sha256: str


def save_pca(stats: PcaStats, path: Location) -> None:
    """Write pca.json atomically."""
    storage.write_bytes(path, json.dumps(asdict(stats), indent=2) + "\n")


def load_pca(path: Location) -> PcaStats:
    """Read and check pca.json; a missing or malformed file gets a one-line hint to run `pca-stats`."""
    hint = f"run `alexnet-tools pca-stats --data {str(path).rsplit('/', 1)[0]}`"
    try:
        text = storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FileNotFoundError(f"{path}: no PCA statistics; {hint} first") from None
    try:
        fields = json.loads(text.decode())
        stats = PcaStats(**{f.name: fields[f.name] for f in dataclasses.fields(PcaStats)})
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise FileNotFoundError(
            f"{path}: not a pca.json this version reads ({type(e).__name__}: {e}); {hint} again"
        ) from None
    if len(stats.mean) != 3 or len(stats.std) != 3 or len(stats.eigval) != 3 or any(len(r) != 3 for r in stats.eigvec):
        raise FileNotFoundError(f"{path}: statistics are not of three channels; {hint} again")
    return stats


_WARNED: set[tuple[str, str]] = set()  # (data, stale digest) already warned about


def load_stats(data: Location) -> PcaStats:
    """`data/pca.json`, with one warning line on stderr when it was computed from other shards than `data`'s."""
    stats = load_pca(storage.join(data, PCA_FILE))
    if storage.exists(manifest_path(data)) and stats.manifest_sha256 != shards_digest(read_manifest(data)):
        if (str(data), stats.manifest_sha256) in _WARNED:  # once per process: every loader reads it
            return stats
        _WARNED.add((str(data), stats.manifest_sha256))
        print(
            f"warning: {storage.join(data, PCA_FILE)} was computed from other shards than {manifest_path(data)} lists; "
            f"re-run `alexnet-tools pca-stats --data {data}`",
            file=sys.stderr,
        )
    return stats

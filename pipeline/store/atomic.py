"""Atomic file writes for the data side: a reader sees the old file or the new one, never a half-written one.

`model/checkpoint.py` has the one twin on the compute side (the layering rule keeps `model/` from
importing this package).
"""

from __future__ import annotations

import os
from pathlib import Path

TMP_SUFFIX = ".tmp"


def tmp_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed into place."""
    return path.with_name(path.name + TMP_SUFFIX)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to `path.tmp`, fsync, rename over `path`; on failure (disk full) remove the temporary."""
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish(tmp: Path, path: Path) -> None:
    """fsync a finished temporary file and rename it to `path` (for writers that stream into `tmp`)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)

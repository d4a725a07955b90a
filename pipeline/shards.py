"""The shard format every loader reads: WebDataset tars with DALI's index beside them.

Each sample is `KEY.jpg` (the stored 256×256 JPEG) and `KEY.cls` (class index, ASCII digits). The
`.idx` file is the one DALI's `wds2idx` writes (version v1.2: a header `v1.2 N`, then per sample
`ext offset size name` for each member), produced while the tar is written. A shard appears under
its final name only when complete: both files are written to temporary names, fsynced and renamed,
the tar last, so the tar's presence means the shard is whole.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from alexnet.pipeline.files import tmp_path, write_atomic

INDEX_VERSION = "v1.2"
BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class IndexEntry:
    """Where one sample's two members sit in its tar (byte offsets of the member data)."""

    key: str
    jpg_offset: int
    jpg_size: int
    cls_offset: int
    cls_size: int


def shard_name(split: str, number: int) -> str:
    """`train-000042.tar`: the tar's file name; the index has the same stem with `.idx`."""
    return f"{split}-{number:06d}.tar"


def index_path(tar_path: Path) -> Path:
    """The DALI index file that belongs to `tar_path`."""
    return tar_path.with_suffix(".idx")


class _HashingFile:
    """A write-only file that hashes what passes through, so the shard's sha256 needs no second read."""

    def __init__(self, path: Path) -> None:
        self.raw = open(path, "wb")
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()


class ShardWriter:
    """Writes one tar and its index under temporary names; `close()` publishes both.

    `sha256` (hex) is the finished tar's hash, computed while it was written.
    """

    def __init__(self, tar_path: Path) -> None:
        self.path = tar_path
        self.tmp = tmp_path(tar_path)
        self.file = _HashingFile(self.tmp)
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)
        self.lines: list[str] = []

    def add(self, key: str, jpeg: bytes, label: int) -> None:
        """Append one sample; the key must hold no dot (DALI splits the extension at the first dot)."""
        if "." in key:
            raise ValueError(f"sample key {key!r} holds a dot, which WebDataset readers split on")
        parts = []
        for ext, data in (("jpg", jpeg), ("cls", str(label).encode())):
            offset = self._add_member(f"{key}.{ext}", data)
            parts.append(f"{ext} {offset} {len(data)} {key}.{ext}")
        self.lines.append(" ".join(parts))

    def _add_member(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        self.tar.addfile(info, io.BytesIO(data))
        return self.tar.offset - _padded(len(data))

    @property
    def count(self) -> int:
        return len(self.lines)

    @property
    def sha256(self) -> str:
        return self.file.sha256.hexdigest()

    def close(self) -> None:
        """Finish the tar, write the index, fsync both, and rename them to their final names."""
        try:
            self.tar.close()
            _fsync_close(self.file)
            write_atomic(index_path(self.path), f"{INDEX_VERSION} {len(self.lines)}\n" + "".join(l + "\n" for l in self.lines))
        except BaseException:
            self.abort()
            raise
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file)."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _fsync_close(f) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def read_index(idx_path: Path) -> list[IndexEntry]:
    """Parse a v1.2 index written by `ShardWriter` (or DALI's wds2idx for jpg+cls samples)."""
    lines = idx_path.read_text().splitlines()
    version, _, count = lines[0].partition(" ")
    if version != INDEX_VERSION or int(count) != len(lines) - 1:
        raise ValueError(f"{idx_path}: header {lines[0]!r} does not match {len(lines) - 1} entries")
    entries = []
    for line in lines[1:]:
        fields = line.split()
        members = {fields[i]: (int(fields[i + 1]), int(fields[i + 2]), fields[i + 3]) for i in range(0, len(fields), 4)}
        (jo, js, name), (co, cs, _) = members["jpg"], members["cls"]
        entries.append(IndexEntry(name.rsplit(".", 1)[0], jo, js, co, cs))
    return entries


def iter_samples(tar_path: Path, entries: list[IndexEntry] | None = None) -> Iterator[tuple[str, bytes, int]]:
    """Yield (key, jpeg bytes, label) for every sample of a shard, read through its index."""
    entries = read_index(index_path(tar_path)) if entries is None else entries
    with open(tar_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for e in entries:
            label = int(m[e.cls_offset : e.cls_offset + e.cls_size])
            yield e.key, m[e.jpg_offset : e.jpg_offset + e.jpg_size], label


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()

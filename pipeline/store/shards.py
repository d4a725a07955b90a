"""The shard format every loader reads: WebDataset tars with DALI's index beside them.

Each sample is `KEY.jpg` (the stored 256×256 JPEG) and `KEY.cls` (class index, ASCII digits). The
`.idx` file is the one DALI's `wds2idx` writes (version v1.2: a header `v1.2 N`, then per sample
`ext offset size name` for each member), produced while the tar is written. A shard appears under
its final name only when complete: both files are written to temporary names, fsynced and renamed,
the tar last, so the tar's presence means the shard is whole.

`ShardWriter` writes one shard; `ShardReader` is the one reader of samples out of shards (the torch
loader, the FFCV export, pca-stats, verify and the benchmarks all go through it).
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import tarfile
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from alexnet.pipeline.store import storage
from alexnet.pipeline.store.atomic import tmp_path, write_atomic
from alexnet.pipeline.store.manifest import NotPrepared, index_path, read_manifest, split_shards
from alexnet.pipeline.store.storage import Location

INDEX_VERSION = "v1.2"
BLOCK = tarfile.BLOCKSIZE
# The columns of an index table: where each sample's two members sit in its tar.
JPG_OFFSET, JPG_SIZE, CLS_OFFSET, CLS_SIZE = range(4)
# Whole tars a reader keeps in memory per process when they come from an object store (readers
# go through a split tar by tar, so two cover the one in use and the next).
REMOTE_TARS_HELD = 2


def shard_name(split: str, number: int) -> str:
    """`train-000042.tar`: the tar's file name; the index has the same stem with `.idx`."""
    return f"{split}-{number:06d}.tar"


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
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            index = f"{INDEX_VERSION} {len(self.lines)}\n" + "".join(line + "\n" for line in self.lines)
            write_atomic(index_path(self.path), index)
        except BaseException:
            self.abort()
            raise
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file)."""
        try:
            self.file.close()
        except OSError:
            pass  # a full disk fails the close's flush again; the file goes anyway
        self.tmp.unlink(missing_ok=True)


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def read_index(idx_path: Location) -> tuple[list[str], np.ndarray]:
    """Parse a v1.2 index: the sample keys, and an int64 table [N, 4] of (jpg offset, jpg size, cls offset, cls size).

    Takes the lines `ShardWriter` writes and those of DALI's wds2idx for jpg+cls samples (either
    member first). Raises ValueError naming the file when it is not such an index.
    """
    lines = storage.read_bytes(idx_path).decode().splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != INDEX_VERSION or not header[1].isdigit() or int(header[1]) != len(lines) - 1:
        raise ValueError(f"{idx_path}: header {lines[0] if lines else ''!r} does not match {len(lines) - 1} entries")
    keys, rows = [], []
    for line in lines[1:]:
        fields = line.split()
        members = {fields[i]: fields[i + 1 : i + 4] for i in range(0, len(fields) - 3, 4)}
        if "jpg" not in members or "cls" not in members:
            raise ValueError(f"{idx_path}: entry {line[:60]!r} lacks a jpg or cls member")
        (jo, js, name), (co, cs, _) = members["jpg"], members["cls"]
        keys.append(name.rsplit(".", 1)[0])
        rows.append((int(jo), int(js), int(co), int(cs)))
    return keys, np.array(rows, dtype=np.int64).reshape(-1, 4)


class ShardReader:
    """Samples of a list of shards by global index (the tars in order, each through its index).

    The tars are memory-mapped lazily in each process that reads (a reader pickles without its
    maps, so DataLoader and pool workers open their own). Sample i's JPEG comes back as a view
    into the map: no copy. A tar in an object store is read whole (one GET) and the last
    `REMOTE_TARS_HELD` are kept. `for_split` is the checked way in: it takes the tars from the manifest.
    """

    def __init__(self, tars: list[Location]) -> None:
        tables = [read_index(index_path(t))[1] for t in tars]
        self.tars = [storage.parse_location(t) for t in tars]
        self.sizes = [len(t) for t in tables]
        self.tar = np.repeat(np.arange(len(tars), dtype=np.int32), self.sizes)
        self.where = np.concatenate(tables) if tables else np.zeros((0, 4), np.int64)
        self._maps: dict[int, mmap.mmap | bytes] = {}

    @classmethod
    def for_split(cls, out: Location, split: str) -> ShardReader:
        """The split's shards as the manifest lists them, checked against it (see `split_shards`)."""

        tars = split_shards(out, split)
        reader = cls(tars)
        for tar, n, record in zip(tars, reader.sizes, read_manifest(out)["splits"][split]["shards"]):
            if n != record["samples"]:
                raise NotPrepared(
                    f"{index_path(tar)}: {n} samples, the manifest says {record['samples']}; re-run prepare"
                )
        return reader

    def __len__(self) -> int:
        return len(self.tar)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def _map(self, tar: int) -> mmap.mmap | bytes:
        if tar not in self._maps:
            location = self.tars[tar]
            if storage.is_url(location):
                for old in list(self._maps)[: max(0, len(self._maps) - REMOTE_TARS_HELD + 1)]:
                    del self._maps[old]
                self._maps[tar] = storage.read_bytes(location)
            else:
                with open(location, "rb") as f:
                    self._maps[tar] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[tar]

    def sample(self, index: int) -> tuple[memoryview, int]:
        """Sample `index`'s encoded JPEG (a view into the mapped tar) and its label."""
        m = self._map(int(self.tar[index]))
        jo, js, co, cs = (int(v) for v in self.where[index])
        return memoryview(m)[jo : jo + js], int(m[co : co + cs])

    def tar_path(self, index: int) -> Location:
        return self.tars[int(self.tar[index])]

    def key(self, index: int) -> str:
        """Sample `index`'s key (read again from its index: keys are needed only to name a sample)."""
        tar = int(self.tar[index])
        first = int(np.searchsorted(self.tar, tar))
        return read_index(index_path(self.tars[tar]))[0][index - first]

    def samples(self, indices: Any = None) -> Iterator[tuple[int, memoryview, int]]:
        """(index, JPEG view, label) for `indices` (all samples, in order, by default)."""
        for i in range(len(self)) if indices is None else indices:
            jpeg, label = self.sample(int(i))
            yield int(i), jpeg, label

    def chunks(self, size: int, indices: np.ndarray | None = None) -> list[np.ndarray]:
        """`indices` (all, by default) cut into runs of at most `size` that each stay within one tar: pool tasks."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices)
        bounds = np.flatnonzero(np.diff(self.tar[indices])) + 1
        return [run[k : k + size] for run in np.split(indices, bounds) for k in range(0, len(run), size)]

    def close(self) -> None:
        for m in self._maps.values():
            if isinstance(m, mmap.mmap):
                m.close()
        self._maps.clear()


def decode_jpeg(jpeg: bytes | memoryview) -> np.ndarray:
    """A stored JPEG → H×W×3 uint8 RGB (Pillow, libjpeg-turbo's accurate IDCT): the reference decode every loader is held to."""
    with Image.open(io.BytesIO(jpeg)) as im:
        return np.array(im if im.mode == "RGB" else im.convert("RGB"))


_worker_reader: ShardReader | None = None


def _install_reader(reader: ShardReader) -> None:
    global _worker_reader
    _worker_reader = reader


def reader_pool(reader: ShardReader, workers: int | None) -> Pool:
    """A process pool whose workers each hold `reader` (handed over once, not with every task)."""
    return Pool(workers or os.cpu_count(), initializer=_install_reader, initargs=(reader,))


def worker_reader() -> ShardReader:
    """The reader of the `reader_pool` this process works for."""
    assert _worker_reader is not None, "worker_reader() outside a reader_pool worker"
    return _worker_reader


def sha256_file(path: Location) -> str:
    """Hex sha256 of a file or object, read in 1 MiB blocks (one streamed GET on S3)."""
    h = hashlib.sha256()
    with storage.open_stream(path) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()

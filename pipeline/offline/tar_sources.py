"""ILSVRC-2012 samples read straight out of tar archives, without unpacking anything.

Two forms of ImageNet come as tars (docs/design.md, "Input layouts"):

- **The official archives.** `ILSVRC2012_img_train.tar` holds one uncompressed tar per class
  (`n01440764.tar`), so every image is a member of an inner tar at a fixed offset of the outer
  file. The inner tars are indexed in parallel (one inner tar per worker task, reading only the
  512-byte headers) and each image becomes a `Sample` with the absolute offset and size of its
  bytes, which a worker later reads with one seek. `ILSVRC2012_img_val.tar` holds the 50,000 flat
  validation images, labelled by the ground truth and meta.mat read from inside
  `ILSVRC2012_devkit_t12.tar.gz` (or by `--val-labels`).
- **WebDataset copies** (such as `imagenet1k-train-0000.tar`, `imagenet1k-validation-00.tar`): each
  sample is an image member (`.jpg`, `.jpeg`, `.png`, `.webp`) and a `.cls` class index, often with
  a `.json`. The `.cls` indices are tied to wnids by `--classes FILE`, a synset mapping file found as
  for the tree, or the `.json` members (a `wnid`/`synset` field, or a `filename` that starts with the
  wnid); when none does it, the run refuses. Labels are then re-indexed to the sorted-wnid order
  every form uses, whatever order the copy's indices were in.

The samples come out in the extracted tree's order (classes by wnid, files by name), so the train
shuffle, the shards and their bytes are the ones the extracted route gives for the same images. A
truncated or unreadable archive stops the run with one line naming the archive and the member.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import Pool
from pathlib import Path, PurePosixPath
from typing import TypeVar

from alexnet.pipeline.offline import ilsvrc
from alexnet.pipeline.offline.ilsvrc import WNID, LayoutError, Sample

DEVKIT_DATA = "ILSVRC2012_devkit_t12/data/"
WEBDATASET_IMAGES = {".jpg", ".jpeg", ".png", ".webp"}
BLOCK = tarfile.BLOCKSIZE
T, R = TypeVar("T"), TypeVar("R")


class ArchiveError(LayoutError):
    """An archive is truncated or unreadable; the message names the archive and the member."""


class _Window(io.RawIOBase):
    """The bytes [start, start + size) of an open file as a seekable file: an inner tar in place."""

    def __init__(self, f: io.BufferedReader, start: int, size: int) -> None:
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos + (0, self.pos, self.size)[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data


def _members(f: io.BufferedReader, start: int, size: int, where: str) -> list[tarfile.TarInfo]:
    """The members of the tar at [start, start + size) of `f`, their `offset_data` made absolute.

    Refuses, naming the last member read, a tar cut short (a member's data runs past the end, or the
    end-of-archive block is missing) or with an unreadable header.
    """
    window = _Window(f, start, size)
    members: list[tarfile.TarInfo] = []

    def after() -> str:
        return f"after member {members[-1].name}" if members else "at its first member"

    try:
        tar = tarfile.open(fileobj=window, mode="r:")
        for info in tar:
            members.append(info)
            if info.offset_data + info.size > size:
                raise ArchiveError(
                    f"{where}: truncated in member {info.name}; the archive is incomplete, download it again"
                )
    except tarfile.TarError as e:
        raise ArchiveError(f"{where}: truncated or unreadable {after()} ({e}); download it again") from None
    window.seek(tar.offset)
    end = window.read(BLOCK)
    if len(end) < BLOCK or end.count(0) != BLOCK:
        raise ArchiveError(f"{where}: truncated or unreadable {after()} (no end-of-archive block); download it again")
    for info in members:
        info.offset_data += start
    return members


def list_tar(path: Path, where: str | None = None) -> list[tarfile.TarInfo]:
    """The members of a whole tar file (offsets absolute); one line naming it and the member if it is damaged."""
    try:
        with open(path, "rb") as f:
            return _members(f, 0, os.fstat(f.fileno()).st_size, where or str(path))
    except OSError as e:
        raise ArchiveError(f"{path}: cannot read it ({e.strerror or e})") from None


def _random_access(f: io.BufferedReader) -> None:
    """Tell the kernel not to read ahead: the next read is elsewhere in the archive (an index
    header 110 KB on, or a member of another class), so read-ahead would only fetch bytes that are
    evicted before they are used."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)


def read_member(archive: Path, offset: int, size: int, name: str) -> bytes:
    """A pool worker's read of one member's bytes with one seek; one line naming both if that fails."""
    try:
        with open(archive, "rb") as f:
            _random_access(f)
            data = os.pread(f.fileno(), size, offset)
    except OSError as e:
        raise ArchiveError(f"{archive}: cannot read member {name} ({e.strerror or e})") from None
    if len(data) != size:
        raise ArchiveError(f"{archive}: truncated in member {name}; the archive is incomplete, download it again")
    return data


def _pool_map(fn: Callable[[T], R], tasks: list[T], workers: int | None) -> Iterator[R]:
    """fn over tasks on a process pool, results in order as they come (so each can be dropped once used);
    in this process for a single task or worker."""
    if len(tasks) <= 1 or workers == 1:
        yield from map(fn, tasks)
        return
    with Pool(min(len(tasks), workers or os.cpu_count() or 1)) as pool:
        yield from pool.imap(fn, tasks)


# -- the official archives ---------------------------------------------------------------------------


def _image_members(members: Iterable[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """Regular members named like an image file, in name order: what the extracted folder's listing would give."""
    images = [m for m in members if m.isfile() and "/" not in m.name.removeprefix("./")]
    return sorted((m for m in images if ilsvrc.is_image_name(Path(m.name))), key=lambda m: m.name.removeprefix("./"))


def _index_class_tar(task: tuple[Path, str, int, int, str]) -> list[tuple[str, int, int]]:
    """Worker: the image members (name, absolute offset, size) of one inner class tar, read in place."""
    outer, inner, start, size, where = task
    try:
        with open(outer, "rb") as f:
            _random_access(f)
            members = _members(f, start, size, where)
    except OSError as e:
        raise ArchiveError(f"{outer}: cannot read member {inner} ({e.strerror or e})") from None
    return [(m.name.removeprefix("./"), m.offset_data, m.size) for m in _image_members(members)]


def official_samples(
    root: Path, form: ilsvrc.Form, val_labels: Path | None, workers: int | None = None
) -> tuple[list[str], dict[str, list[Sample]]]:
    """The class list and the (unshuffled) samples of the official archives, in the extracted tree's order."""
    if form.train_tar is None:
        raise LayoutError(
            f"{root}: no {ilsvrc.TRAIN_TAR} (the class list comes from its class tars); put it in {root} or one folder below"
        )
    train_rel = form.train_tar.relative_to(root).as_posix()
    outer = list_tar(form.train_tar)
    classes = []
    for m in outer:
        if not m.isfile():
            continue
        stem = m.name.removeprefix("./").removesuffix(".tar")
        if not m.name.endswith(".tar") or not WNID.match(stem):
            raise LayoutError(
                f"{form.train_tar}: member {m.name} is not a <wnid>.tar class archive; is this {ilsvrc.TRAIN_TAR}?"
            )
        classes.append((stem, m))
    classes.sort(key=lambda c: c[0])
    if not classes:
        raise LayoutError(f"{form.train_tar}: holds no <wnid>.tar class archives")
    wnids = [w for w, _ in classes]
    tasks = [(form.train_tar, m.name, m.offset_data, m.size, f"{form.train_tar} member {m.name}") for _, m in classes]
    train = [
        Sample(f"{train_rel}/{m.name.removeprefix('./')}/{name}", label, train_rel, offset, size)
        for label, ((_, m), images) in enumerate(zip(classes, _pool_map(_index_class_tar, tasks, workers)))
        for name, offset, size in images
    ]
    return wnids, {"train": train, "val": _official_val(root, form, wnids, val_labels)}


def _official_val(root: Path, form: ilsvrc.Form, wnids: list[str], val_labels: Path | None) -> list[Sample]:
    """The flat val tar's images labelled by the devkit (or `--val-labels`); [] without a val tar."""
    if form.val_tar is None:
        return []
    rel = form.val_tar.relative_to(root).as_posix()
    members = _image_members(list_tar(form.val_tar))
    files = [m.name.removeprefix("./") for m in members]
    labels = _val_labels(root, form, files, val_labels)
    missing = [f for f in files if PurePosixPath(f).stem not in labels]
    if missing:
        raise LayoutError(
            f"{form.val_tar}: no label for member {missing[0]} ({len(missing)} unlabelled); pass the right --val-labels"
        )
    index = {w: i for i, w in enumerate(wnids)}
    unknown = sorted({labels[PurePosixPath(f).stem] for f in files} - index.keys())
    if unknown:
        raise LayoutError(
            f"validation label {unknown[0]} has no class tar in {form.train_tar}; is the devkit from the same release?"
        )
    return [
        Sample(f"{rel}/{name}", index[labels[PurePosixPath(name).stem]], rel, m.offset_data, m.size)
        for name, m in zip(files, members)
    ]


def _val_labels(root: Path, form: ilsvrc.Form, files: list[str], val_labels: Path | None) -> dict[str, str]:
    """{stem: wnid} from `--val-labels` (a devkit .tar.gz, a Kaggle CSV, or the ground truth with meta.mat), else the devkit found."""
    devkit = val_labels if val_labels is not None and val_labels.name.endswith((".tar.gz", ".tgz")) else None
    if val_labels is not None and devkit is None:
        return ilsvrc.read_val_labels(root, files, val_labels)
    devkit = devkit or form.devkit
    if devkit is None:
        raise LayoutError(
            f"{form.val_tar}: no {ilsvrc.DEVKIT_TAR} beside it to label the validation images; put it in {root} "
            "or pass --val-labels FILE"
        )
    return devkit_archive_labels(devkit, files)


def devkit_archive_labels(devkit: Path, files: list[str]) -> dict[str, str]:
    """The devkit's ground truth and meta.mat, read from inside its .tar.gz."""
    wanted = {ilsvrc.DEVKIT_VAL: None, ilsvrc.DEVKIT_META: None}
    try:
        with tarfile.open(devkit, "r:gz") as tar:
            for info in tar:
                name = PurePosixPath(info.name.removeprefix("./"))
                if info.isfile() and name.name in wanted and name.parent.as_posix() + "/" == DEVKIT_DATA:
                    wanted[name.name] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveError(f"{devkit}: truncated or unreadable ({e}); download it again") from None
    absent = [n for n, data in wanted.items() if data is None]
    if absent:
        raise LayoutError(f"{devkit}: no {DEVKIT_DATA}{absent[0]} inside; is this {ilsvrc.DEVKIT_TAR}?")
    truth = wanted[ilsvrc.DEVKIT_VAL].decode()
    return ilsvrc.devkit_labels(truth, io.BytesIO(wanted[ilsvrc.DEVKIT_META]), files, f"{devkit} ({DEVKIT_DATA})")


# -- WebDataset copies -------------------------------------------------------------------------------


def split_of(tar: Path) -> str:
    """`train` or `val` from a WebDataset tar's name (`imagenet1k-train-0000.tar`, `...-validation-00.tar`)."""
    name = tar.name.lower()
    kinds = [split for split, word in (("train", "train"), ("val", "val")) if word in name]
    if len(kinds) != 1:
        raise LayoutError(f"{tar}: cannot tell train from validation by its name; name it *train*.tar or *val*.tar")
    return kinds[0]


def _json_wnid(data: bytes) -> tuple[str | None, str]:
    """The wnid a sample's .json states (a `wnid`/`synset` field, or a `filename` starting with one) and its class name."""
    try:
        meta = json.loads(data)
    except ValueError:
        return None, ""
    if not isinstance(meta, dict):
        return None, ""
    name = str(meta.get("class_name", "") or "")
    for field in ("wnid", "synset"):
        if isinstance(meta.get(field), str) and WNID.match(meta[field]):
            return meta[field], name
    filename = meta.get("filename") or meta.get("file_name")
    if isinstance(filename, str):
        head = PurePosixPath(filename).name.split("_")[0]
        if WNID.match(head):
            return head, name
    return None, name


def _index_webdataset_tar(tar: Path) -> list[tuple[str, str, int, int, int, str | None, str]]:
    """Worker: per sample of one WebDataset tar, (key, image member, offset, size, cls, wnid or None, name)."""
    samples: dict[str, dict] = {}
    with open(tar, "rb") as f:
        for m in _members(f, 0, os.fstat(f.fileno()).st_size, str(tar)):
            if not m.isfile():
                continue
            folder, _, base = m.name.rpartition("/")
            if base.startswith("."):
                continue
            stem, _, ext = base.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            entry = samples.setdefault(key, {})
            ext = "." + ext.lower()
            if ext in WEBDATASET_IMAGES:
                if "image" in entry:
                    raise LayoutError(f"{tar}: sample {key} has two images ({entry['image'].name}, {m.name})")
                entry["image"] = m
            elif ext in (".cls", ".json"):
                entry[ext] = os.pread(f.fileno(), m.size, m.offset_data)
    rows = []
    for key, entry in samples.items():
        if "image" not in entry:
            continue  # metadata without a picture is not a sample (and is not in the extracted tree either)
        image = entry["image"]
        if ".cls" not in entry:
            raise LayoutError(f"{tar}: sample {key} ({image.name}) has no .cls class index")
        try:
            cls = int(entry[".cls"].decode().strip())
        except (UnicodeDecodeError, ValueError):
            raise LayoutError(f"{tar}: {key}.cls is not a class index: {entry['.cls'][:20]!r}") from None
        wnid, name = _json_wnid(entry[".json"]) if ".json" in entry else (None, "")
        rows.append((key, image.name, image.offset_data, image.size, cls, wnid, name))
    return rows


def _class_file(root: Path, classes: Path | None) -> tuple[Path | None, list[str]]:
    """The wnid of each .cls index from `--classes FILE` or a synset mapping found near DIR (None, [] if neither)."""
    path = classes or ilsvrc.find_label_file(root, ilsvrc.SYNSET_NAMES)
    if path is None:
        return None, []
    if not path.is_file():
        raise LayoutError(f"{path}: class list not found")
    wnids = [w for w, _ in ilsvrc.read_synset_lines(path)]
    if not wnids:
        raise LayoutError(
            f"{path}: no wnids in it; expected one line per class index, starting with its wnid (n01440764 ...)"
        )
    if len(set(wnids)) != len(wnids):
        dup = next(w for i, w in enumerate(wnids) if w in wnids[:i])
        raise LayoutError(f"{path}: wnid {dup} is listed twice")
    return path, wnids


def webdataset_samples(
    root: Path, form: ilsvrc.Form, classes: Path | None, workers: int | None = None
) -> tuple[list[str], dict[str, list[Sample]]]:
    """The class list and the (unshuffled) samples of a folder of WebDataset tars, in the extracted tree's order."""
    tars = {tar: split_of(tar) for tar in form.webdataset}
    if "train" not in tars.values():
        raise LayoutError(
            f"{root}: WebDataset tars but none named *train*.tar; the class list comes from the train split"
        )
    rows = dict(zip(tars, _pool_map(_index_webdataset_tar, list(tars), workers)))
    class_file, listed = _class_file(root, classes)
    cls_wnid: dict[int, str] = dict(enumerate(listed))
    evidence: dict[int, tuple[str, str]] = {}
    for tar, samples in rows.items():
        for key, _, _, _, cls, wnid, _ in samples:
            if wnid is None:
                continue
            known = cls_wnid.get(cls) if class_file else evidence.get(cls, (wnid,))[0]
            if known is not None and known != wnid:
                source = f"{class_file} maps" if class_file else "other samples' .json map"
                raise LayoutError(
                    f"{tar}: {key}.json says {wnid} but {source} class index {cls} to {known}; pass the right --classes FILE"
                )
            evidence.setdefault(cls, (wnid, f"{tar.name}/{key}"))
    if not class_file:
        cls_wnid = {cls: wnid for cls, (wnid, _) in evidence.items()}
        by_wnid: dict[str, int] = {}
        for cls, (wnid, where) in sorted(evidence.items()):
            if by_wnid.setdefault(wnid, cls) != cls:
                raise LayoutError(
                    f"{where}.json: {wnid} appears under class indices {by_wnid[wnid]} and {cls}; pass --classes FILE"
                )
    unmapped = sorted({s[4] for samples in rows.values() for s in samples} - cls_wnid.keys())
    if unmapped:
        where = (
            f"{class_file} lists {len(listed)} classes"
            if class_file
            else "no synset mapping file and no wnid in the .json members"
        )
        raise LayoutError(
            f"{root}: cannot show which wnid WebDataset class index {unmapped[0]} is ({where}); pass --classes FILE "
            "with the wnid of each index in order, one a line (as in LOC_synset_mapping.txt)"
        )
    splits: dict[str, list[tuple[str, int, Sample]]] = {"train": [], "val": []}
    seen: dict[str, Path] = {}
    for tar, samples in rows.items():
        rel = tar.relative_to(root).as_posix()
        for key, member, offset, size, cls, _, _ in samples:
            stem = PurePosixPath(key).name
            if stem in seen:
                raise LayoutError(f"{tar}: sample {key} is also in {seen[stem]}; each image must appear once")
            seen[stem] = tar
            splits[tars[tar]].append((cls_wnid[cls], stem, Sample(f"{rel}/{member}", 0, rel, offset, size)))
    wnids = sorted({wnid for wnid, _, _ in splits["train"]})
    index = {w: i for i, w in enumerate(wnids)}
    orphan = next((w for w, _, _ in splits["val"] if w not in index), None)
    if orphan:
        raise LayoutError(f"{root}: validation class {orphan} has no train samples in the WebDataset tars")
    out = {}
    for split, entries in splits.items():
        entries.sort(key=lambda e: (index[e[0]], e[1]) if split == "train" else e[1])
        out[split] = [Sample(s.path, index[w], s.archive, s.offset, s.size) for w, _, s in entries]
    return wnids, out

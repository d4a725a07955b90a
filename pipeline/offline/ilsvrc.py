"""Find the ILSVRC-2012 images and their labels in the layouts people actually have on disk.

`find_form` tells the three forms of DIR apart by name and refuses a DIR that mixes them: an
extracted tree, the official archives as downloaded, or a folder of WebDataset tars (the last two are
read in `tar_sources.py`). In the extracted tree train is `DIR/train/<wnid>/*.JPEG`; the class index
is the wnid's position in the sorted list of train folders (torchvision's convention). Validation
comes as `DIR/val/<wnid>/` (after valprep.sh), or flat `DIR/val/ILSVRC2012_val_*.JPEG` labelled by
Kaggle's `LOC_val_solution.csv` or by the devkit's `ILSVRC2012_validation_ground_truth.txt` + `meta.mat`.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

WNID = re.compile(r"^n\d{8}$")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
KAGGLE_VAL = "LOC_val_solution.csv"
DEVKIT_VAL = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
SYNSET_NAMES = "LOC_synset_mapping.txt"
# The official archives, as image-net.org serves them (found in DIR or one folder below).
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
OFFICIAL = (TRAIN_TAR, VAL_TAR, DEVKIT_TAR)
TREE, ARCHIVES, WEBDATASET = "tree", "archives", "webdataset"


class LayoutError(Exception):
    """The input tree cannot be used; the message says which path and what to do."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One source image: its path relative to the ILSVRC root, and its class index.

    A member of a tar archive also says where its bytes are: `archive` (the archive's path relative
    to the root; "" for a plain file), and the absolute `offset` and `size` of its data in that
    file, so a worker reads it with one seek. Its `path` is then the archive, the inner archive if
    any and the member name joined by "/" (`ILSVRC2012_img_train.tar/n01440764.tar/n01440764_10026.JPEG`),
    which is what the quarantine list shows.
    """

    path: str
    label: int
    archive: str = ""
    offset: int = 0
    size: int = 0

    @property
    def key(self) -> str:
        """The WebDataset key: the source file's stem (unique within ILSVRC-2012)."""
        return Path(self.path).stem

    def source(self, root: Path) -> Path | tuple[Path, int, int, str]:
        """What a worker turns into bytes: the file's path, or (archive, offset, size, display path)."""
        if self.archive:
            return root / self.archive, self.offset, self.size, self.path
        return root / self.path


@dataclass(frozen=True)
class Form:
    """What DIR holds: an extracted tree, the official archives, or WebDataset tars (paths absolute)."""

    kind: str
    train_tar: Path | None = None
    val_tar: Path | None = None
    devkit: Path | None = None
    webdataset: tuple[Path, ...] = ()


def find_official(root: Path, name: str) -> list[Path]:
    """Every copy of one official archive in root or one folder below it."""
    here = [root / name] if (root / name).is_file() else []
    below = sorted(p for p in root.glob(f"*/{name}") if p.is_file())
    return here + below


def find_form(root: Path) -> Form:
    """Which form of ImageNet DIR holds; refuses a DIR that mixes forms or holds an archive twice."""
    found = []
    if (root / "train").is_dir() or (root / "val").is_dir():
        found.append("an extracted tree (train/, val/)")
    copies = {name: find_official(root, name) for name in OFFICIAL}
    official = {name: paths[0] for name, paths in copies.items() if paths}
    if TRAIN_TAR in official or VAL_TAR in official:  # the devkit alone holds no images: it may sit beside a tree
        found.append(f"the official archives ({', '.join(p.name for p in official.values())})")
    tars = sorted(p for p in root.glob("*.tar") if p.is_file() and not p.name.startswith("ILSVRC2012_"))
    if tars:
        more = f" and {len(tars) - 1} more" if len(tars) > 1 else ""
        found.append(f"WebDataset tars ({tars[0].name}{more})")
    if len(found) > 1:
        raise LayoutError(
            f"{root}: holds more than one form of ImageNet: {'; '.join(found)}; point --imagenet-dir at a folder with one"
        )
    if tars:
        return Form(WEBDATASET, webdataset=tuple(tars))
    if TRAIN_TAR in official or VAL_TAR in official:
        twice = next(((name, paths) for name, paths in copies.items() if len(paths) > 1), None)
        if twice:
            name, (first, second, *_) = twice
            raise LayoutError(
                f"{root}: {name} is there twice ({first} and {second}); keep one, or point --imagenet-dir at one copy's folder"
            )
        return Form(ARCHIVES, official.get(TRAIN_TAR), official.get(VAL_TAR), official.get(DEVKIT_TAR))
    return Form(TREE)


def find_classes(root: Path) -> list[str]:
    """The sorted wnids of the train folders, which define the class indices."""
    train = root / "train"
    if not train.is_dir():
        raise LayoutError(
            f"{train}: no train/ folder, no {TRAIN_TAR} and no WebDataset tars; point --imagenet-dir at the folder holding "
            "train/ and val/, the official archives, or the WebDataset tars"
        )
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not wnids:
        raise LayoutError(f"{train}: no class folders; expected train/<wnid>/*.JPEG")
    return wnids


def is_image_name(path: Path) -> bool:
    """An image by its name (`.JPEG`, `.jpg`, `.png`), not a hidden file: `.DS_Store`, `Thumbs.db` and the like are not samples."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    """The image files of one folder, in sorted order."""
    return [f for f in sorted(folder.iterdir()) if is_image_name(f) and f.is_file()]


def list_train(root: Path, wnids: list[str]) -> list[Sample]:
    """Every image file in every train class folder, in sorted order."""
    return [
        Sample(f"train/{wnid}/{f.name}", label)
        for label, wnid in enumerate(wnids)
        for f in image_files(root / "train" / wnid)
    ]


def list_val(root: Path, wnids: list[str], val_labels: Path | None = None) -> list[Sample]:
    """Validation samples from class folders, or from a flat folder plus a label file.

    Returns [] when there is no val/ folder at all (a train-only prepare is allowed).
    """
    val = root / "val"
    if not val.is_dir():
        return []
    index = {w: i for i, w in enumerate(wnids)}
    folders = sorted(p for p in val.iterdir() if p.is_dir() and WNID.match(p.name))
    if folders:
        unknown = [p.name for p in folders if p.name not in index]
        if unknown:
            raise LayoutError(f"{val / unknown[0]}: validation class {unknown[0]} has no train folder")
        return [Sample(f"val/{p.name}/{f.name}", index[p.name]) for p in folders for f in image_files(p)]
    files = [f.name for f in image_files(val)]
    if not files:
        return []
    labels = read_val_labels(root, files, val_labels)
    missing = [f for f in files if Path(f).stem not in labels]
    if missing:
        raise LayoutError(
            f"{val / missing[0]}: no label for this validation image ({len(missing)} unlabelled); pass the right --val-labels"
        )
    unknown = sorted({labels[Path(f).stem] for f in files} - index.keys())
    if unknown:
        raise LayoutError(f"validation label {unknown[0]} has no train folder; is --val-labels from the same release?")
    return [Sample(f"val/{f}", index[labels[Path(f).stem]]) for f in files]


def read_val_labels(root: Path, files: list[str], val_labels: Path | None) -> dict[str, str]:
    """Map each flat validation image stem to its wnid, from the Kaggle CSV or the devkit files."""
    path = val_labels or find_label_file(root, KAGGLE_VAL) or find_label_file(root, DEVKIT_VAL)
    if path is None:
        raise LayoutError(
            f"{root / 'val'}: flat validation images but no {KAGGLE_VAL} or {DEVKIT_VAL} in {root} or the "
            "three folders above it; pass --val-labels FILE"
        )
    if not path.is_file():
        raise LayoutError(f"{path}: validation label file not found")
    if path.suffix == ".csv":
        return read_kaggle_labels(path)
    meta = path.parent / DEVKIT_META
    if not meta.is_file():
        raise LayoutError(f"{meta}: the devkit ground truth needs meta.mat beside it to map ILSVRC2012_IDs to wnids")
    return read_devkit_labels(path, meta, files)


def find_label_file(root: Path, name: str) -> Path | None:
    """Look for `name` in root and up to three folders above (Kaggle nests ILSVRC/Data/CLS-LOC)."""
    for folder in [root, *root.resolve().parents[:3]]:
        for candidate in (folder / name, folder / "ILSVRC2012_devkit_t12" / "data" / name):
            if candidate.is_file():
                return candidate
    return None


def read_kaggle_labels(path: Path) -> dict[str, str]:
    """`ImageId,PredictionString` rows; the first token of PredictionString is the wnid.

    A row without an ImageId or a wnid is refused in one line naming the file and its line number.
    """
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise LayoutError(f"{path}: expected a Kaggle CSV with ImageId,PredictionString columns")
        labels = {}
        for row in reader:
            image, tokens = row["ImageId"], (row["PredictionString"] or "").split()
            if not image or not tokens:
                raise LayoutError(
                    f"{path}: line {reader.line_num}: {'no ImageId' if not image else f'{image} has an empty PredictionString'}"
                    "; every row needs an ImageId and a wnid first in PredictionString (use the file Kaggle ships)"
                )
            labels[image] = tokens[0]
    return labels


def read_devkit_labels(truth: Path, meta: Path, files: list[str]) -> dict[str, str]:
    """The devkit's two files on disk → {validation stem: wnid} (see `devkit_labels`)."""
    with meta.open("rb") as f:
        return devkit_labels(truth.read_text(), f, files, str(truth))


def devkit_labels(truth: str, meta: BinaryIO, files: list[str], where: str) -> dict[str, str]:
    """The devkit lists 1-based ILSVRC2012_IDs in sorted file order; meta.mat maps IDs to wnids.

    meta.mat's order is not sorted-wnid order, so the ID must go through the table. `truth` is the
    ground-truth file's text, `meta` meta.mat opened as a binary file, `where` names them in errors.
    """
    from scipy.io import loadmat

    try:
        synsets = loadmat(io.BytesIO(meta.read()), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(line) for line in truth.split()]
    except (ValueError, KeyError, OSError) as e:
        raise LayoutError(f"{where}: not the devkit's ground truth and meta.mat ({e})") from None
    if len(ids) != len(files):
        raise LayoutError(f"{where}: {len(ids)} labels for {len(files)} validation images")
    unknown = sorted(set(ids) - id_to_wnid.keys())
    if unknown:
        raise LayoutError(f"{where}: ILSVRC2012_ID {unknown[0]} is not in meta.mat; are both from the same devkit?")
    return {Path(f).stem: id_to_wnid[i] for f, i in zip(files, ids)}


def read_class_names(root: Path) -> dict[str, str]:
    """wnid → human name from LOC_synset_mapping.txt, when one is found; else {}."""
    path = find_label_file(root, SYNSET_NAMES)
    if path is None:
        return {}
    return dict(read_synset_lines(path))


def read_synset_lines(path: Path) -> list[tuple[str, str]]:
    """(wnid, name) per line of a synset mapping (`n01440764 tench, Tinca tinca`), in file order; a bare wnid is a line too."""
    rows = []
    for line in path.read_text().splitlines():
        wnid, _, name = line.strip().partition(" ")
        if WNID.match(wnid):
            rows.append((wnid, name.strip()))
    return rows

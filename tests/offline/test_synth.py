"""The synthetic ILSVRC tree: layout and names, label files, planted oddities, sizes, determinism, photo-like detail, class signal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from alexnet.pipeline.offline.image import encode_jpeg, resize_center_crop
from alexnet.pipeline.offline.synth import ODDITIES, ODDITIES_FILE, write_tree
from alexnet.tools.synth import synth

CLASSES, TRAIN, VAL, SEED = 6, 8, 3, 0  # six classes, so every oddity lands in its own class


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tree"
    out.mkdir()  # an existing empty folder is accepted
    summary = write_tree(out, CLASSES, TRAIN, VAL, SEED)
    assert f"{CLASSES} classes" in summary and str(out) in summary
    return out


def oddities(root: Path) -> dict[str, str]:
    """SYNTH_ODDITIES.txt as {relative path: kind}."""
    return dict(line.split() for line in (root / ODDITIES_FILE).read_text().splitlines())


def normal_images(root: Path) -> list[Path]:
    odd = oddities(root)
    return [p for p in sorted(root.rglob("*.JPEG")) if p.relative_to(root).as_posix() not in odd]


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_tree_shape_and_names(tree: Path) -> None:
    wnids = sorted(p.name for p in (tree / "train").iterdir())
    assert len(wnids) == CLASSES and all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    for wnid in wnids:
        files = sorted(p.name for p in (tree / "train" / wnid).iterdir())
        assert len(files) == TRAIN
        assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", f) for f in files)
    val = sorted(p.name for p in (tree / "val").iterdir())
    assert val == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, CLASSES * VAL + 1)]
    assert {p.name for p in tree.iterdir()} == {
        "train",
        "val",
        "LOC_val_solution.csv",
        "LOC_synset_mapping.txt",
        ODDITIES_FILE,
    }


def test_val_csv_matches_val_files(tree: Path) -> None:
    lines = (tree / "LOC_val_solution.csv").read_text().splitlines()
    assert lines[0] == "ImageId,PredictionString"
    wnids = {p.name for p in (tree / "train").iterdir()}
    labels = []
    for line in lines[1:]:
        stem, prediction = line.split(",")
        wnid, *box = prediction.split()
        assert wnid in wnids and len(box) == 4
        xmin, ymin, xmax, ymax = map(int, box)
        with Image.open(tree / "val" / f"{stem}.JPEG") as im:
            assert 0 <= xmin < xmax < im.width and 0 <= ymin < ymax < im.height
        labels.append(wnid)
    assert sorted(f"{s.split(',')[0]}.JPEG" for s in lines[1:]) == sorted(p.name for p in (tree / "val").iterdir())
    assert all(labels.count(w) == VAL for w in wnids)
    assert labels != sorted(labels), "validation images should come in shuffled class order"


def test_synset_mapping(tree: Path) -> None:
    lines = (tree / "LOC_synset_mapping.txt").read_text().splitlines()
    wnids = [line.split(" ", 1)[0] for line in lines]
    names = [line.split(" ", 1)[1] for line in lines]
    assert wnids == sorted(p.name for p in (tree / "train").iterdir())
    assert len(set(names)) == CLASSES and all(re.fullmatch(r"[a-z ]+, [A-Z][a-z]+ [a-z]+", n) for n in names)


def test_each_oddity_is_what_it_claims(tree: Path) -> None:
    odd = oddities(tree)
    assert sorted(odd.values()) == sorted(ODDITIES)
    assert len({Path(p).parent for p in odd}) == len(ODDITIES), "one oddity per class"
    for rel, kind in odd.items():
        path = tree / rel
        assert rel.startswith("train/") and path.suffix == ".JPEG"
        if kind == "empty":
            assert path.stat().st_size == 0
        elif kind == "not_an_image":
            assert path.stat().st_size > 0
            with pytest.raises(Image.UnidentifiedImageError):
                Image.open(path)
        else:
            with Image.open(path) as im:
                expected = {
                    "png": ("PNG", "RGB"),
                    "cmyk": ("JPEG", "CMYK"),
                    "grayscale": ("JPEG", "L"),
                    "progressive": ("JPEG", "RGB"),
                }
                assert (im.format, im.mode) == expected[kind], rel
                assert bool(im.info.get("progressive")) == (kind == "progressive"), rel


def test_normal_images_are_baseline_rgb_jpegs_of_imagenet_sizes(tree: Path) -> None:
    for path in normal_images(tree):
        with Image.open(path) as im:
            assert (im.format, im.mode) == ("JPEG", "RGB") and not im.info.get("progressive"), path
            w, h = im.size
        assert 0.59 <= w / h <= 1.81, path
        assert 200 <= min(w, h) <= 600 or max(w, h) > 2000, path


def test_some_big_image_once_train_has_twenty(tmp_path: Path) -> None:
    write_tree(tmp_path / "t", 1, 20, 1, 3)
    sizes = [image_size(p) for p in normal_images(tmp_path / "t") if "train" in p.parts]
    big = [s for s in sizes if max(s) > 2000]
    assert 1 <= len(big) <= 3
    assert all(200 <= min(s) <= 600 for s in sizes if s not in big)


def test_stored_jpegs_carry_photo_like_detail(tree: Path) -> None:
    """Loader benchmarks need realistic decode cost, so the stored 256×256 quality-90 JPEGs must be
    about as large as ImageNet's (25-40 KB). Measured on this tree: the old smooth gradients gave a
    mean of 0.222 byte/pixel (14.5 KB), the multi-scale detail gives 0.489 (32 KB)."""
    sizes = []
    for path in normal_images(tree):
        with Image.open(path) as im:
            sizes.append(len(encode_jpeg(resize_center_crop(im.convert("RGB")), 90)) / 256**2)
    assert np.mean(sizes) > 0.35, f"mean {np.mean(sizes):.3f} byte/pixel"


def test_same_arguments_give_identical_bytes(tree: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_tree(again, CLASSES, TRAIN, VAL, SEED)
    first = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    assert first == sorted(p.relative_to(again) for p in again.rglob("*"))
    for rel in first:
        if (tree / rel).is_file():
            assert (tree / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=re.escape(str(tmp_path))):
        write_tree(tmp_path, 2, 1, 1, 0)
    result = CliRunner().invoke(synth, ["--out", str(tmp_path)])
    assert result.exit_code == 1 and "exists and is not empty" in result.output and "Traceback" not in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def features(path: Path) -> np.ndarray:
    """Saturation-weighted hue histogram and mean colour of the 64×64 thumbnail."""
    with Image.open(path) as im:
        small = im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    hsv = np.asarray(small.convert("HSV"), np.float64).reshape(-1, 3) / 255
    hist = np.bincount((hsv[:, 0] * 12).astype(int) % 12, weights=hsv[:, 1] ** 2, minlength=12)
    return np.concatenate([hist / hist.sum(), np.asarray(small, np.float64).reshape(-1, 3).mean(0) / 255])


def test_classes_separable_by_nearest_centroid(tmp_path: Path) -> None:
    """A crude sanity check of the class signal: train centroids on 16 images per class, test on the rest."""
    root = tmp_path / "t"
    write_tree(root, 3, 24, 1, 7)
    correct = total = 0
    per_class = [
        [p for p in normal_images(root) if p.parent.name == w]
        for w in sorted(p.name for p in (root / "train").iterdir())
    ]
    centroids = np.stack([np.mean([features(p) for p in paths[:16]], 0) for paths in per_class])
    for label, paths in enumerate(per_class):
        for p in paths[16:]:
            correct += int(np.argmin(((centroids - features(p)) ** 2).sum(1)) == label)
            total += 1
    assert total >= 15 and correct / total > 0.8, f"{correct}/{total}"

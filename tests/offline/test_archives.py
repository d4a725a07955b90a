"""prepare straight from the official archives and from WebDataset copies: the same shards as the extracted tree."""

from __future__ import annotations

import shutil
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from imagenet_trees import (
    WNIDS,
    make_archives,
    make_flat_val,
    make_train,
    make_webdataset,
    tar_bytes,
    write_kaggle_csv,
)
from shard_data import kill_after_first_shard

from alexnet.pipeline.offline.ilsvrc import DEVKIT_TAR, TRAIN_TAR, VAL_TAR
from alexnet.pipeline.offline.synth import write_tree
from alexnet.pipeline.store.manifest import read_manifest
from alexnet.tools.prepare import prepare_cmd

VAL = [WNIDS[1], WNIDS[0], WNIDS[2], WNIDS[2]]
ID_ORDER = [WNIDS[2], WNIDS[0], WNIDS[1]]  # meta.mat's ID order is not sorted-wnid order
CLS_ORDER = [WNIDS[1], WNIDS[2], WNIDS[0]]  # a WebDataset copy's own index order, also not sorted


def run_prepare(source: Path, out: Path, *extra: str) -> Result:
    args = ["--imagenet-dir", str(source), "--out", str(out), "--shard-size", "5", "--workers", "2", *extra]
    return CliRunner().invoke(prepare_cmd, args)


def prepared(source: Path, out: Path, *extra: str) -> Path:
    result = run_prepare(source, out, *extra)
    assert result.exit_code == 0, result.output
    return out


def error_line(result: Result) -> str:
    """The one `Error: ...` line a failed command prints."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    return errors[0]


def shard_bytes(out: Path) -> dict[str, bytes]:
    """Every shard tar and index of OUT, by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.glob("*/*-*.*"))
        if p.suffix in (".tar", ".idx")
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 7 train images plus an empty file and a text file; 4 flat val images with a Kaggle CSV."""
    root = tmp_path_factory.mktemp("tree")
    make_train(root, per_class=7)
    (root / "train" / WNIDS[0] / f"{WNIDS[0]}_empty.JPEG").write_bytes(b"")
    (root / "train" / WNIDS[1] / f"{WNIDS[1]}_text.JPEG").write_text("not a picture")
    write_kaggle_csv(root / "LOC_val_solution.csv", make_flat_val(root, VAL), VAL)
    return root


@pytest.fixture(scope="module")
def reference(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extracted route's output: what every other form must reproduce byte for byte."""
    return prepared(tree, tmp_path_factory.mktemp("ref") / "out")


@pytest.fixture(scope="module")
def archives(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images as the official archives, one folder below DIR (as some downloads leave them)."""
    root = tmp_path_factory.mktemp("archives")
    make_archives(tree, root / "ILSVRC2012", VAL, ID_ORDER)
    return root


@pytest.fixture(scope="module")
def from_archives(archives: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(archives, tmp_path_factory.mktemp("arch") / "out")


def test_official_archives_give_the_extracted_routes_shards(reference: Path, from_archives: Path) -> None:
    assert shard_bytes(from_archives) == shard_bytes(reference)
    ref, got = read_manifest(reference), read_manifest(from_archives)
    assert got["complete"] and got["classes"] == ref["classes"]
    for split in ("train", "val"):
        assert got["splits"][split]["shards"] == ref["splits"][split]["shards"]
        assert got["splits"][split]["class_counts"] == ref["splits"][split]["class_counts"]


def test_undecodable_members_are_quarantined_with_archive_and_member(from_archives: Path) -> None:
    quarantine = {q["path"]: q["reason"] for q in read_manifest(from_archives)["splits"]["train"]["quarantine"]}
    assert quarantine == {
        f"ILSVRC2012/{TRAIN_TAR}/{WNIDS[0]}.tar/{WNIDS[0]}_empty.JPEG": "empty file",
        f"ILSVRC2012/{TRAIN_TAR}/{WNIDS[1]}.tar/{WNIDS[1]}_text.JPEG": "not an image Pillow can identify",
    }


def test_kill_and_resume_on_the_archive_route_is_byte_identical(
    archives: Path, from_archives: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from alexnet.tools.prepare import prepare_cmd; prepare_cmd()"]
    cmd += ["--imagenet-dir", str(archives), "--out", str(out), "--shard-size", "5", "--workers", "1"]
    kill_after_first_shard(cmd, out)
    assert not read_manifest(out)["complete"]
    result = run_prepare(archives, out)
    assert result.exit_code == 0, result.output
    assert "finished shards kept" in result.output and "train: " in result.output
    assert shard_bytes(out) == shard_bytes(from_archives)
    assert (out / "manifest.json").read_bytes() == (from_archives / "manifest.json").read_bytes()


def test_val_labels_can_come_from_a_kaggle_csv(tree: Path, archives: Path, reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for name in (TRAIN_TAR, VAL_TAR):
        (root / name).symlink_to(archives / "ILSVRC2012" / name)
    assert "ILSVRC2012_devkit_t12.tar.gz" in error_line(run_prepare(root, tmp_path / "refused"))
    out = prepared(root, tmp_path / "out", "--val-labels", str(tree / "LOC_val_solution.csv"))
    assert shard_bytes(out) == shard_bytes(reference)


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def test_truncated_train_archive_is_one_line_naming_archive_and_member(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(archives, root)
    train = root / "ILSVRC2012" / TRAIN_TAR
    with tarfile.open(train) as outer:
        last = outer.getmembers()[-1]
    truncate(train, last.offset_data + last.size // 2)  # cut inside the last class tar
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert TRAIN_TAR in line and f"{last.name}" in line and "truncated" in line


def test_archive_cut_at_a_member_boundary_is_caught(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(archives, root)
    val = root / "ILSVRC2012" / VAL_TAR
    with tarfile.open(val) as tar:
        members = tar.getmembers()
    second_last, last = members[-2], members[-1]
    truncate(val, last.offset)  # the last image and the end-of-archive blocks are gone: no partial member at all
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert VAL_TAR in line and second_last.name in line


def test_truncated_devkit_is_one_line(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(archives, root)
    devkit = root / "ILSVRC2012" / DEVKIT_TAR
    truncate(devkit, devkit.stat().st_size // 2)
    assert DEVKIT_TAR in error_line(run_prepare(root, tmp_path / "out"))


def test_unreadable_archive_is_one_line_naming_it(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(archives, root)
    (root / "ILSVRC2012" / VAL_TAR).write_bytes(b"<html>502 Bad Gateway</html>" * 40)  # what a failed download leaves
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert VAL_TAR in line and "unreadable at its first member" in line


def test_a_member_cut_after_planning_is_one_line_naming_it(archives: Path, tmp_path: Path) -> None:
    """The worker's own read checks its length too (a file shrinking under a running prepare)."""
    from alexnet.pipeline.offline.tar_sources import ArchiveError, read_member

    path = tmp_path / "short.tar"
    path.write_bytes(b"x" * 100)
    with pytest.raises(ArchiveError, match="short.tar: truncated in member a/b.JPEG"):
        read_member(path, 50, 100, "a/b.JPEG")


def test_mixed_forms_are_refused_naming_what_was_found(tree: Path, archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(tree, root)
    (root / TRAIN_TAR).symlink_to(archives / "ILSVRC2012" / TRAIN_TAR)
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert "more than one form" in line and "train/" in line and TRAIN_TAR in line


def test_a_devkit_beside_an_extracted_tree_is_not_another_form(
    tree: Path, archives: Path, reference: Path, tmp_path: Path
) -> None:
    root = tmp_path / "in"
    shutil.copytree(tree, root)
    (root / DEVKIT_TAR).symlink_to(archives / "ILSVRC2012" / DEVKIT_TAR)
    assert shard_bytes(prepared(root, tmp_path / "out")) == shard_bytes(reference)


def test_an_archive_found_twice_is_refused(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(archives, root)
    (root / "copy").mkdir()
    (root / "copy" / TRAIN_TAR).symlink_to(root / "ILSVRC2012" / TRAIN_TAR)
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert "twice" in line and "copy" in line


def test_train_tar_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / TRAIN_TAR).write_bytes(tar_bytes([("n01000001_1.JPEG", b"flat, not a class tar")]))
    line = error_line(run_prepare(tmp_path / "in", tmp_path / "out"))
    assert "n01000001_1.JPEG" in line and "class archive" in line


# -- WebDataset copies ----------------------------------------------------------------------------


@pytest.mark.parametrize("json_meta", [True, False])
def test_webdataset_with_a_synset_mapping_gives_the_extracted_routes_shards(
    tree: Path, reference: Path, tmp_path: Path, json_meta: bool
) -> None:
    root = make_webdataset(tree, tmp_path / "wds", VAL, CLS_ORDER, json_meta=json_meta)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} name of {w}\n" for w in CLS_ORDER))
    out = prepared(root, tmp_path / "out")
    assert shard_bytes(out) == shard_bytes(reference)
    assert read_manifest(out)["classes"][0]["name"] == f"name of {sorted(WNIDS)[0]}"


def test_webdataset_classes_from_the_json_members(tree: Path, reference: Path, tmp_path: Path) -> None:
    root = make_webdataset(tree, tmp_path / "wds", VAL, CLS_ORDER)
    out = prepared(root, tmp_path / "out")
    assert shard_bytes(out) == shard_bytes(reference)
    quarantined = {q["path"] for q in read_manifest(out)["splits"]["train"]["quarantine"]}
    assert {Path(p).name for p in quarantined} == {f"{WNIDS[0]}_empty.jpg", f"{WNIDS[1]}_text.jpg"}
    assert all(p.startswith("wds-train-") for p in quarantined)


def test_webdataset_classes_from_the_classes_flag(tree: Path, reference: Path, tmp_path: Path) -> None:
    root = make_webdataset(tree, tmp_path / "wds", VAL, CLS_ORDER, json_meta=False)
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"{w}\n" for w in CLS_ORDER))
    out = prepared(root, tmp_path / "out", "--classes", str(classes))
    assert shard_bytes(out) == shard_bytes(reference)


def test_webdataset_without_a_class_list_is_refused_saying_what_to_pass(tree: Path, tmp_path: Path) -> None:
    root = make_webdataset(tree, tmp_path / "wds", VAL, CLS_ORDER, json_meta=False)
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert "cannot show which wnid" in line and "--classes FILE" in line


def test_webdataset_class_list_contradicting_the_json_is_refused(tree: Path, tmp_path: Path) -> None:
    root = make_webdataset(tree, tmp_path / "wds", VAL, CLS_ORDER)
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"{w}\n" for w in sorted(WNIDS)))  # the wrong order for these .cls values
    line = error_line(run_prepare(root, tmp_path / "out", "--classes", str(classes)))
    assert "says" in line and "classes.txt" in line


def test_truncated_webdataset_tar_is_one_line_naming_tar_and_member(tree: Path, tmp_path: Path) -> None:
    root = make_webdataset(tree, tmp_path / "wds", VAL, CLS_ORDER)
    tar = root / "wds-train-0001.tar"
    with tarfile.open(tar) as t:
        member = t.getmembers()[4]
    truncate(tar, member.offset_data + 10)
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert "wds-train-0001.tar" in line and member.name in line


def test_webdataset_tar_named_neither_train_nor_val_is_refused(tree: Path, tmp_path: Path) -> None:
    root = make_webdataset(tree, tmp_path / "wds", VAL, CLS_ORDER)
    (root / "wds-train-0000.tar").rename(root / "wds-extra-0000.tar")
    assert "wds-extra-0000.tar" in error_line(run_prepare(root, tmp_path / "out"))


def test_classes_flag_is_refused_outside_webdataset(tree: Path, tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text(f"{WNIDS[0]}\n")
    assert "--classes is for WebDataset" in error_line(run_prepare(tree, tmp_path / "out", "--classes", str(classes)))


# -- synth --archives --------------------------------------------------------------------------------


def test_synth_archives_prepare_to_the_synth_trees_shards(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", 3, 6, 2, seed=4)
    summary = write_tree(tmp_path / "arch", 3, 6, 2, seed=4, archives=True)
    assert TRAIN_TAR in summary
    assert {p.name for p in (tmp_path / "arch").iterdir()} == {
        TRAIN_TAR,
        VAL_TAR,
        DEVKIT_TAR,
        "LOC_synset_mapping.txt",
        "SYNTH_ODDITIES.txt",
    }
    tree_out, arch_out = prepared(tmp_path / "tree", tmp_path / "t"), prepared(tmp_path / "arch", tmp_path / "a")
    assert shard_bytes(arch_out) == shard_bytes(tree_out)
    assert read_manifest(arch_out)["classes"] == read_manifest(tree_out)["classes"]
    listed = dict(line.split() for line in (tmp_path / "arch" / "SYNTH_ODDITIES.txt").read_text().splitlines())
    quarantined = {q["path"] for q in read_manifest(arch_out)["splits"]["train"]["quarantine"]}
    assert quarantined == {path for path, kind in listed.items() if kind in ("empty", "not_an_image")}

"""The input layouts docs/design.md lists, and the class-index convention."""

from pathlib import Path

import pytest
from imagenet_trees import WNIDS, make_flat_val, make_train, write_devkit, write_kaggle_csv

from alexnet.pipeline.offline import ilsvrc

SORTED = sorted(WNIDS)
VAL_LABELS = [WNIDS[0], WNIDS[2], WNIDS[1], WNIDS[0], WNIDS[1]]


def labels_by_stem(samples: list[ilsvrc.Sample]) -> dict[str, int]:
    return {s.key: s.label for s in samples}


def test_class_index_is_sorted_train_folder_position(tmp_path: Path) -> None:
    make_train(tmp_path, per_class=2)
    assert ilsvrc.find_classes(tmp_path) == SORTED
    train = ilsvrc.list_train(tmp_path, SORTED)
    assert len(train) == 6
    assert all(s.label == SORTED.index(s.path.split("/")[1]) for s in train)


def test_val_in_class_folders(tmp_path: Path) -> None:
    make_train(tmp_path, per_class=1)
    for i, wnid in enumerate(VAL_LABELS):
        folder = tmp_path / "val" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(b"x")
    val = ilsvrc.list_val(tmp_path, SORTED)
    assert labels_by_stem(val) == {f"ILSVRC2012_val_{i + 1:08d}": SORTED.index(w) for i, w in enumerate(VAL_LABELS)}


def test_flat_val_with_kaggle_csv_three_folders_up(tmp_path: Path) -> None:
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    make_train(root, per_class=1)
    stems = make_flat_val(root, VAL_LABELS)
    write_kaggle_csv(tmp_path / "LOC_val_solution.csv", stems, VAL_LABELS)
    (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"{w} name of {w}\n" for w in WNIDS))
    val = ilsvrc.list_val(root, SORTED)
    assert labels_by_stem(val) == {s: SORTED.index(w) for s, w in zip(stems, VAL_LABELS)}
    assert ilsvrc.read_class_names(root)[WNIDS[1]] == f"name of {WNIDS[1]}"


def test_flat_val_with_devkit_ids_not_in_sorted_order(tmp_path: Path) -> None:
    make_train(tmp_path, per_class=1)
    stems = make_flat_val(tmp_path, VAL_LABELS)
    id_order = [WNIDS[2], WNIDS[0], WNIDS[1]]  # meta.mat's order is not sorted-wnid order
    write_devkit(tmp_path / "ILSVRC2012_devkit_t12" / "data", VAL_LABELS, id_order)
    val = ilsvrc.list_val(tmp_path, SORTED)
    assert labels_by_stem(val) == {s: SORTED.index(w) for s, w in zip(stems, VAL_LABELS)}


def test_explicit_val_labels_wins(tmp_path: Path) -> None:
    make_train(tmp_path, per_class=1)
    stems = make_flat_val(tmp_path, VAL_LABELS)
    write_kaggle_csv(tmp_path / "LOC_val_solution.csv", stems, [WNIDS[0]] * len(stems))
    write_kaggle_csv(tmp_path / "right.csv", stems, VAL_LABELS)
    val = ilsvrc.list_val(tmp_path, SORTED, tmp_path / "right.csv")
    assert [s.label for s in val] == [SORTED.index(w) for w in VAL_LABELS]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: root.mkdir(), "no train/ folder"),
        (lambda root: (root / "train").mkdir(parents=True), "no class folders"),
    ],
)
def test_unusable_train(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "in"
    setup(root)
    with pytest.raises(ilsvrc.LayoutError, match=message):
        ilsvrc.find_classes(root)


def test_flat_val_without_labels_is_an_error(tmp_path: Path) -> None:
    make_train(tmp_path, per_class=1)
    make_flat_val(tmp_path, VAL_LABELS)
    with pytest.raises(ilsvrc.LayoutError, match="--val-labels"):
        ilsvrc.list_val(tmp_path, SORTED)

"""The on-disk contract: the shard reader, the manifest checks every reader goes through, pca.json's data check."""

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from shard_data import PCA, TRAIN_SHARDS, decode_stored, tar_samples, write_prepared

from alexnet.pipeline import make_loader
from alexnet.pipeline.offline.pca import compute_pca
from alexnet.pipeline.store.manifest import (
    NotPrepared,
    index_path,
    read_manifest,
    shards_digest,
    split_shards,
    write_manifest,
)
from alexnet.pipeline.store.pca_file import PCA_FILE, load_pca, load_stats, save_pca
from alexnet.pipeline.store.shards import ShardReader, decode_jpeg


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_prepared(tmp_path / "out")


def test_reader_numbers_samples_across_tars_in_manifest_order(data: Path) -> None:
    reader = ShardReader.for_split(data, "train")
    assert len(reader) == sum(TRAIN_SHARDS) and reader.sizes == TRAIN_SHARDS
    labels = [reader.sample(i)[1] for i in range(len(reader))]
    assert labels == list(range(len(reader)))  # train labels are the sample ids (shard_data)
    assert reader.key(25) == "img0025" and reader.tar_path(25).name == "train-000001.tar"
    assert bytes(reader.sample(25)[0]) == next(j for k, j, _ in tar_samples(reader.tar_path(25)) if k == "img0025")
    np.testing.assert_array_equal(decode_jpeg(reader.sample(3)[0]), decode_stored(data)[3].numpy())


def test_reader_pickles_without_its_maps_and_chunks_stay_in_one_tar(data: Path) -> None:
    reader = ShardReader.for_split(data, "train")
    reader.sample(0)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._maps == {} and clone.sample(47)[1] == 47
    chunks = reader.chunks(8)
    assert [len(c) for c in chunks] == [8, 8, 4, 8, 8, 4, 8]
    assert all(len(set(reader.tar[c])) == 1 for c in chunks)
    assert np.concatenate(chunks).tolist() == list(range(48))


def edit_manifest(data: Path, change) -> None:
    manifest = read_manifest(data)
    change(manifest)
    write_manifest(data, manifest)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: edit_manifest(d, lambda m: m.update(complete=False)), 'prepare did not finish ("complete": false)'),
        (lambda d: (d / "train" / "train-000001.tar").unlink(), "train-000001.tar: listed in the manifest but missing"),
        (lambda d: (d / "train" / "train-000002.tar").open("ab").write(b"\0" * 512), "bytes, the manifest says"),
        (lambda d: index_path(d / "train" / "train-000000.tar").unlink(), "missing index of train-000000.tar"),
        (lambda d: edit_manifest(d, lambda m: m["splits"].pop("train")), "the manifest lists no train shards"),
        (
            lambda d: edit_manifest(d, lambda m: m["splits"]["train"]["shards"][0].update(samples=19)),
            "20 samples, the manifest says 19",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["torch", "dali"])
def test_loaders_refuse_an_output_that_disagrees_with_its_manifest(data: Path, damage, message: str, kind: str) -> None:
    damage(data)
    with pytest.raises(NotPrepared, match="re-run") as e:
        make_loader(kind, data, "train", 8, workers=0 if kind == "torch" else 1)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_loaders_read_only_what_the_manifest_lists(data: Path) -> None:
    """A stray tar in the split folder is not data (the glob that used to find shards would have taken it)."""
    (data / "train" / "train-000009.tar").write_bytes((data / "train" / "train-000000.tar").read_bytes())
    index_path(data / "train" / "train-000009.tar").write_text(
        index_path(data / "train" / "train-000000.tar").read_text()
    )
    assert split_shards(data, "train") == [data / "train" / f"train-00000{i}.tar" for i in range(3)]
    loader = make_loader("torch", data, "train", 8, workers=0, last_batch="partial", train=False)
    assert sorted(int(v) for _, labels in loader for v in labels) == list(range(48))


def test_pca_json_records_the_shards_it_came_from(data: Path) -> None:
    stats = compute_pca(data, max_images=8, workers=1)
    assert stats.manifest_sha256 == shards_digest(read_manifest(data))
    edit_manifest(data, lambda m: m.setdefault("ffcv", {}).update(train={"path": "ffcv/train.beton"}))
    assert shards_digest(read_manifest(data)) == stats.manifest_sha256  # export-ffcv's entry is not data


def test_a_stale_pca_json_is_warned_about_in_one_line(data: Path, capsys) -> None:
    load_stats(data)
    assert capsys.readouterr().err == ""
    save_pca(dataclasses.replace(PCA, manifest_sha256="0" * 64), data / PCA_FILE)
    make_loader("torch", data, "val", 8, workers=0).close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "computed from other shards" in err[0] and "pca-stats --data" in err[0]


def test_a_malformed_pca_json_says_to_run_pca_stats_again(data: Path) -> None:
    (data / PCA_FILE).write_text(json.dumps({"mean": [0.5, 0.5, 0.5]}))
    with pytest.raises(FileNotFoundError, match="run `alexnet-tools pca-stats --data .*` again"):
        load_pca(data / PCA_FILE)

"""verify: a clean folder passes; a flipped byte, a broken index or a missing shard is named."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from imagenet_trees import make_prepared

from alexnet.pipeline.store.manifest import index_path
from alexnet.pipeline.store.shards import read_index
from alexnet.tools.verify import verify_cmd


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("out"))


@pytest.fixture
def copy(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "out"))


def run(out: Path):
    return CliRunner().invoke(verify_cmd, ["--data", str(out), "--workers", "2"])


def test_clean_folder_passes(prepared: Path) -> None:
    result = run(prepared)
    assert result.exit_code == 0 and "check out" in result.output


def test_flipped_byte_in_a_jpeg_is_caught(copy: Path) -> None:
    tar = copy / "train" / "train-000001.tar"
    jpg_offset, jpg_size, _, _ = read_index(index_path(tar))[1][2].tolist()
    data = bytearray(tar.read_bytes())
    data[jpg_offset + jpg_size // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    result = run(copy)
    assert result.exit_code == 1
    assert f"{tar}: sha256 differs from the manifest" in result.output


def test_index_that_disagrees_with_its_tar_is_caught(copy: Path) -> None:
    idx = index_path(copy / "val" / "val-000000.tar")
    idx.write_text(idx.read_text().replace("jpg 512 ", "jpg 1024 ", 1))
    result = run(copy)
    assert result.exit_code == 1 and f"{idx}: disagrees with its tar" in result.output


def test_missing_shard_and_leftover_temporary_are_listed(copy: Path) -> None:
    (copy / "train" / "train-000000.tar").unlink()
    (copy / "train" / "train-000009.tar.tmp").write_bytes(b"")
    result = run(copy)
    assert result.exit_code == 1
    assert "train-000000.tar: missing" in result.output
    assert "train-000009.tar.tmp: leftover temporary file" in result.output


def test_no_manifest_is_one_clear_line(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert result.exit_code == 1 and "no manifest" in result.output

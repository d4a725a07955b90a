"""prepare: shard contents, DALI indexes, manifest, resume after a kill, and its error messages."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from imagenet_trees import WNIDS, make_flat_val, make_train, write_kaggle_csv
from PIL import Image
from shard_data import kill_after_first_shard, tar_samples

from alexnet.pipeline.store.manifest import index_path, read_manifest
from alexnet.pipeline.store.shards import read_index
from alexnet.tools.prepare import prepare_cmd

VAL = [WNIDS[1], WNIDS[0], WNIDS[2], WNIDS[2]]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """3 classes × 7 train images (plus an empty file and a text file), 4 flat val images."""
    root = tmp_path_factory.mktemp("ilsvrc")
    make_train(root, per_class=7)
    (root / "train" / WNIDS[0] / f"{WNIDS[0]}_empty.JPEG").write_bytes(b"")
    (root / "train" / WNIDS[1] / f"{WNIDS[1]}_text.JPEG").write_text("not a picture")
    stems = make_flat_val(root, VAL)
    write_kaggle_csv(root / "LOC_val_solution.csv", stems, VAL)
    return root


def run_prepare(source: Path, out: Path, *extra: str) -> Result:
    args = ["--imagenet-dir", str(source), "--out", str(out), "--shard-size", "5", "--workers", "2", *extra]
    return CliRunner().invoke(prepare_cmd, args)


@pytest.fixture(scope="module")
def prepared(source: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = run_prepare(source, out)
    assert result.exit_code == 0, result.output
    return out


def error_line(result) -> str:
    """The one `Error: ...` line a failed command prints (progress bars may precede it)."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    return errors[0]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_counts_and_quarantine(prepared: Path) -> None:
    m = read_manifest(prepared)
    assert m["complete"] and [c["wnid"] for c in m["classes"]] == sorted(WNIDS)
    train, val = m["splits"]["train"], m["splits"]["val"]
    assert train["samples"] == 21 and val["samples"] == 4
    sizes = [s["samples"] for s in train["shards"]]
    assert len(sizes) == 5 and sum(sizes) == 21 and max(sizes) == 5  # 23 inputs in chunks of 5, 2 quarantined
    assert train["class_counts"] == [7, 7, 7]
    assert val["class_counts"] == [1, 1, 2]
    reasons = {Path(q["path"]).name: q["reason"] for q in train["quarantine"]}
    assert reasons == {
        f"{WNIDS[0]}_empty.JPEG": "empty file",
        f"{WNIDS[1]}_text.JPEG": "not an image Pillow can identify",
    }


def test_shards_are_plain_tars_whose_index_reads_back(prepared: Path) -> None:
    labels = {}
    for tar_path in sorted((prepared / "train").glob("*.tar")):
        keys, table = read_index(index_path(tar_path))
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
            assert names == [f"{key}.{ext}" for key in keys for ext in ("jpg", "cls")]
            for key, (jo, js, co, cs) in zip(keys, table.tolist()):
                assert tar.extractfile(f"{key}.jpg").read() == tar_path.read_bytes()[jo : jo + js]
                assert int(tar.extractfile(f"{key}.cls").read()) == int(tar_path.read_bytes()[co : co + cs])
        for key, jpeg, label in tar_samples(tar_path):
            labels[key] = label
            with Image.open(__import__("io").BytesIO(jpeg)) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (256, 256))
    assert all(labels[k] == sorted(WNIDS).index(k.split("_")[0]) for k in labels)


def test_index_is_what_dali_wds2idx_writes(prepared: Path, tmp_path: Path) -> None:
    wds2idx = Path(sys.executable).parent / "wds2idx"
    for tar_path in sorted((prepared / "val").glob("*.tar")):
        subprocess.run([str(wds2idx), str(tar_path), str(tmp_path / "ref.idx")], check=True, capture_output=True)
        assert (tmp_path / "ref.idx").read_text() == index_path(tar_path).read_text()


def test_train_is_shuffled_across_shards(prepared: Path) -> None:
    keys, _ = read_index(index_path(prepared / "train" / "train-000000.tar"))
    assert len({key.split("_")[0] for key in keys}) > 1


def test_resume_after_simulated_kill_is_byte_identical(source: Path, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    m = json.loads((out / "manifest.json").read_text())
    m["complete"] = False
    m["splits"]["train"]["shards"] = m["splits"]["train"]["shards"][:2]  # the kill came after shard 1
    m["splits"]["train"]["quarantine"] = []
    del m["splits"]["val"]["shards"][:]
    (out / "manifest.json").write_text(json.dumps(m))
    for n in (3, 4):
        (out / "train" / f"train-00000{n}.tar").unlink()
    (out / "train" / "train-000003.tar.tmp").write_bytes(b"half a shard")
    (out / "train" / "train-000002.tar").write_bytes(b"renamed but not in the manifest")
    result = run_prepare(source, out)
    assert result.exit_code == 0, result.output
    assert "2 finished shards kept" in result.output
    assert tree_bytes(out) == tree_bytes(prepared)


def test_resume_after_real_sigkill_is_byte_identical(source: Path, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-c",
        "from alexnet.tools.prepare import prepare_cmd; prepare_cmd()",
        "--imagenet-dir",
        str(source),
        "--out",
        str(out),
        "--shard-size",
        "5",
        "--workers",
        "1",
    ]
    kill_after_first_shard(cmd, out)
    result = run_prepare(source, out)
    assert result.exit_code == 0, result.output
    assert tree_bytes(out) == tree_bytes(prepared)


def test_other_settings_refused_unless_overwrite(source: Path, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    refused = run_prepare(source, out, "--quality", "80")
    assert refused.exit_code != 0 and "--overwrite" in refused.output
    assert tree_bytes(out) == tree_bytes(prepared)
    replaced = run_prepare(source, out, "--quality", "80", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert read_manifest(out)["settings"]["quality"] == 80


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no train/ folder"),
        (lambda root: (root / "train").mkdir(parents=True), "no class folders"),
        (lambda root: (make_train(root, 1), make_flat_val(root, VAL)), "no LOC_val_solution.csv"),
    ],
)
def test_unusable_input_is_one_clear_line(tmp_path: Path, make, message: str) -> None:
    root = tmp_path / "deep" / "er" / "still" / "in"
    root.parent.mkdir(parents=True)
    make(root)
    result = run_prepare(root, tmp_path / "out")
    assert message in error_line(result)


def test_out_under_a_file_is_one_clear_line(source: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = run_prepare(source, tmp_path / "file" / "out")
    assert "file/out" in error_line(result)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a tiny tmpfs")
def test_disk_full_is_one_clear_line_and_keeps_finished_shards(source: Path, prepared: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    half = sum(len(b) for b in tree_bytes(prepared).values()) // 2 // 1024
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={half}k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        result = run_prepare(source, mnt / "out")
        assert "disk full" in error_line(result)
        assert not list((mnt / "out").rglob("*.tmp"))
        m = read_manifest(mnt / "out")
        assert not m["complete"] and m["splits"]["train"]["shards"]
        for shard in m["splits"]["train"]["shards"]:
            assert (mnt / "out" / "train" / shard["name"]).stat().st_size == shard["bytes"]
    finally:
        subprocess.run(["umount", str(mnt)])


def test_shuffle_seed_decides_the_train_order(source: Path, prepared: Path, tmp_path: Path) -> None:
    """`Settings.shuffle_seed` is what prepare shuffles with (and what the manifest records)."""
    from alexnet.pipeline.offline.prepare import Settings, prepare

    def train_keys(out: Path) -> list[str]:
        return [
            key
            for s in read_manifest(out)["splits"]["train"]["shards"]
            for key in read_index(out / "train" / s["name"].replace(".tar", ".idx"))[0]
        ]

    prepare(root=source, out=tmp_path / "seed0", settings=Settings(shard_size=5, shuffle_seed=0), workers=2)
    prepare(root=source, out=tmp_path / "seed1", settings=Settings(shard_size=5, shuffle_seed=1), workers=2)
    assert train_keys(tmp_path / "seed0") == train_keys(prepared)  # the default is seed 0
    assert sorted(train_keys(tmp_path / "seed1")) == sorted(train_keys(prepared))
    assert train_keys(tmp_path / "seed1") != train_keys(prepared)
    assert read_manifest(tmp_path / "seed1")["settings"]["shuffle_seed"] == 1


def test_stray_non_image_files_are_not_samples(source: Path, prepared: Path, tmp_path: Path) -> None:
    """`.DS_Store`, `Thumbs.db` and the like in class folders change nothing: same input digest, same shards."""
    src = tmp_path / "src"
    shutil.copytree(source, src)
    for folder in [src / "train" / WNIDS[0], src / "train" / WNIDS[2], src / "val"]:
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (folder / "._n01000001_0.JPEG").write_bytes(b"\0\5\26\7")  # macOS resource fork
    result = run_prepare(src, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "out")["inputs"] == read_manifest(prepared)["inputs"]
    assert tree_bytes(tmp_path / "out" / "train") == tree_bytes(prepared / "train")

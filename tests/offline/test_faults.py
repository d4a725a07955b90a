"""Faults and bad input in the offline tools (issue 14): each gets one clear line, nothing is lost or left behind.

Every case builds its own data: a decompression bomb, extreme aspect ratios, empty classes, bad
label rows, unreadable files and folders, a full disk at several points, Ctrl-C at several
points of a real `alexnet-tools prepare`, `--overwrite` beside derived files, same-size shard
corruption, unlisted files, and tools pointed at an unfinished prepare.
"""

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from imagenet_trees import WNIDS, make_flat_val, make_train, photo, write_kaggle_csv
from PIL import Image

from alexnet.pipeline import make_loader
from alexnet.pipeline.offline.image import BadImage, Unreadable, load_rgb
from alexnet.pipeline.offline.pca import compute_pca
from alexnet.pipeline.store.manifest import NotPrepared, index_path, read_manifest, write_manifest
from alexnet.pipeline.store.pca_file import PCA_FILE, save_pca
from alexnet.pipeline.store.shards import ShardReader, read_index
from alexnet.tools.pca_stats import pca_stats
from alexnet.tools.prepare import prepare_cmd
from alexnet.tools.verify import verify_cmd

PEAK_MEMORY_BOUND_MB = 64  # stated bound: one image of any shape raises a worker's peak RSS by less than this
SCRIPT = Path(sys.executable).parent / "alexnet-tools"  # the console script, as a user runs it
ALEXNET_TOOLS = (
    [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", "from alexnet.tools.cli import main; main()"]
)
VAL = [WNIDS[1], WNIDS[0], WNIDS[2], WNIDS[2]]


def run_prepare(source: Path, out: Path, *extra: str) -> Result:
    args = ["--imagenet-dir", str(source), "--out", str(out), "--shard-size", "5", "--workers", "2", *extra]
    return CliRunner().invoke(prepare_cmd, args)


def error_line(result: Result) -> str:
    """The one `Error: ...` line a failed command prints (progress bars may precede it)."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    return errors[0]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """3 classes × 5 train images, 4 flat val images labelled by a Kaggle CSV."""
    root = tmp_path_factory.mktemp("ilsvrc")
    make_train(root, per_class=5)
    stems = make_flat_val(root, VAL)
    write_kaggle_csv(root / "LOC_val_solution.csv", stems, VAL)
    return root


@pytest.fixture(scope="module")
def prepared(source: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "out"
    result = run_prepare(source, out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def copy_of(tmp_path: Path):
    def copy(folder: Path) -> Path:
        return Path(shutil.copytree(folder, tmp_path / folder.name))

    return copy


# --- images: decompression bombs, extreme shapes, unreadable files ---------------------------------


def write_png_bomb(path: Path, side: int = 20000) -> None:
    """A side×side 1-bit black PNG: a few hundred kB on disk, 400 M pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\0" * (1 + side // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_decompression_bomb_is_quarantined_and_the_rerun_resumes(tmp_path: Path) -> None:
    root, out = tmp_path / "src", tmp_path / "out"
    make_train(root, per_class=3)
    bomb = root / "train" / WNIDS[0] / f"{WNIDS[0]}_bomb.JPEG"
    write_png_bomb(bomb)
    assert bomb.stat().st_size < 1 << 20
    result = run_prepare(root, out)
    assert result.exit_code == 0, result.output
    assert "train: 9 written, 1 quarantined" in result.output
    (entry,) = read_manifest(out)["splits"]["train"]["quarantine"]
    assert entry["path"] == f"train/{WNIDS[0]}/{bomb.name}" and entry["reason"].startswith("decompression bomb")
    again = run_prepare(root, out)  # no --overwrite needed: the input has not changed
    assert again.exit_code == 0 and "2 finished shards kept" in again.output, again.output


PEAK_RSS_SCRIPT = """
import resource, sys
from pathlib import Path
from alexnet.pipeline.offline.image import prepare_image
from alexnet.pipeline.store.shards import decode_jpeg
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shapes = [decode_jpeg(prepare_image(Path(p), 90)[0]).shape for p in sys.argv[1:]]
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, shapes)
"""


def test_extreme_aspect_ratios_stay_under_a_memory_bound(tmp_path: Path) -> None:
    """1×20000 and 20000×1 images (JPEG and PNG): resizing them whole to short side 256 would take GBs."""
    rng = np.random.default_rng(0)
    paths = []
    for h, w in [(20000, 1), (1, 20000)]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for fmt in ("JPEG", "PNG"):
            paths.append(tmp_path / f"{h}x{w}.{fmt}")
            im.save(paths[-1], fmt)
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, *map(str, paths)], capture_output=True, text=True, check=True
    )
    growth_mb, shapes = done.stdout.split(maxsplit=1)
    assert shapes.strip() == str([(256, 256, 3)] * 4)
    assert float(growth_mb) < PEAK_MEMORY_BOUND_MB, done.stdout


def test_a_file_the_os_will_not_read_is_unreadable_not_a_bad_image(tmp_path: Path) -> None:
    (tmp_path / "gone.JPEG").mkdir()  # listed as a file, then replaced: open() fails in the OS, not in the decoder
    with pytest.raises(Unreadable, match="^cannot read: Is a directory$"):
        load_rgb(tmp_path / "gone.JPEG")
    (tmp_path / "cut.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    with pytest.raises(BadImage) as e:
        load_rgb(tmp_path / "cut.JPEG")
    assert not isinstance(e.value, Unreadable)


def drop_file_permission_override() -> None:
    """In a child about to exec: lose root's power to read any file, so that mode 000 means unreadable."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set: gone after exec
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_tools(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`alexnet-tools ARGS` in a subprocess that file permissions apply to, even when the tests run as root."""
    preexec = drop_file_permission_override if os.geteuid() == 0 else None
    try:
        return subprocess.run(
            [*ALEXNET_TOOLS, *args], capture_output=True, text=True, timeout=timeout, preexec_fn=preexec
        )
    except subprocess.SubprocessError as e:
        if "preexec_fn" in str(e):  # what Popen raises when drop_file_permission_override failed
            pytest.skip("cannot drop CAP_DAC_OVERRIDE here, so root reads every file")
        raise


def test_unreadable_file_is_counted_apart_and_retried_by_a_rerun(source: Path, prepared: Path, tmp_path: Path) -> None:
    root, out = Path(shutil.copytree(source, tmp_path / "src")), tmp_path / "out"
    locked = root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    locked.chmod(0)
    try:
        done = run_tools(
            "prepare", "--imagenet-dir", str(root), "--out", str(out), "--shard-size", "5", "--workers", "2"
        )
    finally:
        locked.chmod(0o644)
    assert done.returncode == 0, done.stderr
    assert "train: 14 written, 0 quarantined" in done.stdout
    assert "warning: train: 1 file(s) cannot be read" in done.stdout
    (entry,) = read_manifest(out)["splits"]["train"]["quarantine"]
    assert entry["path"] == f"train/{WNIDS[1]}/{locked.name}" and entry["reason"] == "cannot read: Permission denied"
    result = run_prepare(root, out)  # readable again: its shard is rebuilt with it, the rest kept
    assert result.exit_code == 0 and "2 finished shards kept" in result.output, result.output
    assert tree_bytes(out) == tree_bytes(prepared)


def test_unreadable_input_folder_is_named_as_unreadable_input(source: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(source, tmp_path / "src"))
    folder = root / "train" / WNIDS[2]
    folder.chmod(0)
    try:
        done = run_tools("prepare", "--imagenet-dir", str(root), "--out", str(tmp_path / "out"))
    finally:
        folder.chmod(0o755)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"Error: {folder}: cannot read this input (Permission denied); "
        "fix its permissions or run as a user who can read it"
    )


# --- classes and labels --------------------------------------------------------------------------


def test_all_class_folders_empty_is_refused(tmp_path: Path) -> None:
    for wnid in WNIDS:
        (tmp_path / "src" / "train" / wnid).mkdir(parents=True)
    line = error_line(run_prepare(tmp_path / "src", tmp_path / "out"))
    assert (
        line == f"Error: {tmp_path / 'src' / 'train'}: the 3 class folders hold no images; expected train/<wnid>/*.JPEG"
    )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_one_empty_class_is_named_in_the_summary(tmp_path: Path) -> None:
    make_train(tmp_path / "src", per_class=2)
    for f in (tmp_path / "src" / "train" / WNIDS[1]).iterdir():
        f.unlink()
    result = run_prepare(tmp_path / "src", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"warning: train: 1 class(es) have no images: {WNIDS[1]}" in result.output
    assert read_manifest(tmp_path / "out")["splits"]["train"]["class_counts"] == [0, 2, 2]  # sorted: WNIDS[1] first


def test_kaggle_row_with_empty_prediction_string_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_train(root, per_class=1)
    stems = make_flat_val(root, VAL)
    write_kaggle_csv(root / "LOC_val_solution.csv", stems, VAL)
    csv = root / "LOC_val_solution.csv"
    lines = csv.read_text().splitlines()
    lines[2] = f"{stems[1]},"
    csv.write_text("\n".join(lines) + "\n")
    line = error_line(run_prepare(root, tmp_path / "out"))
    assert line.startswith(f"Error: {csv}: line 3: {stems[1]} has an empty PredictionString;")


# --- leftovers: a full disk at several points, a killed run's temporaries ---------------------------


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A tmpfs mounted at tmp_path/small (root only); yields a function that sets its size in KiB."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tiny tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")

    def resize(kib: int) -> Path:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(mnt)], check=True)
        return mnt

    yield resize
    subprocess.run(["umount", str(mnt)])


def test_disk_full_at_any_point_leaves_no_temporary_and_a_rerun_completes(source: Path, prepared: Path, tmpfs) -> None:
    """The disk fills during a tar, an index, a manifest write: each time one line, no `.tmp` left."""
    total = sum(len(b) for b in tree_bytes(prepared).values()) // 1024
    for kib in sorted({4, 12, total // 4, total // 2, total * 3 // 4, total - 8}):
        shutil.rmtree(tmpfs(total * 4) / "out", ignore_errors=True)
        mnt = tmpfs(kib)
        assert "disk full" in error_line(run_prepare(source, mnt / "out")), kib
        assert temporaries(mnt) == [], kib
        if (mnt / "out" / "manifest.json").exists():
            m = read_manifest(mnt / "out")
            assert not m["complete"]
            for split, record in m["splits"].items():
                for shard in record["shards"]:
                    assert (mnt / "out" / split / shard["name"]).stat().st_size == shard["bytes"]
        tmpfs(total * 4)
        result = run_prepare(source, mnt / "out")
        assert result.exit_code == 0, result.output
        assert tree_bytes(mnt / "out") == tree_bytes(prepared), kib


def test_killed_runs_temporaries_are_removed_by_the_next_run(prepared: Path, source: Path, copy_of) -> None:
    out = copy_of(prepared)
    leftovers = [out / "manifest.json.tmp", out / "train" / "train-000001.idx.tmp", out / "val" / "val-000000.tar.tmp"]
    for path in leftovers:
        path.write_bytes(b"half written")
    result = run_prepare(source, out)
    assert result.exit_code == 0, result.output
    assert temporaries(out) == [] and tree_bytes(out) == tree_bytes(prepared)


# --- Ctrl-C at several points of a real `alexnet-tools prepare` -------------------------------------


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory) -> Path:
    """3 classes × 8 train and 3 val PNGs of 1000×800 (~40 ms each to decode), so each stage lasts a while."""
    root = tmp_path_factory.mktemp("slow")
    first = root / "one.png"
    photo(np.random.default_rng(0), 800, 1000).save(first, "PNG", compress_level=1)
    for wnid in WNIDS:
        for split, n in (("train", 8), ("val", 3)):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                shutil.copyfile(first, root / split / wnid / f"{wnid}_{split}{i}.JPEG")
    first.unlink()
    return root


def slow_args(root: Path, out: Path) -> list[str]:
    return ["--imagenet-dir", str(root), "--out", str(out), "--shard-size", "4", "--workers", "2"]


@pytest.fixture(scope="module")
def slow_prepared(slow_source: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slow-out") / "out"
    result = CliRunner().invoke(prepare_cmd, slow_args(slow_source, out))
    assert result.exit_code == 0, result.output
    return out


POINTS = {
    "pool starting": lambda out: out.is_dir(),
    "inside the first shard": lambda out: any(out.glob("train/*.tar.tmp")),
    "after a train shard": lambda out: (out / "manifest.json").is_file(),
    "at the start of val": lambda out: (out / "val").is_dir(),
}


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("point", POINTS)
def test_ctrl_c_ends_prepare_at_once_with_one_line(point: str, slow_source: Path, slow_prepared: Path, tmp_path: Path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it to the main process and its workers."""
    out = tmp_path / "out"
    cmd = [*ALEXNET_TOOLS, "prepare", *slow_args(slow_source, out)]
    # A terminal's foreground job: SIGINT at its default even when this test runs as a background job
    # (which inherits SIGINT ignored, and Python then never raises KeyboardInterrupt).
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and not POINTS[point](out) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, f"prepare ended before {point}"
    os.killpg(proc.pid, signal.SIGINT)
    try:  # the interpreter's own exit (torch is loaded) takes about a second of this
        _, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"prepare still running 20 s after Ctrl-C {point}")
    assert proc.returncode == 130
    lines = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    lines = [line for line in lines if line and not line.startswith(("prepare ", "check "))]  # progress bars
    assert lines == [f"interrupted; run the same command again to resume (finished shards in {out} are kept)"]
    assert temporaries(out) == []
    if (out / "manifest.json").exists():
        assert not read_manifest(out)["complete"]
        refused = CliRunner().invoke(pca_stats, ["--data", str(out)])
        assert "prepare did not finish" in error_line(refused)
    result = CliRunner().invoke(prepare_cmd, slow_args(slow_source, out))
    assert result.exit_code == 0, result.output
    assert tree_bytes(out) == tree_bytes(slow_prepared)


# --- re-runs with other settings: the refusal, and --overwrite beside derived files -----------------


@pytest.mark.parametrize(
    "change, extra, difference",
    [
        (lambda root: None, ["--quality", "80"], "quality: 90 → 80"),
        (lambda root: None, ["--shard-size", "6"], "shard_size: 5 → 6"),
        (lambda root: next((root / "train" / WNIDS[0]).iterdir()).unlink(), [], "train input: 15 → 14 images"),
        (lambda root: (root / "val").rename(root / "gone"), [], "val input: 4 → 0 images"),
        (
            lambda root: write_kaggle_csv(
                root / "LOC_val_solution.csv", [f"ILSVRC2012_val_{i:08d}" for i in range(1, 5)], VAL[::-1]
            ),
            [],
            "val input: other files or labels (4 images either way)",
        ),
    ],
)
def test_settings_mismatch_names_what_differs(
    source: Path, prepared: Path, tmp_path: Path, copy_of, change, extra, difference
) -> None:
    root, out = Path(shutil.copytree(source, tmp_path / "src")), copy_of(prepared)
    change(root)
    args = ["--imagenet-dir", str(root), "--out", str(out), "--workers", "2", "--shard-size", "5", *extra]
    line = error_line(CliRunner().invoke(prepare_cmd, args))
    assert line == (
        f"Error: {out}: holds shards made with other settings or input ({difference}); "
        "use another --out, or --overwrite to replace them"
    )
    assert tree_bytes(out) == tree_bytes(prepared)


def test_overwrite_removes_pca_and_ffcv_files_and_says_so(source: Path, prepared: Path, copy_of) -> None:
    out = copy_of(prepared)
    assert CliRunner().invoke(pca_stats, ["--data", str(out), "--workers", "2"]).exit_code == 0
    (out / "ffcv").mkdir()
    (out / "ffcv" / "train.beton").write_bytes(b"exported from the old shards")
    m = read_manifest(out)
    m["ffcv"] = {"train": {"path": "ffcv/train.beton", "samples": 15}}
    write_manifest(out, m)
    result = run_prepare(source, out, "--quality", "80", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (
        f"--overwrite: removed pca.json, ffcv/, manifest.json, train/, val/ from {out} (quality: 90 → 80)"
        in result.output
    )
    assert not (out / PCA_FILE).exists() and not (out / "ffcv").exists()
    m = read_manifest(out)
    assert m["complete"] and m["settings"]["quality"] == 80 and "ffcv" not in m


# --- verify and the repair it advises -------------------------------------------------------------


def run_verify(out: Path) -> Result:
    return CliRunner().invoke(verify_cmd, ["--data", str(out), "--workers", "2"])


def test_same_size_corruption_is_rebuilt_by_a_rerun(source: Path, prepared: Path, copy_of) -> None:
    out = copy_of(prepared)
    tar = out / "train" / "train-000001.tar"
    jpg_offset, jpg_size, _, _ = read_index(index_path(tar))[1][1].tolist()
    data = bytearray(tar.read_bytes())
    data[jpg_offset + jpg_size // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    idx = index_path(out / "val" / "val-000000.tar")
    idx.write_text(idx.read_text().replace("jpg 512 ", "jpg 000 ", 1))  # same size, wrong offset
    assert "sha256 differs from the manifest" in run_verify(out).output
    result = run_prepare(source, out)
    assert result.exit_code == 0, result.output
    assert "2 finished shards kept, 1 rebuilt (their bytes differed from the manifest)" in result.output
    assert "0 finished shards kept, 1 rebuilt" in result.output  # val: the index no longer matched its tar
    assert tree_bytes(out) == tree_bytes(prepared)
    assert run_verify(out).exit_code == 0


def test_unlisted_files_are_reported_and_never_read(prepared: Path, copy_of) -> None:
    out = copy_of(prepared)
    stray = [out / "train" / "train-000099.tar", out / "train" / "train-000099.idx", out / "val" / "notes.txt"]
    shutil.copyfile(out / "train" / "train-000000.tar", stray[0])
    shutil.copyfile(out / "train" / "train-000000.idx", stray[1])
    stray[2].write_text("my notes")
    result = run_verify(out)
    assert result.exit_code == 1
    for path in stray:
        assert f"{path}: not listed in the manifest; no tool reads it: remove it" in result.output
    assert stray[0] not in ShardReader.for_split(out, "train").tars


# --- the tools trust only a finished prepare --------------------------------------------------------


@pytest.fixture(scope="module")
def with_pca(prepared: Path, tmp_path_factory) -> Path:
    out = Path(shutil.copytree(prepared, tmp_path_factory.mktemp("pca") / "out"))
    save_pca(compute_pca(out, None, 2), out / PCA_FILE)
    return out


def unfinish(out: Path) -> None:
    """What a prepare killed after 1 of 3 train shards leaves: `"complete": false`, later shards absent."""
    m = json.loads((out / "manifest.json").read_text())
    m["complete"] = False
    del m["splits"]["train"]["shards"][1:]
    (out / "manifest.json").write_text(json.dumps(m))
    for tar in sorted((out / "train").glob("*.tar"))[1:]:
        tar.unlink()


def test_pca_stats_refuses_an_unfinished_prepare(with_pca: Path, copy_of) -> None:
    out = copy_of(with_pca)
    (out / PCA_FILE).unlink()
    unfinish(out)
    line = error_line(CliRunner().invoke(pca_stats, ["--data", str(out), "--workers", "2"]))
    assert 'prepare did not finish ("complete": false)' in line
    assert not (out / PCA_FILE).exists()


@pytest.mark.parametrize("kind", ["torch", "dali"])
@pytest.mark.parametrize("damage", ["unfinished", "missing shard"])
def test_loaders_refuse_an_unfinished_or_incomplete_output(with_pca: Path, copy_of, kind: str, damage: str) -> None:
    out = copy_of(with_pca)
    if damage == "unfinished":
        unfinish(out)
        message = "prepare did not finish"
    else:
        (out / "val" / "val-000000.tar").unlink()
        message = f"{out / 'val' / 'val-000000.tar'}: listed in the manifest but missing"
    split = "train" if damage == "unfinished" else "val"
    with pytest.raises(NotPrepared, match=message.replace("(", r"\(")):
        make_loader(kind, out, split, 4, workers=1)


# --- issue 22: no empty shards ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dali", "torch", "ffcv", "ffcv-raw"])
def test_quarantine_at_shard_size_one_writes_no_empty_shard_and_every_loader_reads_it(
    kind: str, shard_size_one: Path
) -> None:
    """synth's planted empty and non-image files, one image per shard: each would have been a 0-sample
    shard (DALI refuses its index). No such shard is written, verify passes, and every loader reads all."""
    if kind.startswith("ffcv") and __import__("importlib").util.find_spec("ffcv") is None:
        pytest.skip("FFCV is not installed")
    out = shard_size_one
    manifest = read_manifest(out)
    train = manifest["splits"]["train"]
    assert len(train["quarantine"]) == 2 and all(s["samples"] == 1 for s in train["shards"])
    assert sorted(p.name for p in (out / "train").glob("*.tar")) == sorted(s["name"] for s in train["shards"])
    loader = make_loader(kind, out, "train", 2, "cpu", workers=1)
    try:
        labels = [int(v) for _, batch_labels in loader for v in batch_labels]
    finally:
        loader.close()
    assert len(labels) == train["samples"] == 22
    assert sorted(labels) == sorted(i for i, n in enumerate(train["class_counts"]) for _ in range(n))


@pytest.fixture(scope="module")
def shard_size_one(tmp_path_factory) -> Path:
    """synth (3 classes × 8 train images, 2 of them planted bad) → prepare --shard-size 1 → verify → pca-stats
    → export-ffcv (both kinds)."""
    from alexnet.pipeline.offline.synth import write_tree
    from alexnet.tools.export_ffcv import export_ffcv

    root = tmp_path_factory.mktemp("shard-size-one")
    write_tree(root / "src", classes=3, train_per_class=8, val_per_class=2, seed=0)
    out = root / "out"
    result = CliRunner().invoke(
        prepare_cmd, ["--imagenet-dir", str(root / "src"), "--out", str(out), "--shard-size", "1", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    for command, extra in ((verify_cmd, []), (pca_stats, [])):
        done = CliRunner().invoke(command, ["--data", str(out), *extra])
        assert done.exit_code == 0, done.output
    if __import__("importlib").util.find_spec("ffcv") is not None:
        for extra in ([], ["--raw"]):
            done = CliRunner().invoke(export_ffcv, ["--data", str(out), "--workers", "1", *extra])
            assert done.exit_code == 0, done.output
    return out

"""`alexnet-train` end to end on the CPU: a tiny prepared folder, both loaders, eval-only, resume, refusals,
and a run that survives its machine: SIGTERM and SIGKILL then --resume end bit for bit as an uninterrupted
run, a corrupt sample and a full disk stop in one line with the checkpoint kept.

The folder is synth's ILSVRC-shaped tree (3 classes, 8 train and 4 val images each; two planted
undecodable files land in quarantine, leaving 22 train images) prepared into 8-image shards, so one
epoch at batch 4 is 5 steps. Each training run writes full-size AlexNet checkpoints (hundreds of MB),
so runs are shared between tests where a test only reads them.
"""

import dataclasses
import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from interrupt import signal_at_step

from alexnet.pipeline.loaders.contract import LoaderConfig, sample_order
from alexnet.pipeline.store.manifest import read_manifest, shards_digest
from alexnet.pipeline.store.pca_file import PCA_FILE, load_stats, save_pca
from alexnet.pipeline.store.shards import ShardReader
from alexnet.tools.train import main

KINDS = ["dali", "torch"]
BATCH = 4
STEPS_PER_EPOCH = 5  # 22 train images // 4
VAL_IMAGES = 12


def cli(data: Path, *args: str) -> Result:
    """alexnet-train on `data` on the CPU with batch 4 and one loader worker (so one torch thread; the
    loaders' own tests cover two workers)."""
    return CliRunner().invoke(main, ["--data", str(data), "--device", "cpu", "-b", str(BATCH), "-j", "1", *args])


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def json_line(output: str) -> dict:
    """The last line of `output` that is a JSON object."""
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def data(tiny_data) -> Path:
    return tiny_data


@pytest.fixture(scope="module", params=KINDS)
def trained(request, data, tmp_path_factory) -> tuple[str, Path, Result]:
    """One epoch with each loader: (loader, run folder, CLI result)."""
    run = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    result = cli(data, "--loader", request.param, "--epochs", "1", "--log-every", "2", "--run-dir", str(run))
    return request.param, run, result


def test_end_to_end(trained):
    kind, run, result = trained
    assert result.exit_code == 0, result.output
    assert f"stopped at epoch 1, step {STEPS_PER_EPOCH}" in result.output
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["loader"] == kind and config["batch_size"] == BATCH
    assert config["workers"] == 1 and config["torch_threads"] == 1  # -j 1 sets both on the CPU
    assert config["cudnn_benchmark"] is False  # the CPU keeps bit-exact kernels
    if kind == "dali":  # no nvJPEG buffers on the CPU
        assert config["dali_decoder_buffers"] == {
            "threads": 1,
            "padding_bytes": 0,
            "pinned_host_bytes": 0,
            "device_bytes": 0,
        }
    assert [r["step"] for r in records(run, "train")] == [2, 4]
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait"] <= 1 for r in records(run, "train"))
    (epoch,) = records(run, "epoch")
    assert epoch["step"] == STEPS_PER_EPOCH and epoch["val_images"] == VAL_IMAGES
    assert 0 <= epoch["top1_err"] <= 1 and 0 <= epoch["top5_err"] <= epoch["top1_err"]


@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "ten-crop"])
def test_eval_only(trained, data, ten_crop):
    kind, run, _ = trained
    result = cli(data, "--loader", kind, "--eval-only", "--resume", str(run), *(["--ten-crop"] if ten_crop else []))
    assert result.exit_code == 0, result.output
    out = json_line(result.output)
    assert out["checkpoint"] == str(run / "best.pt") and out["images"] == VAL_IMAGES and out["ten_crop"] is ten_crop
    assert 0 <= out["top5_err"] <= out["top1_err"] <= 1 and out["loss"] > 0


def test_existing_run_is_refused(trained, data):
    _, run, _ = trained
    before = (run / "metrics.jsonl").read_text()
    result = cli(data, "--max-steps", "1", "--run-dir", str(run))
    assert result.exit_code == 1
    assert "holds a run already" in result.output and f"--resume {run}" in result.output
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_continues(data, tmp_path):
    """--max-steps 1 (no epoch done: --eval-only takes last.pt), then --resume to the end of the epoch with ten-crop validation."""
    run = tmp_path / "run"
    first = cli(data, "--epochs", "1", "--max-steps", "1", "--log-every", "1", "--run-dir", str(run))
    assert first.exit_code == 0, first.output
    assert "step 1;" in first.output and not (run / "best.pt").exists()
    evaluated = cli(data, "--eval-only", "--resume", str(run))
    assert evaluated.exit_code == 0, evaluated.output
    assert json_line(evaluated.output)["checkpoint"] == str(run / "last.pt")
    resumed = cli(data, "--epochs", "1", "--log-every", "1", "--ten-crop", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    assert f"stopped at epoch 1, step {STEPS_PER_EPOCH}" in resumed.output
    assert [r["step"] for r in records(run, "train")] == list(range(1, STEPS_PER_EPOCH + 1))
    (epoch,) = records(run, "epoch")
    assert epoch["val_images"] == VAL_IMAGES and 0 <= epoch["top1_err"] <= 1
    assert torch.load(run / "last.pt", weights_only=False, mmap=True)["state"]["step"] == STEPS_PER_EPOCH


def test_towers_run_resumes_in_its_own_layout(data, tmp_path):
    """A run trained with --parallel towers is evaluated and continued as towers without repeating the flag."""
    run = tmp_path / "run"
    first = cli(data, "--parallel", "towers", "--epochs", "1", "--max-steps", "1", "--run-dir", str(run))
    assert first.exit_code == 0, first.output
    evaluated = cli(data, "--eval-only", "--resume", str(run))
    assert evaluated.exit_code == 0, evaluated.output
    assert json_line(evaluated.output)["images"] == VAL_IMAGES
    resumed = cli(data, "--epochs", "1", "--max-steps", "1", "--resume", str(run))  # one step more
    assert resumed.exit_code == 0, resumed.output
    assert "step 2;" in resumed.output
    assert json.loads((run / "config.json").read_text())["parallel"] == "towers"


def test_resume_needs_a_checkpoint(data, tmp_path):
    result = cli(data, "--resume", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: --resume {tmp_path}: no last.pt in that folder, so there is no run to continue or evaluate"
    ]
    assert list(tmp_path.iterdir()) == []


def test_eval_only_needs_resume(data):
    result = cli(data, "--eval-only")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --eval-only needs --resume CKPT (a run folder or its last.pt / best.pt)"
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_cuda(data):
    result = CliRunner().invoke(main, ["--data", str(data), "--device", "cuda"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: --device cuda: no CUDA device is visible; use --device cpu"]


# --- issue 11: preemption, exact resumes, refusals -------------------------------------------------

TIMING = ("images_per_s", "data_wait", "epoch_s")


def command(data: Path, *args: str) -> list[str]:
    """`cli`'s command line, as a separate process (for SIGKILL)."""
    base = [sys.executable, "-m", "alexnet.tools.train", "--data", str(data), "--device", "cpu", "-b", str(BATCH)]
    return [*base, "-j", "1", *args]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False, mmap=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def untimed(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def reference(trained, data, tmp_path_factory) -> tuple[str, Path, Path]:
    """Two uninterrupted epochs with `trained`'s loader: what every interrupted run must end as.

    (loader, its run folder, `trained`'s run folder: the first epoch of the same command)."""
    kind, first_epoch, _ = trained
    run = tmp_path_factory.mktemp(f"ref-{kind}") / "run"
    result = cli(data, "--loader", kind, "--epochs", "2", "--log-every", "2", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    return kind, run, first_epoch


def test_interrupted_every_way_ends_as_the_uninterrupted_run(reference, data, tmp_path):
    """An epoch-boundary stop, SIGTERM mid-epoch, SIGKILL after a --save-every checkpoint, each followed
    by --resume: the final weights and metrics are the uninterrupted run's, bit for bit. The first part
    is `trained`'s command again: the same command gives the same weights."""
    kind, ref, trained_run = reference
    run = tmp_path / "run"
    args = ["--loader", kind, "--log-every", "2"]
    first = cli(data, *args, "--epochs", "1", "--run-dir", str(run))  # stops at the epoch boundary
    assert first.exit_code == 0, first.output
    assert_same_weights(trained_run, run)

    with signal_at_step(run, STEPS_PER_EPOCH + 1, signal.SIGTERM):
        second = cli(data, *args, "--epochs", "2", "--resume", str(run))
    assert second.exit_code == 0, second.output
    state = torch.load(run / "last.pt", weights_only=False, mmap=True)["state"]
    assert 0 < state["batch_in_epoch"] < STEPS_PER_EPOCH and state["epoch"] == 1  # in the middle of epoch 1
    (line,) = [x for x in second.output.splitlines() if x.startswith("stopped by SIGTERM")]
    assert f"step {state['step']}" in line and f"--resume {run}" in line

    saved = (run / "last.pt").stat().st_mtime_ns
    killed = subprocess.Popen(
        command(data, *args, "--epochs", "2", "--save-every", "1", "--resume", str(run)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while killed.poll() is None and (run / "last.pt").stat().st_mtime_ns == saved:
        time.sleep(0.02)
    killed.kill()
    assert killed.wait() == -signal.SIGKILL  # killed, not finished
    assert torch.load(run / "last.pt", weights_only=False, mmap=True)["state"]["step"] > state["step"]

    last = cli(data, *args, "--epochs", "2", "--resume", str(run))
    assert last.exit_code == 0, last.output
    assert f"stopped at epoch 2, step {2 * STEPS_PER_EPOCH}" in last.output
    assert_same_weights(ref, run)
    assert untimed(ref) == untimed(run)


@pytest.fixture(scope="module")
def short(data, tmp_path_factory) -> Path:
    """--max-steps 3 with the log interval far away, and TensorBoard events."""
    run = tmp_path_factory.mktemp("short") / "run"
    result = cli(
        data, "--loader", "torch", "--max-steps", "3", "--log-every", "50", "--tensorboard", "--run-dir", str(run)
    )
    assert result.exit_code == 0, result.output
    return run


def test_a_short_run_writes_its_partial_interval_and_tensorboard_events(short):
    (record,) = records(short, "train")
    assert record["step"] == 3 and record["partial"] is True and record["loss"] > 0 and record["images_per_s"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(short))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(3, pytest.approx(record["loss"]))]
    assert [e.value for e in events.Scalars("train/data_wait")] == [pytest.approx(record["data_wait"])]


def test_a_full_disk_keeps_the_previous_checkpoint(data, short, tmp_path):
    """A file-size limit below a checkpoint's size stands in for a full disk: one line, no .tmp, last.pt as it
    was. The limit is this process's for the run (python ignores SIGXFSZ, so a write past it fails with EFBIG)."""
    run = tmp_path / "run"
    shutil.copytree(short, run)
    before = (run / "last.pt").read_bytes()[-4096:], (run / "last.pt").stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50 * 2**20, hard))
    try:
        result = cli(data, "--loader", "torch", "--max-steps", "1", "--resume", str(run))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert f"{run / 'last.pt'}: could not write" in line and "the previous last.pt is kept" in line
    assert not (run / "last.pt.tmp").exists()
    assert ((run / "last.pt").read_bytes()[-4096:], (run / "last.pt").stat().st_size) == before


def copy_data(data: Path, to: Path) -> Path:
    shutil.copytree(data, to)
    return to


def edit_manifest(data: Path, edit) -> None:
    path = data / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def two_classes(manifest: dict) -> None:
    """The first two classes only, with the per-class counts to match (a manifest that agrees with itself)."""
    manifest["classes"] = manifest["classes"][:2]
    for split in manifest["splits"].values():
        split["class_counts"] = split["class_counts"][:2]


def test_refusals_name_what_to_do(data, short, tmp_path):
    """Another data set on --resume (other wnids, other class count), a batch larger than the data, and a
    mid-epoch checkpoint from another world size: one line each, and the run folder untouched."""
    config_before = (short / "config.json").read_text()
    other = copy_data(data, tmp_path / "other")
    edit_manifest(other, lambda m: m["classes"][0].update(wnid="n00000000"))
    result = cli(other, "--resume", str(short))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: --resume {short}: the run was trained on {data} (3 classes), not on {other} (3 classes: the same "
        f"count, other wnids); resume with --data {data} or start a new run"
    ]
    fewer = copy_data(data, tmp_path / "fewer")
    edit_manifest(fewer, two_classes)
    result = cli(fewer, "--resume", str(short))
    assert result.exit_code == 1 and "(2 classes: another count)" in result.output
    assert (short / "config.json").read_text() == config_before

    result = cli(data, "-b", "64", "--run-dir", str(tmp_path / "big"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {data / 'train'}: 22 samples make no batch of 64; lower -b/--batch-size"
    ]

    run = copy_data(short, tmp_path / "two-ranks")
    ckpt = torch.load(run / "last.pt", weights_only=False)
    ckpt["rng"], ckpt["loader"] = ckpt["rng"] * 2, ckpt["loader"] * 2  # as two ranks would have saved it
    torch.save(ckpt, run / "last.pt")
    result = cli(data, "--loader", "torch", "--resume", str(run))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {run / 'last.pt'}: saved by 2 ranks in the middle of epoch 0 (batch 3); resume it with 2 ranks, "
        "or from a checkpoint at an epoch boundary"
    ]


def test_a_broken_train_split_is_one_line(data, tmp_path):
    broken = copy_data(data, tmp_path / "broken")
    (broken / "train" / "train-000001.idx").unlink()
    result = cli(broken, "--loader", "torch", "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {broken / 'train' / 'train-000001.idx'}: missing index of train-000001.tar; "
        f"re-run `alexnet-tools prepare --out {broken}`"
    ]


def without_val(data: Path, to: Path) -> Path:
    """A copy of `data` whose manifest has no val split (pca.json re-stamped to match)."""
    out = copy_data(data, to)
    shutil.rmtree(out / "val")
    edit_manifest(out, lambda m: m["splits"].pop("val"))
    save_pca(dataclasses.replace(load_stats(data), manifest_sha256=shards_digest(read_manifest(out))), out / PCA_FILE)
    return out


def test_training_without_a_val_split(data, tmp_path):
    out = without_val(data, tmp_path / "noval")
    result = cli(out, "--epochs", "1", "--run-dir", str(tmp_path / "refused"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {out}: no val split, so --lr-schedule plateau cannot see validation error; "
        "train with --lr-schedule step (and --lr-steps)"
    ]
    run = tmp_path / "run"
    result = cli(out, "--loader", "torch", "-b", "8", "--epochs", "1", "--lr-schedule", "step", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    (epoch,) = records(run, "epoch")
    assert epoch["step"] == 22 // 8 and "top1_err" not in epoch and not (run / "best.pt").exists()


def corrupt(data: Path, to: Path, indices: list[int]) -> tuple[Path, Path, str]:
    """A copy of `data` whose train samples `indices` are zeroed in place (same size: the manifest still agrees)."""
    out = copy_data(data, to)
    reader = ShardReader.for_split(out, "train")
    tar, key = reader.tar_path(indices[0]), reader.key(indices[0])
    for i in indices:
        offset, size = (int(v) for v in reader.where[i][:2])
        with open(reader.tar_path(i), "r+b") as f:
            f.seek(offset)
            f.write(bytes(size))
    reader.close()
    return out, tar, key


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_sample_stops_cleanly_with_a_checkpoint(data, tmp_path, kind):
    """Same-size corruption inside a shard: exit 1 with one line naming the shard (and the key, where the
    loader can know it) and `alexnet-tools verify`; last.pt holds the steps before."""
    n = len(ShardReader.for_split(data, "train"))
    order = sample_order(n, LoaderConfig(data, "train", BATCH, torch.device("cpu")), 0)
    # torch: the first sample of epoch 0's third batch; dali (which shuffles in its buffer): every sample of one tar
    indices = [int(order[2 * BATCH])] if kind == "torch" else list(range(8))
    bad, tar, key = corrupt(data, tmp_path / "bad", indices)
    run = tmp_path / "run"
    result = cli(bad, "--loader", kind, "--epochs", "1", "--run-dir", str(run))
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert f"alexnet-tools verify --data {bad}" in line
    if kind == "torch":
        assert line.startswith(f"Error: {tar}: sample {key} cannot be decoded")
        assert torch.load(run / "last.pt", weights_only=False, mmap=True)["state"]["step"] == 2
    else:
        assert line.startswith(f"Error: {bad / 'train'}: a sample of the 3 train shards cannot be decoded")
        assert (run / "last.pt").is_file()


def test_resume_takes_the_runs_recorded_settings(data, tmp_path):
    """A run's config.json settings hold on --resume without repeating them: --init caffe keeps Caffe's
    inverted dropout (eval-only of it gives the same numbers as an explicit --init caffe), --normalize
    std stays std, the recorded --lr holds; an identity flag given with another value refuses in one line."""
    run = tmp_path / "run"
    setup = ["--init", "caffe", "--normalize", "std", "--lr", "0.02"]
    first = cli(data, *setup, "--epochs", "1", "--max-steps", "1", "--log-every", "1", "--run-dir", str(run))
    assert first.exit_code == 0, first.output
    implicit = cli(data, "--eval-only", "--resume", str(run))
    assert implicit.exit_code == 0, implicit.output
    explicit = cli(data, "--eval-only", "--resume", str(run), "--init", "caffe", "--normalize", "std")
    assert json_line(implicit.output)["loss"] == json_line(explicit.output)["loss"]
    as_paper = cli(data, "--eval-only", "--resume", str(run), "--init", "paper")
    assert as_paper.exit_code == 1
    assert as_paper.output.strip().splitlines() == [
        f"Error: --init paper: {run} was trained with --init caffe; drop the flag to continue it as it was trained"
    ]
    for extra in ([], ["--eval-only"]):
        refused = cli(data, "--epochs", "1", "--resume", str(run), "--normalize", "mean", *extra)
        assert refused.exit_code == 1
        assert f"Error: --normalize mean: {run} was trained with --normalize std" in refused.output
    resumed = cli(data, "--epochs", "1", "--max-steps", "1", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    assert [r["lr"] for r in records(run, "train")] == [0.02, 0.02]
    config = json.loads((run / "config.json").read_text())
    assert (config["init"], config["normalize"], config["train"]["lr"]) == ("caffe", "std", 0.02)

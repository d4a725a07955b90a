"""A run folder has one owner, and every way into a run works exactly or refuses in one line (issue 22).

One process per folder (a second one meets the holder's PID and host; a killed holder never
blocks); the printed resume command resumes FFCV runs bit for bit; --max-steps counts this
invocation's steps; a resume that trains nothing leaves config.json alone; damaged and foreign
checkpoints, out-of-range flags and a hand-edited manifest are one line each.

The data is `tiny_data` (3 classes, 22 train images, 12 val; batch 4 makes 5 steps an epoch). Each
run writes full-size AlexNet checkpoints, so the tests share one short run (`one_step`) and copy it.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from interrupt import signal_at_step

from alexnet.pipeline.loaders.contract import default_workers
from alexnet.pipeline.store.pca_file import PCA_FILE
from alexnet.tools.pca_stats import pca_stats
from alexnet.tools.train import main

BATCH = 4
VENV_BIN = Path(sys.executable).parent
needs_ffcv = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ffcv") is None, reason="FFCV is not installed (pip install -e '.[ffcv]')"
)


def cli(data: Path, *args: str) -> Result:
    """alexnet-train in this process, on the CPU, batch 4, one loader worker."""
    return CliRunner().invoke(main, ["--data", str(data), "--device", "cpu", "-b", str(BATCH), "-j", "1", *args])


def lines(result: Result) -> list[str]:
    return result.output.strip().splitlines()


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def edit_checkpoint(path: Path, edit) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    edit(ckpt)
    torch.save(ckpt, path)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False, mmap=True)["model"]


@pytest.fixture(scope="module")
def one_step(tiny_data, tmp_path_factory) -> tuple[Path, Result]:
    """One step of a torch-loader run with TensorBoard events: (run folder, CLI result)."""
    run = tmp_path_factory.mktemp("one") / "run"
    result = cli(
        tiny_data, "--loader", "torch", "--max-steps", "1", "--log-every", "1", "--tensorboard", "--run-dir", str(run)
    )
    assert result.exit_code == 0, result.output
    return run, result


# --- item 1: one owner per run folder ------------------------------------------------------------


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_process_meets_the_holder_and_a_killed_one_never_blocks(tiny_data, tmp_path):
    """A real alexnet-train holds the folder (stopped with SIGSTOP while it does): a second run into it
    refuses in one line naming the holder's PID and host, and writes nothing; once the holder is
    SIGKILLed, its lock is gone and the same command trains."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [VENV_BIN / "alexnet-train", "--data", tiny_data, "--device", "cpu", "-b", "4", "-j", "1"]
        + ["--loader", "torch", "--epochs", "1", "--run-dir", run],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = run / "run.lock"
        wait_for(lambda: lock.is_file() and lock.read_text().split()[:1] == [str(holder.pid)])
        os.kill(holder.pid, signal.SIGSTOP)
        before = sorted(p.name for p in run.iterdir())
        second = cli(tiny_data, "--loader", "torch", "--max-steps", "1", "--run-dir", str(run))
        assert second.exit_code == 1
        assert lines(second) == [
            f"Error: {run}: in use by PID {holder.pid} on {socket.gethostname()} (it holds {lock}); "
            "wait for that run to stop, or stop it, before training into this folder"
        ]
        assert sorted(p.name for p in run.iterdir()) == before and not (run / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    after = cli(tiny_data, "--loader", "torch", "--max-steps", "1", "--run-dir", str(run))
    assert after.exit_code == 0, after.output
    assert torch.load(run / "last.pt", weights_only=False, mmap=True)["state"]["step"] == 1


# --- item 2: the printed resume command resumes FFCV exactly --------------------------------------


@pytest.fixture(scope="module")
def ffcv_data(tiny_data, tmp_path_factory) -> Path:
    """tiny_data with both betons exported."""
    from alexnet.tools.export_ffcv import export_ffcv

    out = tmp_path_factory.mktemp("ffcv") / "data"
    shutil.copytree(tiny_data, out)
    for extra in ([], ["--raw"]):
        result = CliRunner().invoke(export_ffcv, ["--data", str(out), "--workers", "1", *extra])
        assert result.exit_code == 0, result.output
    return out


@needs_ffcv
@pytest.mark.parametrize("kind", ["ffcv", "ffcv-raw"])
def test_the_printed_resume_command_resumes_ffcv_exactly(ffcv_data, tmp_path, monkeypatch, kind):
    """-j sets FFCV's torch thread count: a run with a -j other than the default, SIGTERMed after its first
    step, then the command it prints (run from another folder, as printed: relative paths made absolute,
    what is left of --max-steps), ends with the uninterrupted run's weights, bit for bit. Batch 8: at
    batch 4 the CPU's kernels give the same bits with one thread or two, at 8 they do not.

    All three runs are alexnet-train's `main` in this process (it sets and puts back the thread count,
    and handles SIGTERM as its own process does): a process start costs more than the run."""
    workers = "1" if default_workers() != 1 else "2"
    args = ["--loader", kind, "-b", "8", "-j", workers, "--max-steps", "3", "--log-every", "1"]
    (tmp_path / "ref").mkdir()
    (tmp_path / "cwd").mkdir()
    os.symlink(ffcv_data, tmp_path / "cwd" / "data")
    ref = cli(ffcv_data, *args, "--run-dir", str(tmp_path / "ref" / "run"))
    assert ref.exit_code == 0, ref.output

    monkeypatch.chdir(tmp_path / "cwd")  # relative --data and --run-dir
    with signal_at_step(tmp_path / "cwd" / "run", 1, signal.SIGTERM):
        stopped = CliRunner().invoke(main, ["--data", "data", "--device", "cpu", "--run-dir", "run", *args])
    assert stopped.exit_code == 0, stopped.output
    (line,) = [x for x in lines(stopped) if x.startswith("stopped by SIGTERM")]
    printed = line.split("continue with: ", 1)[1]
    done = torch.load(tmp_path / "cwd" / "run" / "last.pt", weights_only=False, mmap=True)["state"]["step"]
    assert printed == (
        f"alexnet-train --data {tmp_path / 'cwd' / 'data'} --resume {tmp_path / 'cwd' / 'run'} --max-steps {3 - done}"
    )
    monkeypatch.chdir("/")
    program, *argv = shlex.split(printed)
    assert program == "alexnet-train" and (VENV_BIN / program).is_file()
    resumed = CliRunner().invoke(main, argv)
    assert resumed.exit_code == 0, resumed.output
    assert "stopped at epoch 1, step 3; last validation: {" in resumed.output  # 2 steps an epoch at batch 8
    mine, theirs = weights(tmp_path / "cwd" / "run"), weights(tmp_path / "ref" / "run")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs), "the resumed weights differ"
    config = json.loads((tmp_path / "cwd" / "run" / "config.json").read_text())
    assert config["workers"] == int(workers)


def test_the_cpu_thread_count_is_the_runs_own_not_the_processs(tiny_data, tmp_path):
    """torch's thread count changes the CPU's bits (at batch 8), and a process may hold any count (FFCV's
    loader sets it, so does OMP_NUM_THREADS): the trainer sets it from -j, records it, and puts the
    caller's back. Two runs with -j 2 from processes at 1 and 2 threads end with the same weights."""
    before = torch.get_num_threads()
    runs = []
    try:
        for held in (1, 2):
            torch.set_num_threads(held)
            run = tmp_path / f"held-{held}"
            result = cli(
                tiny_data, "--loader", "torch", "-b", "8", "-j", "2", "--max-steps", "2", "--run-dir", str(run)
            )
            assert result.exit_code == 0, result.output
            assert torch.get_num_threads() == held  # the caller's count, put back
            assert json.loads((run / "config.json").read_text())["torch_threads"] == 2
            runs.append(weights(run))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0]), "the weights depend on the caller's threads"


# --- item 4: --max-steps, what config.json records, --run-dir with --resume -----------------------


def test_max_steps_counts_the_steps_of_this_invocation(tiny_data, one_step, tmp_path):
    run = copy_run(one_step[0], tmp_path / "run")
    resumed = cli(tiny_data, "--max-steps", "1", "--log-every", "1", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    assert "stopped at epoch 0, step 2;" in resumed.output
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_the_tensorboard_flag_is_restored_on_resume(tiny_data, one_step, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = copy_run(one_step[0], tmp_path / "run")
    resumed = cli(tiny_data, "--max-steps", "1", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    events = EventAccumulator(str(run))
    events.Reload()
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (r["step"], pytest.approx(r["loss"])) for r in logged
    ]
    assert [r["step"] for r in logged] == [1, 2]


def test_a_resume_that_trains_nothing_leaves_config_json_alone(tiny_data, one_step, tmp_path):
    """A finished run (last.pt after its last epoch) resumed with other settings and no more epochs: it says
    so, and config.json keeps what the run was trained with."""
    run = copy_run(one_step[0], tmp_path / "run")
    edit_checkpoint(run / "last.pt", lambda c: c["state"].update(epoch=1, batch_in_epoch=0))
    before = (run / "config.json").read_text()
    result = cli(tiny_data, "--epochs", "1", "--lr", "0.05", "--max-steps", "2", "--resume", str(run))
    assert result.exit_code == 0, result.output
    assert lines(result) == [
        f"nothing to train: {run} has finished epoch 1 of --epochs 1 (step 1); give --epochs above 1 to "
        f"continue it; {run / 'config.json'} is unchanged"
    ]
    assert (run / "config.json").read_text() == before


def test_resume_into_another_run_dir_is_refused(tiny_data, one_step, tmp_path):
    run = one_step[0]
    other = tmp_path / "new"
    result = cli(tiny_data, "--resume", str(run), "--run-dir", str(other))
    assert result.exit_code == 2
    assert lines(result)[-1] == (
        f"Error: --run-dir {other}: --resume {run} continues in its own folder {run}; drop --run-dir, "
        f"or copy the run first (cp -r {run} {other}) and --resume {other}"
    )
    assert not other.exists()


def test_a_run_stopped_before_an_epoch_end_says_it_has_no_validation(one_step):
    assert "no validation yet (no epoch ended)" in one_step[1].output and "{}" not in one_step[1].output


# --- items 6 and 7: damaged and foreign checkpoints ----------------------------------------------


def damaged_run(one_step: Path, to: Path, name: str, keep: int | None) -> Path:
    """A copy of the run whose `name` checkpoint keeps its first `keep` bytes (None: all of it)."""
    run = copy_run(one_step, to)
    if keep is not None:
        data = (run / "last.pt").read_bytes()[:keep]
        (run / name).write_bytes(data)
    return run


@pytest.mark.parametrize("keep", [0, 2**20], ids=["empty", "truncated"])
def test_a_damaged_last_pt_is_one_line_naming_best_pt(tiny_data, one_step, tmp_path, keep):
    run = damaged_run(one_step[0], tmp_path / "run", "last.pt", keep)
    shutil.copy(one_step[0] / "last.pt", run / "best.pt")  # a readable older checkpoint beside it
    before = (run / "metrics.jsonl").read_text(), (run / "config.json").read_text()
    result = cli(tiny_data, "--resume", str(run))
    assert result.exit_code == 1
    what = "an empty file" if keep == 0 else "truncated"
    assert lines(result) == [
        f"Error: {run / 'last.pt'}: damaged ({what}); the run cannot continue from it; {run / 'best.pt'} "
        f"holds its best weights: --eval-only --resume {run / 'best.pt'}, or start a new --run-dir"
    ]
    assert ((run / "metrics.jsonl").read_text(), (run / "config.json").read_text()) == before


def test_an_empty_best_pt_with_eval_only_names_last_pt(tiny_data, one_step, tmp_path):
    run = damaged_run(one_step[0], tmp_path / "run", "best.pt", 0)
    result = cli(tiny_data, "--eval-only", "--resume", str(run))
    assert result.exit_code == 1
    assert lines(result) == [
        f"Error: {run / 'best.pt'}: damaged (an empty file); evaluate {run / 'last.pt'} instead: "
        f"--eval-only --resume {run / 'last.pt'}"
    ]


def test_a_checkpoint_of_another_class_count_is_one_line(tiny_data, one_step, tmp_path):
    """last.pt of a 2-class run (its last layer cut to two outputs) in this 3-class run: for resume and --eval-only."""
    run = copy_run(one_step[0], tmp_path / "run")

    def two_classes(ckpt: dict) -> None:
        ckpt["model"]["fc8.weight"] = ckpt["model"]["fc8.weight"][:2].clone()
        ckpt["model"]["fc8.bias"] = ckpt["model"]["fc8.bias"][:2].clone()

    edit_checkpoint(run / "last.pt", two_classes)
    for extra in ([], ["--eval-only"]):
        result = cli(tiny_data, "--resume", str(run), *extra)
        assert result.exit_code == 1
        assert lines(result) == [
            f"Error: {run / 'last.pt'}: another run's checkpoint: a 2-class network, this run has 3 classes; "
            "start a new --run-dir (or put back a good copy of the file)"
        ]


def test_a_checkpoint_of_another_loader_is_one_line(tiny_data, one_step, tmp_path):
    run = copy_run(one_step[0], tmp_path / "run")
    edit_checkpoint(run / "last.pt", lambda c: c["loader"][0].update(kind="ffcv"))
    before = (run / "metrics.jsonl").read_text()
    result = cli(tiny_data, "--resume", str(run))
    assert result.exit_code == 1
    assert lines(result) == [
        f"Error: {run / 'last.pt'}: another run's checkpoint: saved by the ffcv loader, this run uses torch; "
        "start a new --run-dir (or put back a good copy of the file)"
    ]
    assert (run / "metrics.jsonl").read_text() == before


# --- item 8: out-of-range flags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--lr", "-1"], "Invalid value for '--lr': -1.0 is not in the range x>0."),
        (["--lr", "0"], "Invalid value for '--lr': 0.0 is not in the range x>0."),
        (["--lr", "nan"], "Invalid value for '--lr': nan is not a finite number."),
        (["--momentum", "-1"], "Invalid value for '--momentum': -1.0 is not in the range 0<=x<1."),
        (["--momentum", "1"], "Invalid value for '--momentum': 1.0 is not in the range 0<=x<1."),
        (["--wd", "-1"], "Invalid value for '--wd' / '--weight-decay': -1.0 is not in the range x>=0."),
        (["--wd", "inf"], "Invalid value for '--wd' / '--weight-decay': inf is not a finite number."),
        (
            ["--lr-schedule", "step", "--lr-steps", "abc"],
            "Invalid value for '--lr-steps': 'abc' is not a comma-separated list of non-negative epochs, e.g. 30,60.",
        ),
        (
            ["--lr-schedule", "step", "--lr-steps", "3,-1"],
            "Invalid value for '--lr-steps': '3,-1' is not a comma-separated list of non-negative epochs, e.g. 30,60.",
        ),
        (
            ["--lr-steps", "1"],
            "--lr-steps 1: only --lr-schedule step divides at fixed epochs (plateau does not); "
            "add --lr-schedule step or drop --lr-steps",
        ),
    ],
)
def test_out_of_range_flags_are_refused_before_anything_is_created(tiny_data, tmp_path, flags, error):
    run = tmp_path / "run"
    result = cli(tiny_data, "--loader", "torch", *flags, "--run-dir", str(run))
    assert result.exit_code == 2, result.output
    assert lines(result)[-1] == f"Error: {error}"
    assert not run.exists()


# --- item 10 and a small one: the manifest's own class count, one pca.json warning ----------------


def edited_copy(data: Path, to: Path, edit) -> Path:
    shutil.copytree(data, to)
    manifest = json.loads((to / "manifest.json").read_text())
    edit(manifest)
    (to / "manifest.json").write_text(json.dumps(manifest))
    return to


def test_a_class_list_cut_by_hand_is_refused_by_the_loaders_and_pca_stats(tiny_data, tmp_path):
    cut = edited_copy(tiny_data, tmp_path / "cut", lambda m: m.update(classes=m["classes"][:2]))
    expected = (
        f"Error: {cut / 'manifest.json'}: lists 2 classes, but its train split counts images of 3; "
        f"undo the edit, or re-run `alexnet-tools prepare --out {cut} --overwrite`"
    )
    result = cli(cut, "--loader", "torch", "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 1 and lines(result) == [expected]
    assert not (tmp_path / "run").exists()
    stats = CliRunner().invoke(pca_stats, ["--data", str(cut), "--workers", "1"])
    assert stats.exit_code == 1 and lines(stats) == [expected]


def test_a_stale_pca_json_is_warned_about_once(tiny_data, tmp_path):
    """Both loaders read pca.json; the warning that it is stale is printed once (the run then stops on -b 64)."""
    stale = tmp_path / "stale"
    shutil.copytree(tiny_data, stale)
    pca = json.loads((stale / PCA_FILE).read_text())
    (stale / PCA_FILE).write_text(json.dumps({**pca, "manifest_sha256": "0" * 64}))
    result = cli(stale, "--loader", "torch", "-b", "64", "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert sum("computed from other shards" in x for x in lines(result)) == 1

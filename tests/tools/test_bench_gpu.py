"""`make bench-gpu` without a GPU: the plan and its budget, and `scripts/bench-gpu.sh --dry-run` end to end.

The dry run is the real script and the real commands on the CPU with tiny sizes and one loader
(DALI, which every stage but the CUDA tests uses); one run is made to fail on purpose
(BENCH_FAIL), and the others must still write their figures into all three files.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from alexnet.model.train import TrainConfig
from alexnet.tools.bench_gpu import STAGES, Run, figures, fit_budget, main, plan, run_child

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_plan_fits_the_budget_and_times_whole_intervals_in_one_epoch(tmp_path):
    for minutes in (1, 4, 8, 30, 120):  # whatever this machine's cores: the estimates never pass the budget
        sizes, runs, data_s = plan(minutes, "cuda", False, ["dali", "torch", "ffcv"], None, tmp_path, [])
        kept = [r for r in runs if not r.record]
        assert data_s + sum(r.estimate_s for r in kept) <= minutes * 60
        assert sizes.log_every == TrainConfig.log_every and sizes.steps % sizes.log_every == 0
        assert sizes.train_images >= sizes.batch * (sizes.warmup + sizes.steps)
        assert {r.stage for r in runs} == set(STAGES)
        skipped = [r for r in runs if r.record]
        assert all(r.record["status"] == "skipped" and "budget" in r.record["reason"] for r in skipped)
    assert not skipped and sizes.steps == 3 * sizes.log_every  # two hours: everything, at the largest size


def test_the_budget_keeps_runs_by_priority():
    runs = [Run(n, "train", [], est, prio) for n, est, prio in (("a", 50, 2), ("b", 40, 0), ("c", 30, 1))]
    assert [r.name for r in fit_budget(runs, 75)] == ["b", "c"]
    assert runs[0].record["status"] == "skipped"


def test_pytest_counts_are_read_from_its_summary():
    run = Run("cuda-tests", "cuda-tests", [], 1, 0)
    tail = ["...", "1 failed, 20 passed, 2 skipped, 325 deselected in 30.1s"]
    assert figures(run, tail) == {"failed": 1, "passed": 20, "skipped": 2, "deselected": 325}


def test_a_run_past_its_timeout_is_recorded_and_its_whole_process_group_stopped(tmp_path):
    """A child that started a worker of its own and hangs: both go at the timeout, and the tail says what it printed."""
    code = (
        "import subprocess, sys, time; "
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print('worker', w.pid, flush=True); time.sleep(120)"
    )
    run = Run("hang", "train", [sys.executable, "-c", code], 1, 0)
    record = run_child(run, 3, tmp_path / "hang.log", dict(os.environ))
    assert record["status"] == "timeout" and record["returncode"] is not None and record["seconds"] < 30
    worker = Path(f"/proc/{record['tail'][0].split()[1]}/stat")

    def gone() -> bool:  # or dead and not yet reaped
        try:
            return worker.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10  # a SIGKILLed process still runs its exit in the kernel: state R for a moment
    while not gone():
        assert time.monotonic() < deadline, f"the worker {worker.parent.name} outlived its group's SIGKILL"
        time.sleep(0.01)
    assert (tmp_path / "hang.log").read_text().startswith("worker ")


def test_an_unknown_stage_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["--dry-run", "--out", str(tmp_path), "--stages", "ceiling,warp-drive"])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit
    assert "warp-drive is no stage of this plan" in result.output and len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_dry_run_writes_three_files_holding_every_stage_and_records_a_failed_run(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "LOADERS": "dali", "BENCH_FAIL": "loaders-dali"}
    proc = subprocess.run(
        ["bash", "scripts/bench-gpu.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "loaders-dali failed" in proc.stderr
    doc = json.loads((out / "bench-gpu.json").read_text())
    assert doc["dry_run"] and doc["device"] == "cpu" and set(doc["stages"]) == set(STAGES)
    assert doc["environment"]["torch"] and doc["environment"]["dali"]
    runs = doc["runs"]
    assert runs["cuda-tests"]["record"]["status"] == "skipped"
    failed = runs["loaders-dali"]["record"]
    assert failed["status"] == "failed" and failed["returncode"] == 2
    assert any("--no-such-flag" in line for line in failed["tail"])
    assert doc["stages"]["loaders"]["status"] == "failed"
    for name in ("ceiling-b2", "train-dali", "dali-hw-0.65"):  # the others went on and measured
        assert runs[name]["record"]["status"] == "ok", runs[name]
    ceiling = runs["ceiling-b2"]["record"]["figures"]
    assert ceiling["ceiling"]["images_per_s"] > 0 and ceiling["loaders"] == {}  # --ceiling-only
    assert runs["train-dali"]["record"]["figures"]["loaders"]["dali"]["images_per_s"] > 0
    assert runs["dali-hw-0.65"]["record"]["figures"]["loaders"]["dali"]["images_per_s"] > 0
    md = (out / "bench-gpu.md").read_text()
    assert md.startswith("# bench-gpu: DRY RUN on the CPU")
    for name in runs:
        assert f"| {name} |" in md
    assert "| loader dali | 2 |" in md and "hw_decoder_load 0.65" in md and "exit 2:" in md
    assert (out / "bench-gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [["--bogus"]])
def test_the_script_refuses_an_unknown_argument_in_one_line(args):
    proc = subprocess.run(["bash", "scripts/bench-gpu.sh", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--bogus" in proc.stderr

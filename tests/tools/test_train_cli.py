"""`alexnet-train` end to end on the CPU: a tiny prepared folder, both loaders, eval-only, resume, refusals.

The folder is synth's ILSVRC-shaped tree (3 classes, 8 train and 4 val images each; two planted
undecodable files land in quarantine, leaving 22 train images) prepared into 8-image shards, so one
epoch at batch 4 is 5 steps. Each training run writes full-size AlexNet checkpoints (hundreds of MB),
so runs are shared between tests where a test only reads them.
"""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from alexnet.tools.train import main

KINDS = ["dali", "torch"]
BATCH = 4
STEPS_PER_EPOCH = 5  # 22 train images // 4
VAL_IMAGES = 12


def cli(data: Path, *args: str) -> Result:
    """alexnet-train on `data` on the CPU with batch 4 and two loader workers."""
    return CliRunner().invoke(main, ["--data", str(data), "--device", "cpu", "-b", str(BATCH), "-j", "2", *args])


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
    assert torch.load(run / "last.pt", weights_only=False)["state"]["step"] == STEPS_PER_EPOCH


def test_towers_run_resumes_in_its_own_layout(data, tmp_path):
    """A run trained with --parallel towers is evaluated and continued as towers without repeating the flag."""
    run = tmp_path / "run"
    first = cli(data, "--parallel", "towers", "--epochs", "1", "--max-steps", "1", "--run-dir", str(run))
    assert first.exit_code == 0, first.output
    evaluated = cli(data, "--eval-only", "--resume", str(run))
    assert evaluated.exit_code == 0, evaluated.output
    assert f"--parallel towers: the layout {run} was trained with" in evaluated.output
    assert json_line(evaluated.output)["images"] == VAL_IMAGES
    resumed = cli(data, "--epochs", "1", "--max-steps", "2", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    assert "step 2;" in resumed.output


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


def test_resume_with_another_normalisation_is_refused(data, tmp_path):
    """The run records --normalize; continuing or evaluating it with another refuses in one line."""
    run = tmp_path / "run"
    first = cli(data, "--normalize", "std", "--epochs", "1", "--max-steps", "1", "--run-dir", str(run))
    assert first.exit_code == 0, first.output
    assert json.loads((run / "config.json").read_text())["normalize"] == "std"
    for extra in ([], ["--eval-only"]):
        refused = cli(data, "--epochs", "1", "--resume", str(run), *extra)
        assert refused.exit_code == 1
        assert "--normalize mean" in refused.output and "trained with --normalize std" in refused.output

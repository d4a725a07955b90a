"""`alexnet-train` when a run goes wrong (issue 19): a diverged run exits 3 with one line and keeps its
finite last.pt; --init kaiming with --normalize mean warns in one line before training."""

from pathlib import Path

import torch
from click.testing import CliRunner

from alexnet.tools.train import DIVERGED_EXIT, main


def cli(data: Path, *args: str):
    return CliRunner().invoke(main, ["--data", str(data), "--device", "cpu", "-b", "4", "-j", "1", *args])


def test_a_diverged_run_exits_3_with_one_line_and_a_finite_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--loader", "torch", "--epochs", "1", "--lr", "1e30", "--log-every", "1", "--save-every", "1"]
    result = cli(tiny_data, *args, "--run-dir", str(run))
    assert result.exit_code == DIVERGED_EXIT == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "the training loss over steps 2-2 is not finite" in errors[0]
    assert f"{run / 'last.pt'} holds step 1, the last finite state" in errors[0]
    assert f"--resume {run} --lr" in errors[0]
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["state"]["step"] == 1
    assert all(bool(torch.isfinite(t).all()) for t in ckpt["model"].values() if t.is_floating_point())


def test_kaiming_on_the_papers_inputs_warns_in_one_line(tiny_data: Path, tmp_path: Path) -> None:
    warned = cli(
        tiny_data, "--loader", "torch", "--init", "kaiming", "--max-steps", "1", "--run-dir", str(tmp_path / "a")
    )
    assert warned.exit_code == 0, warned.output
    lines = [line for line in warned.stderr.splitlines() if line.startswith("warning:")]
    assert lines == [
        "warning: --init kaiming with --normalize mean starts at a loss of about 60 and can diverge to nan "
        "(docs/recipe.md); He init assumes unit-variance inputs: add --normalize std"
    ]
    std = ["--init", "kaiming", "--normalize", "std", "--max-steps", "1", "--run-dir", str(tmp_path / "b")]
    quiet = cli(tiny_data, "--loader", "torch", *std)
    assert quiet.exit_code == 0, quiet.output
    assert "warning:" not in quiet.stderr

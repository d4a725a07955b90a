"""Every alexnet-bench command refuses an output path it cannot write, in one line, before it measures anything.

A refusal after the run (the old behaviour: a traceback once the whole benchmark had run) would
print the table first; here the output must be the one error line and nothing else.
"""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from alexnet.tools.bench import main


def commands(data: Path, src: Path) -> dict[str, list[str]]:
    return {
        "loaders": ["loaders", "--data", str(data), "--loaders", "torch", "--batches", "1", "--batch-size", "2"],
        "train": ["train", "--data", str(data), "--device", "cpu", "-b", "2", "--log-every", "1", "--steps", "1"],
        "offline": ["offline", "--imagenet-dir", str(src), "--naive-images", "1"],
    }


@pytest.mark.parametrize("command", ["loaders", "train", "offline"])
def test_an_output_path_that_cannot_be_written_is_refused_first(command, tiny_data, tmp_path):
    args = commands(tiny_data, tmp_path)[command]
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    cases = {
        ("--json", "/nonexistent/x.json"): "the folder /nonexistent does not exist; create it or pick another path",
        ("--json", str(tmp_path)): "that is a folder; give a file name in it",
    }
    if os.geteuid() != 0:  # root writes anywhere
        cases[("--json", str(read_only / "x.json"))] = f"the folder {read_only} is not writable; pick another path"
    if command != "offline":  # offline draws no chart
        cases[("--plot", "bl.txt")] = "the chart is a PNG image; give a file name ending in .png"
        cases[("--plot", "/nonexistent/x.png")] = (
            "the folder /nonexistent does not exist; create it or pick another path"
        )
    for (flag, path), why in cases.items():
        result = CliRunner().invoke(main, [*args, flag, path])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines() == [f"Error: {flag} {path}: {why}"], result.output
    assert not (read_only / "x.json").exists() and not Path("bl.txt").exists()

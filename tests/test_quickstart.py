"""The README's quick start runs as written (issue 21): every command of its "ImageNet to a trained
model" blocks, on a synthetic ILSVRC tree, with only the size of the training cut down.

Each line runs in bash with IMAGENET and SHARDS set, from a temporary folder (so `runs/` lands
there); `alexnet-train` and torchrun lines get `--device cpu -b 4 -j 1 --epochs 1` appended (click
takes the last value of a flag), which turns the paper's 90 epochs into one of 4 steps."""

import os
import re
import subprocess
import sys
from pathlib import Path

from ports import free_port
from shard_data import write_tree

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## ImageNet to a trained model"
SMALL = "--device cpu -b 4 -j 1 --epochs 1"


def quickstart_commands() -> list[str]:
    """The shell lines of the section's ```sh blocks, comments and `source` lines left out."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith(("#", "source ")):
                lines.append(line)
    return lines


def test_the_quick_start_names_the_four_steps_and_torchrun() -> None:
    commands = quickstart_commands()
    heads = [" ".join(c.split()[:2]) for c in commands]
    assert heads == [
        "alexnet-tools prepare",
        "alexnet-tools pca-stats",
        "alexnet-train --data",
        "alexnet-train --data",
        "torchrun --nproc-per-node",
    ]
    assert "--eval-only" in commands[3] and "--ten-crop" in commands[3]


def test_the_quick_start_runs_on_a_synthetic_tree(tmp_path: Path) -> None:
    tree = tmp_path / "imagenet"
    write_tree(tree, classes=3, train_per_class=6, val_per_class=2, seed=0)  # 16 decodable train images, 6 val
    env = {
        **os.environ,
        "IMAGENET": str(tree),
        "SHARDS": str(tmp_path / "shards"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "PET_MASTER_PORT": str(free_port()),  # torchrun's --master-port (not 29500: tests run side by side)
    }
    for command in quickstart_commands():
        if command.startswith(("alexnet-train", "torchrun")):
            command = f"{command} {SMALL}"
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "shards" / "pca.json").is_file()
    assert (tmp_path / "runs" / "alexnet" / "best.pt").is_file()
    assert (tmp_path / "runs" / "alexnet-ddp" / "last.pt").is_file()
    assert "stopped at epoch 1, step 2" in done.stdout  # torchrun's rank 0: 16 images over 2 ranks, batch 4

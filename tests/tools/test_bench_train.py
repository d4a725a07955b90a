"""`alexnet-bench train`: the resident batch, the rate arithmetic, the verdict, and the command end to end.

The command runs on a tiny prepared folder (22 train images) on the CPU with batch 2, logging every
2 steps, one warm-up interval and one timed one per row; the figures themselves are noise at that
size, so only their shape, sign and wording are checked, and which steps were timed.
"""

import json
import re

import click
import pytest
import torch
from click.testing import CliRunner

from alexnet.model.throughput import Plan, Rate, ResidentBatches, make_plan, measure, read_rate, resident_batch, verdict
from alexnet.model.train import TrainConfig
from alexnet.tools.bench import main
from alexnet.tools.options import parse_loader_list

VERDICT = re.compile(r"fed|(starved|slowed) by \d+%")


def test_resident_batches_repeat_one_batch():
    images, labels = resident_batch(4, 3, "cpu")
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 3
    batches = ResidentBatches(images, labels, 5)
    assert len(batches) == 5
    for _ in range(2):  # iterable again, like a loader's next epoch
        out = list(batches)
        assert len(out) == 5 and all(x is images and y is labels for x, y in out)
    assert torch.equal(resident_batch(4, 3, "cpu")[0], images)  # the same seed gives the same batch


def test_plan_is_whole_log_intervals():
    assert make_plan(10, 3, 5) == Plan(log_every=5, warmup=5, steps=10)
    assert make_plan(1, 0, 50) == Plan(50, 0, 50) and make_plan(101, 50, 50).total == 200


def test_read_rate_weights_intervals_by_time(tmp_path):
    """Intervals of 2 steps at batch 3: 1 s (no wait) and 3 s (2 s waiting): 12 images in 4 s, waiting half of it."""
    lines = [
        {"kind": "train", "step": 2, "epoch": 0, "images_per_s": 100.0, "data_wait": 0.9},  # warm-up, dropped
        {"kind": "train", "step": 4, "epoch": 0, "images_per_s": 6.0, "data_wait": 0.0},
        {"kind": "train", "step": 6, "epoch": 0, "images_per_s": 2.0, "data_wait": 2 / 3},
        {"kind": "train", "step": 6, "epoch": 0, "images_per_s": 1.0, "data_wait": 0.0, "partial": True},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rate = read_rate(path, batch_size=3, plan=Plan(2, 2, 4))
    assert rate.steps == 4 and rate.images_per_s == pytest.approx(3.0) and rate.data_wait == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expected 3 intervals of 2 steps in epoch 0 after 2 warm-up steps, found 2"):
        read_rate(path, batch_size=3, plan=Plan(2, 2, 6))
    lines[2]["epoch"] = 1  # an interval past an epoch end is not the trainer's steady state
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ValueError, match="in epoch 0"):
        read_rate(path, batch_size=3, plan=Plan(2, 2, 4))


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def test_measure_times_one_epoch_at_the_log_interval():
    """The loop runs warm-up + timed steps of one epoch, logging every interval; an epoch too short is refused."""
    images, labels = torch.zeros(2, 3, 4, 4), torch.tensor([0, 1])
    rate = measure(Tiny(), ResidentBatches(images, labels, 9), 2, Plan(3, 3, 6), TrainConfig())
    assert rate.steps == 6 and rate.images_per_s > 0
    with pytest.raises(ValueError, match="one epoch holds 8 batches of 2, and the bench times 9 steps"):
        measure(Tiny(), ResidentBatches(images, labels, 8), 2, Plan(3, 3, 6), TrainConfig())


def test_verdict():
    ceiling = Rate(100.0, 0.0, 10)
    assert verdict(Rate(96.0, 0.3, 10), ceiling) == "fed"
    assert verdict(Rate(60.0, 0.01, 10), ceiling) == "slowed by 40%"  # slower, but not for want of data
    assert verdict(Rate(60.0, 0.4, 10), ceiling) == "starved by 40%"
    assert verdict(Rate(130.0, 0.0, 10), ceiling) == "fed"


def test_parse_loaders():
    assert parse_loader_list(None, None, ("dali",)) == ["dali"]
    assert parse_loader_list(None, None, ("torch,dali", "torch")) == ["torch", "dali"]
    assert parse_loader_list(None, None, "ffcv, torch") == ["ffcv", "torch"]
    with pytest.raises(click.BadParameter, match="nothing: choose from"):
        parse_loader_list(None, None, ("",))


def test_bench_train_command(tiny_data, tmp_path):
    data = tiny_data
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["train", "--data", str(data), "--device", "cpu", "--log-every", "2", "--steps", "1", "--warmup", "1"]
    args += ["-b", "2", "-j", "1", "--loader", "dali,torch", "--json", str(out), "--plot", str(chart)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and doc["batch_size"] == 2 and doc["compile"] is False
    assert (doc["log_every"], doc["warmup"], doc["steps"]) == (2, 2, 2)  # rounded up to whole intervals
    assert doc["channels_last"] is False and doc["amp"] is False and doc["normalize"] == "mean"  # the CPU trainer's
    assert doc["ceiling"]["images_per_s"] > 0 and 0 <= doc["ceiling"]["data_wait"] < 1
    assert list(doc["loaders"]) == ["dali", "torch"]
    for kind, row in doc["loaders"].items():
        assert row["images_per_s"] > 0 and 0 <= row["data_wait"] <= 1
        assert row["vs_ceiling"] == pytest.approx(row["images_per_s"] / doc["ceiling"]["images_per_s"])
        assert VERDICT.fullmatch(row["verdict"]), row["verdict"]
        assert re.search(rf"loader {kind} .*{re.escape(row['verdict'])}$", result.output, re.M)
    assert "ceiling (resident)" in result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_train_refuses_a_plan_longer_than_an_epoch(tiny_data):
    """22 train images at batch 4 make 5 batches an epoch: 2 + 4 steps cannot lie inside one; refused before running."""
    args = ["train", "--data", str(tiny_data), "--device", "cpu", "-b", "4", "--log-every", "2", "--steps", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tiny_data}: one epoch of the train split is 5 batches of 4, and the bench times 6 steps "
        "(2 warm-up + 4, in log intervals of 2) inside one epoch; lower --steps, --warmup, --log-every or -b, "
        "or use a larger split"
    ]


def test_bench_train_rejects_unknown_loader(tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--loader", "dali,pillow"])
    assert result.exit_code == 2 and "pillow: choose from" in result.output

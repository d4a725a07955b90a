"""`alexnet-bench train`: the resident batch, the rate arithmetic, the verdict, and the command end to end.

The command runs on a tiny prepared folder (22 train images) on the CPU with batch 4, one warm-up
and two timed steps per row; the figures themselves are noise at that size, so only their shape,
sign and wording are checked.
"""

import json
import re

import click
import pytest
import torch
from click.testing import CliRunner

from alexnet.model.throughput import Rate, ResidentBatches, read_rate, resident_batch, verdict
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


def test_read_rate_weights_steps_by_time(tmp_path):
    """Steps of 1 s (no wait) and 3 s (2 s waiting) at batch 6: 12 images in 4 s, waiting half of it."""
    lines = [
        {"kind": "train", "step": 1, "images_per_s": 100.0, "data_wait": 0.9},  # warm-up, dropped
        {"kind": "train", "step": 2, "images_per_s": 6.0, "data_wait": 0.0},
        {"kind": "epoch", "step": 2, "epoch": 0},
        {"kind": "train", "step": 3, "images_per_s": 2.0, "data_wait": 2 / 3},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rate = read_rate(path, batch_size=6, warmup=1)
    assert rate.steps == 2 and rate.images_per_s == pytest.approx(3.0) and rate.data_wait == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no timed steps"):
        read_rate(path, batch_size=6, warmup=3)


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
    out = tmp_path / "bench.json"
    args = [
        "train",
        "--data",
        str(data),
        "--device",
        "cpu",
        "--steps",
        "2",
        "--warmup",
        "1",
        "-b",
        "4",
        "-j",
        "2",
        "--loader",
        "dali,torch",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and doc["batch_size"] == 4 and doc["steps"] == 2 and doc["compile"] is False
    assert doc["ceiling"]["images_per_s"] > 0 and 0 <= doc["ceiling"]["data_wait"] < 1
    assert list(doc["loaders"]) == ["dali", "torch"]
    for kind, row in doc["loaders"].items():
        assert row["images_per_s"] > 0 and 0 <= row["data_wait"] <= 1
        assert row["vs_ceiling"] == pytest.approx(row["images_per_s"] / doc["ceiling"]["images_per_s"])
        assert VERDICT.fullmatch(row["verdict"]), row["verdict"]
        assert re.search(rf"loader {kind} .*{re.escape(row['verdict'])}$", result.output, re.M)
    assert "ceiling (resident)" in result.output


def test_bench_train_rejects_unknown_loader(tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--loader", "dali,pillow"])
    assert result.exit_code == 2 and "pillow: choose from" in result.output

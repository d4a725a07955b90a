"""The trainer's throughput: the real training loop timed on any batches, against its own ceiling.

The *ceiling* is `train` fed one batch that already sits on the device, handed out again and again
(`ResidentBatches`): no decoding, no copying, no waiting, so it is as fast as this model, device
and batch size can step. A loader is *fed* when the same loop runs at (nearly) that rate with its
batches instead. Timing reuses `train` itself with `log_every=1` and reads its metrics.jsonl, so
the bench measures exactly the loop that `alexnet-train` runs; the first `warmup` steps (allocator,
kernel selection, the loader's first fill) are left out.
"""

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from alexnet.model.evaluate import Batches
from alexnet.model.train import TrainConfig, train

FED_RATIO = 0.95  # a loader within 5% of the ceiling is feeding the trainer
FED_WAIT = 0.05  # below this data-wait, a slower loop is not waiting for data but sharing the CPU with it


class ResidentBatches:
    """The same (images, labels) tensors `steps` times: a data source that costs nothing."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
        self.images, self.labels, self.steps = images, labels, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps):
            yield self.images, self.labels


def resident_batch(
    batch_size: int, num_classes: int, device: torch.device | str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch shaped like a loader's ([B, 3, 224, 224] float32, int64 labels), made once on `device`.

    Standard-normal pixels stand in for normalised images: the network's cost does not depend on them.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, 224, 224, generator=g)
    labels = torch.randint(0, num_classes, (batch_size,), generator=g)
    return images.to(device), labels.to(device)


@dataclass(frozen=True)
class Rate:
    """Images per second of the loop over the timed steps, and the share of that time spent waiting for data."""

    images_per_s: float
    data_wait: float
    steps: int


def read_rate(metrics_path: Path, batch_size: int, warmup: int) -> Rate:
    """Time-weighted rate and data-wait over the "train" records after the first `warmup` (log_every=1)."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if r["kind"] == "train"][warmup:]
    if not steps:
        raise ValueError(f"{metrics_path}: no timed steps after {warmup} warm-up steps")
    walls = [batch_size / r["images_per_s"] for r in steps]
    wall = sum(walls)
    wait = sum(r["data_wait"] * w for r, w in zip(steps, walls))
    return Rate(batch_size * len(steps) / wall, wait / wall, len(steps))


def measure(
    model: nn.Module, batches: Batches, batch_size: int, steps: int, warmup: int, cfg: TrainConfig | None = None
) -> Rate:
    """Run `train` for warmup + steps optimiser steps on `batches` in a throwaway run folder; time the last `steps`.

    `model` must already sit on its device; it is trained (its weights change). `cfg` sets the
    recipe knobs (amp, channels_last, compile); the step budget, logging and output are set here.
    """
    base = cfg or TrainConfig()
    total = warmup + steps
    run_cfg = replace(
        base, epochs=max(base.epochs, total), max_steps=total, log_every=1, save_every=0, progress=False, plot=False
    )
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-train-") as run_dir:
        train(model, batches, None, run_cfg, run_dir, resume=False)
        return read_rate(Path(run_dir) / "metrics.jsonl", batch_size, warmup)


def verdict(rate: Rate, ceiling: Rate) -> str:
    """The row's word: "fed" within 5% of the ceiling; else "starved by X%" when the loop waits for
    data, or "slowed by X%" when it hardly waits but runs slower because the loader's decoding takes
    CPU from the training step (what a CPU-only machine shows; on a GPU the two do not compete)."""
    ratio = rate.images_per_s / ceiling.images_per_s
    if ratio >= FED_RATIO:
        return "fed"
    return f"{'starved' if rate.data_wait >= FED_WAIT else 'slowed'} by {(1 - ratio) * 100:.0f}%"

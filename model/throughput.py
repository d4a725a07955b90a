"""The trainer's throughput: the real training loop timed on any batches, against its own ceiling.

The *ceiling* is `train` fed one batch that already sits on the device, handed out again and again
(`ResidentBatches`): no decoding, no copying, no waiting, so it is as fast as this model, device
and batch size can step. A loader is *fed* when the same loop runs at (nearly) that rate with its
batches instead. Timing reuses `train` itself and reads its metrics.jsonl, so the bench measures
exactly the loop that `alexnet-train` runs, at the trainer's own log interval (a shorter one would
add a host-device synchronisation per interval that the trainer does not pay). A `Plan` says which
intervals are timed: whole intervals inside the first epoch, after a warm-up (allocator, kernel
selection, the loader's first fill), with no validation and no checkpoint write among them.
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


@dataclass(frozen=True)
class Plan:
    """How one row is timed: `warmup` steps, then `steps` timed ones, both whole log intervals, all in one epoch.

    The loop logs every `log_every` steps, as alexnet-train does (its default interval or longer),
    so the timed loop reads the loss and the meter as rarely as the trainer's. Every timed interval
    lies inside the first epoch: no epoch end, no validation and no checkpoint write falls before
    the last one (the run stops at `total` steps and only then writes its last.pt).
    """

    log_every: int
    warmup: int
    steps: int

    @property
    def total(self) -> int:
        return self.warmup + self.steps


def make_plan(steps: int, warmup: int, log_every: int) -> Plan:
    """`steps` and `warmup` rounded up to whole intervals of `log_every` (at least one timed interval)."""
    whole = lambda n: -(-n // log_every) * log_every  # noqa: E731
    return Plan(log_every, whole(warmup), max(whole(steps), log_every))


def read_rate(metrics_path: Path, batch_size: int, plan: Plan) -> Rate:
    """Time-weighted rate and data-wait over the timed intervals: the "train" records after the warm-up.

    Refuses a record outside the first epoch or a missing interval: the plan promises whole
    intervals inside one epoch, and a rate from anything else would not be the trainer's.
    """
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    timed = [
        r for r in records if r["kind"] == "train" and not r.get("partial") and plan.warmup < r["step"] <= plan.total
    ]
    if len(timed) != plan.steps // plan.log_every or any(r["epoch"] != 0 for r in timed):
        raise ValueError(
            f"{metrics_path}: expected {plan.steps // plan.log_every} intervals of {plan.log_every} steps "
            f"in epoch 0 after {plan.warmup} warm-up steps, found {len(timed)}"
        )
    walls = [plan.log_every * batch_size / r["images_per_s"] for r in timed]
    wall = sum(walls)
    wait = sum(r["data_wait"] * w for r, w in zip(timed, walls))
    return Rate(batch_size * plan.steps / wall, wait / wall, plan.steps)


def measure(model: nn.Module, batches: Batches, batch_size: int, plan: Plan, cfg: TrainConfig | None = None) -> Rate:
    """Run `train` for `plan.total` steps of one epoch of `batches` in a throwaway run folder; time the timed intervals.

    `model` must already sit on its device; it is trained (its weights change). `cfg` sets the
    recipe knobs (amp, channels_last, compile), as alexnet-train's; the step budget, logging,
    saving and output are set here: no validation, no periodic or timed save, no plot.
    """
    per_epoch = len(batches) if hasattr(batches, "__len__") else None
    if per_epoch is not None and per_epoch < plan.total:
        raise ValueError(
            f"one epoch holds {per_epoch} batches of {batch_size}, and the bench times {plan.total} steps "
            f"({plan.warmup} warm-up + {plan.steps} timed, in intervals of {plan.log_every}) inside one epoch"
        )
    run_cfg = replace(
        cfg or TrainConfig(),
        epochs=1,
        max_steps=plan.total,
        log_every=plan.log_every,
        save_every=0,
        save_every_minutes=0.0,
        progress=False,
        plot=False,
        tensorboard=False,
    )
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-train-") as run_dir:
        train(model, batches, None, run_cfg, run_dir, resume=False)
        return read_rate(Path(run_dir) / "metrics.jsonl", batch_size, plan)


def verdict(rate: Rate, ceiling: Rate) -> str:
    """The row's word: "fed" within 5% of the ceiling; else "starved by X%" when the loop waits for
    data, or "slowed by X%" when it hardly waits but runs slower because the loader's decoding takes
    CPU from the training step (what a CPU-only machine shows; on a GPU the two do not compete)."""
    ratio = rate.images_per_s / ceiling.images_per_s
    if ratio >= FED_RATIO:
        return "fed"
    return f"{'starved' if rate.data_wait >= FED_WAIT else 'slowed'} by {(1 - ratio) * 100:.0f}%"

"""The contract every loader shares (docs/design.md, batch contract); it imports no loader.

`make_loader(kind, data, split, ...)` (in `alexnet.pipeline.loaders`) returns a `Loader`: iterate it for `(images, labels)`
(images float32 or float16 `[B, 3, 224, 224]`, or `[B, 10, 3, 224, 224]` with ten crops, on the
requested device; labels int64 `[B]`), `len()` is its number of batches this epoch, `set_epoch(e)`
picks the epoch, and `state_dict()` / `load_state_dict()` resume in the middle of one.

- **Values.** `normalize="mean"` (the default, §2): pixel − the training set's per-channel mean,
  on the 0–255 scale; `"std"`: that divided by the per-channel std. The reference is
  `alexnet.pipeline.augment` with the same mode.
- **Memory format.** By default images are contiguous (NCHW). With `channels_last=True` a
  `[B, 3, 224, 224]` batch is in torch's `channels_last` format (strides of NHWC) and a ten-crop
  `[B, 10, 3, 224, 224]` one has the channels innermost the same way: every loader produces NHWC
  and hands over the channels-first view, never copying into the format afterwards. The values
  are the same in either format.

What every loader promises, and the helpers here that make it the same for all of them:

- **Order.** An epoch's batches are a function of (seed, epoch, rank) only: the same seed and
  epoch give the same batches, another epoch gives other ones, whatever happened before. Call
  `set_epoch(e)` before iterating epoch e; iterating again without it repeats the epoch.
- **Ranks.** The epoch's order, the same on every rank (torch: a permutation of all samples;
  DALI: the tars in a permuted order), is cut into `world_size` contiguous parts by *global*
  rank, `rank_slice`, exactly as DALI's readers cut `num_shards` (DALI then shuffles its part in
  its buffer). The ranks' samples are disjoint and together are the whole split.
- **Last batch** (`LastBatch`): `"drop"` (the training default) gives every rank the same number
  of full batches, `(N // world_size) // batch_size`, so DDP ranks step together; the at most
  `batch_size` samples left over per rank sit out this epoch, and since every epoch permutes
  afresh they are other samples each time. Every used sample is used exactly once.
  `"partial"` (the validation default) yields every sample of the rank exactly once, the last
  batch short; ranks may differ by one batch and nothing is padded, so a metric summed over the
  batches and then reduced across ranks once counts each sample once.
- **Resume.** `state_dict()` after k batches of an epoch, restored into a fresh loader, makes it
  yield exactly batches k+1… of that epoch that the uninterrupted loader would have given.
- **Draws for tests.** With `with_draws=True` a loader yields `(images, labels, draws)`, where
  `draws` holds each sample's `dx`, `dy`, `flip` and `alpha`, so a test can recompute the
  reference (`alexnet.pipeline.augment`) for exactly what the loader did.
- **Shards** come from the manifest (`ShardReader.for_split`), which must say `"complete": true`
  and agree with the files; anything else is refused in one line that says to re-run prepare.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from alexnet.pipeline.augment import Normalize
from alexnet.pipeline.store.storage import Location

LoaderKind = Literal["dali", "torch", "ffcv", "ffcv-raw"]
LastBatch = Literal["drop", "partial"]
LOADER_KINDS: tuple[str, ...] = ("dali", "torch", "ffcv", "ffcv-raw")  # ffcv-raw: the beton of decoded pixels
OUTPUT_DTYPES = (torch.float32, torch.float16)
SHUFFLE_BUFFER = 4096  # DALI's shuffle buffer (samples): about four shards of the shuffled shard order


@dataclass(frozen=True)
class LoaderConfig:
    """The knobs every loader takes (docs/design.md): what to read, how to cut it, where to put it."""

    data: Location  # a local folder, or an s3:// URL the DALI loader streams from
    split: str
    batch_size: int
    device: torch.device
    seed: int = 0
    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    last_batch: LastBatch = "drop"
    train: bool = True
    ten_crop: bool = False
    dtype: torch.dtype = torch.float32
    workers: int = 1
    with_draws: bool = False
    epochs: int | None = None  # the run's last epoch is epochs - 1: nothing is prepared past it (None: no end)
    normalize: Normalize = "mean"  # §2's mean subtraction on the 0–255 scale, or "std" (unit std too)
    channels_last: bool = False  # images in channels_last memory format (the NHWC the loader made)


def default_workers() -> int:
    """Loader threads or processes for this rank: the cores this process may use, shared by the ranks
    on this machine, at least 1.

    The cores are the process's CPU affinity (`os.sched_getaffinity`), which follows `taskset`,
    cgroup cpusets (containers) and SLURM's task binding, where `os.cpu_count()` counts the whole
    machine; the ranks are torchrun's LOCAL_WORLD_SIZE (1 alone). Under `torchrun --nproc-per-node 8`
    on 64 cores each rank gets 8, not 64.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


class CorruptSample(RuntimeError):
    """A sample that cannot be decoded during loading; the message names the shard and key (or the
    split's shards when the loader cannot tell which) and points to `alexnet-tools verify`."""

    @classmethod
    def naming(cls, tar: Path, key: str, reason: str) -> CorruptSample:
        data = tar.parent.parent
        return cls(
            f"{tar}: sample {key} cannot be decoded ({reason}); "
            f"check the shards with `alexnet-tools verify --data {data}` and re-run prepare"
        )

    @classmethod
    def from_worker(cls, error: CorruptSample) -> CorruptSample:
        """The one-line message again, out of the traceback text a DataLoader worker wraps it in."""
        text = str(error).strip()
        if text.startswith("Caught "):
            text = text.splitlines()[-1].split(": ", 1)[-1]
        return cls(text)


class Loader(Protocol):
    """What `make_loader` returns; see the module docstring for the promises."""

    config: LoaderConfig

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def derive_seed(*parts: int) -> int:
    """A 31-bit seed mixing (seed, epoch, rank, …) so that each combination gets its own stream."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """Rank's contiguous part of n ordered samples: [⌊rank·n/W⌋, ⌊(rank+1)·n/W⌋), as DALI's readers cut shards."""
    if n < world_size:
        raise ValueError(f"{n} samples cannot be split over {world_size} ranks")
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


def batches_per_epoch(n: int, config: LoaderConfig) -> int:
    """Batches this rank yields per epoch under the last-batch policy (see the module docstring)."""
    if config.last_batch == "drop":
        return (n // config.world_size) // config.batch_size
    part = rank_slice(n, config.rank, config.world_size)
    return -(-(part.stop - part.start) // config.batch_size)


def samples_per_epoch(n: int, config: LoaderConfig) -> int:
    """Samples this rank yields per epoch (all of its part, or its full batches)."""
    if config.last_batch == "drop":
        return batches_per_epoch(n, config) * config.batch_size
    part = rank_slice(n, config.rank, config.world_size)
    return part.stop - part.start


def shard_order(num_shards: int, config: LoaderConfig, epoch: int) -> list[int]:
    """The epoch's order of the tars: permuted by (seed, epoch) when training, identical on every rank."""
    if not config.train:
        return list(range(num_shards))
    return np.random.default_rng(derive_seed(config.seed, epoch)).permutation(num_shards).tolist()


def sample_order(n: int, config: LoaderConfig, epoch: int) -> np.ndarray:
    """The epoch's order of all n samples: permuted by (seed, epoch) when training, identical on every rank."""
    if not config.train:
        return np.arange(n)
    return np.random.default_rng(derive_seed(config.seed, epoch)).permutation(n)


@dataclass
class Position:
    """Where a loader is: its epoch and how many of that epoch's batches have been handed out."""

    epoch: int
    batch: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}


class SeededEpochs:
    """Epoch and position bookkeeping, the same for every loader.

    For loaders whose batches are a function of (seed, epoch, batch index) the position (epoch,
    batches handed out) is the whole resume state; one with more (DALI's pipeline checkpoint)
    adds it in `extra_state` and takes it back in `restore_extra`. A subclass sets `kind`,
    `config` and `samples`, calls `start_at(config.epoch)`, and begins every pass with
    `begin_pass()`, which gives the batch to start from: 0, or once the one `load_state_dict` set.
    """

    kind: str
    config: LoaderConfig
    samples: int

    def start_at(self, epoch: int) -> None:
        self.position = Position(epoch)
        self._resuming = False

    def __len__(self) -> int:
        return batches_per_epoch(self.samples, self.config)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch on the next iteration."""
        self.start_at(epoch)

    def begin_pass(self) -> int:
        if not self._resuming:
            self.position.batch = 0
        self._resuming = False
        return self.position.batch

    @property
    def resuming(self) -> bool:
        """Whether the next pass continues a state that `load_state_dict` restored."""
        return self._resuming

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches handed out (and whatever `extra_state` adds)."""
        return {
            "kind": self.kind,
            "config": config_fingerprint(self.config),
            **self.position.as_dict(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` on the next iteration (batch `state["batch"]` of its epoch)."""
        check_state(state, self.kind, self.config)
        self.set_epoch(state["epoch"])
        self.position.batch = state["batch"]
        self._resuming = True
        self.restore_extra(state)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra(self, state: dict[str, Any]) -> None:
        return None

    def last_epoch(self, epoch: int) -> bool:
        """Whether `epoch` is the run's last (`config.epochs`), so no later one needs preparing."""
        return self.config.epochs is not None and epoch >= self.config.epochs - 1


def check_state(state: dict[str, Any], kind: str, config: LoaderConfig) -> None:
    """Refuse a state saved by another kind of loader or with other knobs that change the order."""
    saved = state.get("config", {})
    mine = config_fingerprint(config)
    if state.get("kind") != kind or saved != mine:
        raise ValueError(f"loader state is for {state.get('kind')} {saved}, not {kind} {mine}")


def config_fingerprint(config: LoaderConfig) -> dict[str, Any]:
    """The knobs that decide which batches come out (the epoch and position travel separately).

    The memory format is not one of them: it changes strides, not values.
    """
    c = config
    return {
        "split": c.split,
        "batch_size": c.batch_size,
        "seed": c.seed,
        "rank": c.rank,
        "world_size": c.world_size,
        "last_batch": c.last_batch,
        "train": c.train,
        "ten_crop": c.ten_crop,
        "normalize": c.normalize,
    }

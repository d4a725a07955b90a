"""`--loader torch`: the baseline a PyTorch user would write, done well.

A map-style `ShardDataset` reads samples straight out of the memory-mapped tars through their
index (`ShardReader`), decodes with Pillow and takes the random window and flip on uint8 (`alexnet.pipeline.augment`,
as is). A `DataLoader` runs it on `config.workers` worker processes (by default `default_workers()`:
this process's cores over the ranks on this machine), persistent across epochs, with batches
collated into shared memory and pinned when they go to a GPU. Lighting and normalisation are one
batched step on the device, in the main process (`DeviceStep`): the workers hand over uint8, four times fewer
bytes than float32 to ship between processes.

Order and draws depend on nothing but (seed, epoch) and the sample: `EpochBatches` permutes all
samples by (seed, epoch), cuts this rank's contiguous part (`rank_slice`) and batches it under the
last-batch policy; each sample's draws come from a generator seeded by (seed, epoch, sample), so
the batches are the same whatever the number of workers, and a resume simply starts the batch
sampler at batch k.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from alexnet.pipeline.augment import center_crop, crop, draw_train, hflip, ten_crops
from alexnet.pipeline.loaders.contract import (
    CorruptSample,
    LoaderConfig,
    SeededEpochs,
    batches_per_epoch,
    rank_slice,
    sample_order,
    samples_per_epoch,
)
from alexnet.pipeline.loaders.device_step import DeviceStep
from alexnet.pipeline.store.pca_file import load_stats
from alexnet.pipeline.store.shards import ShardReader, decode_jpeg


class ShardDataset(Dataset):
    """Samples of a split's tars by global index; an item is `(index, epoch)` so draws follow the epoch.

    Returns `(window uint8 H×W×3 or 10×H×W×3, label, draws)`; `draws` is (dx, dy, flip, α) when
    training and None otherwise.
    """

    def __init__(self, reader: ShardReader, seed: int, train: bool, ten_crop: bool) -> None:
        self.reader = reader
        self.seed, self.train, self.ten_crop = seed, train, ten_crop

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int, tuple | None]:
        index, epoch = item
        jpeg, label = self.reader.sample(index)
        try:
            image = torch.from_numpy(decode_jpeg(jpeg))
        except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for a damaged JPEG
            raise CorruptSample.naming(self.reader.tar_path(index), self.reader.key(index), str(e)) from None
        if not self.train:
            return (ten_crops(image) if self.ten_crop else center_crop(image)), label, None
        dx, dy, flip, alpha = draw_train(np.random.default_rng([self.seed, epoch, index]))
        window = crop(image, dx, dy)
        return (hflip(window) if flip else window), label, (dx, dy, flip, alpha)


@dataclass
class Batch:
    """A collated batch: uint8 windows (float images once finished), labels and the draws."""

    images: torch.Tensor
    labels: torch.Tensor
    draws: dict[str, torch.Tensor] | None

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader's pinning thread calls this), so the device copies run asynchronously."""
        draws = None if self.draws is None else {k: v.pin_memory() for k, v in self.draws.items()}
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), draws)


def collate(samples: list[tuple[torch.Tensor, int, tuple | None]]) -> Batch:
    """Stack the uint8 windows (straight into shared memory in a worker), labels and draws."""
    draws = None
    if samples[0][2] is not None:
        dx, dy, flip, alpha = zip(*(s[2] for s in samples))
        draws = {
            "dx": torch.tensor(dx, dtype=torch.int64),
            "dy": torch.tensor(dy, dtype=torch.int64),
            "flip": torch.tensor(flip, dtype=torch.bool),
            "alpha": torch.from_numpy(np.stack(alpha)),
        }
    return Batch(
        default_collate([s[0] for s in samples]), torch.tensor([s[1] for s in samples], dtype=torch.int64), draws
    )


class EpochBatches:
    """Batch sampler: this rank's batches of `(index, epoch)` for `epoch`, from batch `start` on."""

    def __init__(self, n: int, config: LoaderConfig) -> None:
        self.n, self.config = n, config
        self.epoch, self.start = config.epoch, 0

    def __len__(self) -> int:
        return batches_per_epoch(self.n, self.config) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        c = self.config
        part = sample_order(self.n, c, self.epoch)[rank_slice(self.n, c.rank, c.world_size)]
        part = part[: samples_per_epoch(self.n, c)]
        for k in range(self.start, batches_per_epoch(self.n, c)):
            yield [(int(i), self.epoch) for i in part[k * c.batch_size : (k + 1) * c.batch_size]]


class TorchLoader(SeededEpochs):
    """The PyTorch loader behind `make_loader("torch", …)`; the contract is in `alexnet.pipeline.loaders.contract`."""

    kind = "torch"

    def __init__(self, config: LoaderConfig, prefetch_factor: int = 2) -> None:
        self.config = config
        self.step = DeviceStep(load_stats(config.data), config)
        self.dataset = ShardDataset(
            ShardReader.for_split(config.data, config.split), config.seed, config.train, config.ten_crop
        )
        self.samples = len(self.dataset)
        self.sampler = EpochBatches(self.samples, config)
        on_gpu = config.device.type == "cuda"
        workers = config.workers
        self.dataloader = DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=on_gpu,
            persistent_workers=workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
            # its own generator: iter() draws the workers' base seed from it, not from torch's global
            # RNG, so the trainer's dropout masks do not depend on when an epoch's iterator is made.
            generator=torch.Generator().manual_seed(config.seed),
        )
        self.start_at(config.epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        self.sampler.epoch, self.sampler.start = self.position.epoch, self.begin_pass()
        if self.position.batch >= len(self):
            return
        device = self.config.device
        batches = iter(self.dataloader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except CorruptSample as e:
                raise CorruptSample.from_worker(e) from None
            alpha = None if batch.draws is None else batch.draws["alpha"].to(device, non_blocking=True)
            images = self.step(batch.images.to(device, non_blocking=True), alpha)
            labels = batch.labels.to(device, non_blocking=True)
            self.position.batch += 1
            yield (images, labels, batch.draws) if self.config.with_draws else (images, labels)

    def close(self) -> None:
        """Stop the worker processes."""
        self.dataloader = None

"""`--loader ffcv`: the betons of `export-ffcv` through FFCV's loader, with the spec's crops in numba.

The pipelines, one small operation per step (`image_pipeline`, `label_pipeline`):

    train, CPU   SimpleRGBImageDecoder (full 256×256) → RandomCropFinish → ToTensor
    train, GPU   SimpleRGBImageDecoder → RandomCropFlip → ToTensor → ToDevice
    val          SimpleRGBImageDecoder → FixedCrops(centre, or the paper's ten) → ToTensor → ToDevice
    label        IntDecoder → ToTensor → Squeeze → ToDevice

Training on the CPU, RandomCropFinish does the whole step after the decode in one parallel numba
pass per batch (`_random_finish`): each image's window at its draws, mirrored, lit and normalised
as float32 in the batch contract's layout (the kernels of `cpu_finish`, which DALI's CPU graph
runs too), into batch arrays that are reused once the consumer lets go of them (`BatchBuffers`).
Elsewhere the uint8 crops go to the device and the PCA lighting and normalisation run there, in the
main thread (`DeviceStep`, one batched step, the torch loader's own): four times fewer bytes to
copy than floats, and the step is cheap on a GPU. The crops stay uint8 and channels last up to
there, since `augment.normalise` moves the channels first in the same pass
that makes floats (so FFCV's ToTorchImage, which also cannot take the 10×H×W×C ten-crop
samples, is not used). ToDevice is there only for an accelerator: on the CPU it would be one
more copy into one more set of buffers. Why the CPU path is fused (the profile):
docs/design.md, "GPU path", §4.

Order: the loader hands FFCV the exact sample ids of this rank's part of the epoch
(`sample_order` cut by `rank_slice`, trimmed by the last-batch policy) through `EpochOrder`, so
ordering, ranks, last batch and resume follow the contract of `alexnet.pipeline.loaders` as the
torch loader does; a resume at batch k hands over the ids from batch k on.

Draws: each training sample's dx, dy (uniform 0..32), flip (p = 0.5) and α (N(0, 0.1²) per
channel) are a pure function of (key, sample id), key = `derive_seed(seed, epoch)`: a
counter-based generator (SplitMix64 mixing, Box–Muller), so they do not depend on threads,
ranks or position. RandomCropFlip and RandomCropFinish compute the offsets and flip inside their
numba kernels; the same sample's α for the lighting is computed per batch (in FFCV's thread by
RandomCropFinish, in the main thread for the device step; with `with_draws` the main thread reports
all four). FFCV's jitted operations see only (images, buffer, sample ids), and numba freezes every
value a compiled function captures, so a per-epoch key could only be baked in by recompiling
the whole pipeline each epoch; both therefore declare themselves Python-level steps
(`jit_mode=False`) that call their numba kernels (parallel, nogil, compiled once and cached on
disk) with the key as an argument. The fixed validation crops have no key and are ordinary
jitted FFCV operations.

Decoding: FFCV decodes with libjpeg-turbo's fast integer IDCT (`TJFLAG_FASTDCT`, fixed in
libffcv), so from `jpg` betons its pixels differ from Pillow's (accurate IDCT) by about a level
on average and a few at most; from `raw` betons they are Pillow's exactly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numba
import numpy as np
import torch

from alexnet.pipeline.augment import CENTER_OFFSET, TEN_CROP_OFFSETS
from alexnet.pipeline.loaders.contract import (
    LoaderConfig,
    SeededEpochs,
    default_workers,
    derive_seed,
    rank_slice,
    sample_order,
    samples_per_epoch,
)
from alexnet.pipeline.loaders.cpu_finish import finish_window, finish_window_hwc
from alexnet.pipeline.loaders.device_step import DeviceStep, pinned_to
from alexnet.pipeline.paper import CROP_SIZE, FLIP_PROBABILITY, MAX_CROP_OFFSET, PCA_ALPHA_STD, STORED_SIZE
from alexnet.pipeline.store.betons import Mode, beton_path, export_hint, import_ffcv
from alexnet.pipeline.store.manifest import NotPrepared, read_manifest, split_shards
from alexnet.pipeline.store.pca_file import load_stats

import_ffcv()

from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder  # noqa: E402
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.pipeline.allocation_query import AllocationQuery  # noqa: E402
from ffcv.pipeline.operation import Operation  # noqa: E402
from ffcv.pipeline.state import State  # noqa: E402
from ffcv.transforms import Squeeze, ToDevice, ToTensor  # noqa: E402
from ffcv.traversal_order.base import TraversalOrder  # noqa: E402

U64 = np.uint64
GOLDEN = U64(0x9E3779B97F4A7C15)
MIX1, MIX2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
S11, S27, S30, S31, S32 = U64(11), U64(27), U64(30), U64(31), U64(32)
OFFSETS = U64(MAX_CROP_OFFSET + 1)
UNIT = 2.0**-53


# --- the per-sample draws: a pure function of (key, sample id) ---------------------------------


@numba.njit(cache=True, nogil=True)
def _mix(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijection of 64-bit words that scrambles every bit."""
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


@numba.njit(cache=True, nogil=True)
def _word(key: np.uint64, index: np.uint64, k: int) -> np.uint64:
    """The k-th random 64-bit word of sample `index` under `key` (counter mode)."""
    return _mix(_mix(_mix(key) ^ index) + U64(k) * GOLDEN)


@numba.njit(cache=True, nogil=True)
def _uniform(word: np.uint64) -> float:
    """A float in (0, 1] from the top 53 bits."""
    return (float(word >> S11) + 1.0) * UNIT


@numba.njit(cache=True, nogil=True)
def _offsets(key: np.uint64, index: np.uint64) -> tuple[int, int, bool]:
    """dx, dy uniform over 0..32 (Lemire's multiply-shift on 32 bits) and the flip bit."""
    dx = ((_word(key, index, 1) >> S32) * OFFSETS) >> S32
    dy = ((_word(key, index, 2) >> S32) * OFFSETS) >> S32
    return int(dx), int(dy), _uniform(_word(key, index, 3)) <= FLIP_PROBABILITY


@numba.njit(cache=True, nogil=True)
def _normal_pair(key: np.uint64, index: np.uint64, k: int) -> tuple[float, float]:
    """Two independent N(0, 1) values from words k and k+1 (Box–Muller)."""
    r = np.sqrt(-2.0 * np.log(_uniform(_word(key, index, k))))
    theta = 2.0 * np.pi * _uniform(_word(key, index, k + 1))
    return r * np.cos(theta), r * np.sin(theta)


@numba.njit(cache=True, nogil=True)
def _alpha(key: np.uint64, index: np.uint64, out: np.ndarray) -> None:
    """α ~ N(0, 0.1²) per channel, into out[0:3]."""
    out[0], out[1] = _normal_pair(key, index, 4)
    out[2] = _normal_pair(key, index, 6)[0]
    out *= PCA_ALPHA_STD


@numba.njit(cache=True, nogil=True)
def _draws(
    key: np.uint64, indices: np.ndarray, dx: np.ndarray, dy: np.ndarray, flip: np.ndarray, alpha: np.ndarray
) -> None:
    for i in range(len(indices)):
        dx[i], dy[i], flip[i] = _offsets(key, U64(indices[i]))
        _alpha(key, U64(indices[i]), alpha[i])


def train_draws(key: int, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The draws of the samples `indices` under `key`: dx, dy (int64), flip (bool), alpha (float32 N×3)."""
    n = len(indices)
    out = {
        "dx": np.empty(n, np.int64),
        "dy": np.empty(n, np.int64),
        "flip": np.empty(n, np.bool_),
        "alpha": np.empty((n, 3), np.float64),
    }
    _draws(U64(key), np.asarray(indices, np.uint64), out["dx"], out["dy"], out["flip"], out["alpha"])
    out["alpha"] = out["alpha"].astype(np.float32)
    return out


# --- the crops: numba kernels and the FFCV operations around them -----------------------------


@numba.njit(cache=True, nogil=True)
def _window(image: np.ndarray, dx: int, dy: int, flip: bool, out: np.ndarray) -> None:
    """out = the CROP_SIZE² window of `image` at column dx, row dy, mirrored left↔right if `flip`.

    Rows as flat runs of interleaved bytes, in plain loops: numba's slice assignment from a
    strided view (`out[:] = window[:, ::-1]`) cost 0.24 ms per window on two threads, half a
    decode; these loops about 0.015. Both arrays must be C-contiguous (FFCV's are).
    """
    rows = image.reshape(image.shape[0], 3 * image.shape[1])
    outs = out.reshape(CROP_SIZE, 3 * CROP_SIZE)
    for y in range(CROP_SIZE):
        # Sliced first, so that every index below counts up from 0: an index numba cannot prove
        # non-negative gets a wrap-around branch per byte, which stops LLVM vectorising (10× slower).
        src, dst = rows[dy + y, 3 * dx : 3 * (dx + CROP_SIZE)], outs[y]
        if flip:
            for x in range(CROP_SIZE):
                k = 3 * (CROP_SIZE - 1 - x)
                dst[3 * x], dst[3 * x + 1], dst[3 * x + 2] = src[k], src[k + 1], src[k + 2]
        else:
            for k in range(3 * CROP_SIZE):
                dst[k] = src[k]


@numba.njit(cache=True, nogil=True, parallel=True)
def _random_crops(images: np.ndarray, out: np.ndarray, indices: np.ndarray, key: np.uint64) -> np.ndarray:
    """Each image's window at its own draws (the batch spread over numba's threads)."""
    for i in numba.prange(len(indices)):
        dx, dy, flip = _offsets(key, U64(indices[i]))
        _window(images[i], dx, dy, flip, out[i])
    return out[: len(indices)]


@numba.njit(cache=True, nogil=True, parallel=True)
def _fixed_crops(images: np.ndarray, crops: np.ndarray, offsets: np.ndarray) -> None:
    """crops[i, k] = image i's window at offsets row k (dx, dy, flip)."""
    for i in numba.prange(images.shape[0]):
        for k in range(len(offsets)):
            _window(images[i], offsets[k, 0], offsets[k, 1], offsets[k, 2] != 0, crops[i, k])


@numba.njit(cache=True, nogil=True, parallel=True)
def _random_finish(
    images: np.ndarray,
    out: np.ndarray,
    indices: np.ndarray,
    key: np.uint64,
    means: np.ndarray,
    scale: np.ndarray,
    channels_last: bool,
) -> np.ndarray:
    """The whole training step after the decode, per image: its window at its draws, mirrored,
    lit and normalised as float32 into out[i] (3×H×W, or H×W×3 with `channels_last`).

    The window is read in place from the decoded image; `means` holds each sample's mean with
    its lighting folded in, `scale` is 1/std.
    """
    for i in numba.prange(len(indices)):
        dx, dy, flip = _offsets(key, U64(indices[i]))
        if channels_last:
            finish_window_hwc(out[i], images[i], dx, dy, means[i], scale, flip)
        else:
            finish_window(out[i], images[i], dx, dy, means[i], scale, flip)
    return out[: len(indices)]


class BatchBuffers:
    """Float32 batch arrays for the fused training step, each reused once nothing refers to it.

    A fresh 256×3×224×224 float32 batch is 154 MB of new pages, and faulting them in cost about
    0.4 ms per image, as much as the decode. A handed-out batch stays valid for as long as anyone
    holds it (or any view of it): `torch.from_numpy` keeps a reference to the array, so an array
    whose only references are ours is free. Free arrays beyond `keep` are let go.
    """

    def __init__(self, shape: tuple[int, ...], keep: int) -> None:
        self.shape, self.keep = shape, keep
        self.arrays: list[np.ndarray] = []

    def take(self) -> np.ndarray:
        """A batch array nobody else holds (a new one when all are in use)."""
        # Only the list and getrefcount's own argument refer to a free array.
        free = [i for i in range(len(self.arrays)) if sys.getrefcount(self.arrays[i]) == 2]
        if not free:
            self.arrays.append(np.empty(self.shape, np.float32))
            return self.arrays[-1]
        chosen = self.arrays[free[0]]
        if len(self.arrays) > self.keep:  # a burst of held batches is over: give the memory back
            extra = set(free[1:][: len(self.arrays) - self.keep])
            self.arrays = [a for i, a in enumerate(self.arrays) if i not in extra]
        return chosen


class RandomCropFinish(Operation):
    """The training step after FFCV's decoder on the CPU, in one pass: crop, flip, lighting,
    normalisation and layout, into a `BatchBuffers` array (`_random_finish`).

    A Python-level step, as RandomCropFlip, so that the epoch's key reaches the kernel; each
    sample's mean is the device step's own (`DeviceStep.means` of its α), so the values are
    the uint8 path's to float rounding.
    """

    def __init__(self, key: EpochKey, step: DeviceStep, batch_size: int, channels_last: bool, keep: int) -> None:
        super().__init__()
        self.key, self.step, self.channels_last = key, step, channels_last
        self.shape = (CROP_SIZE, CROP_SIZE, 3) if channels_last else (3, CROP_SIZE, CROP_SIZE)
        self.buffers = BatchBuffers((batch_size, *self.shape), keep)

    def generate_code(self) -> Callable:
        key, step, buffers, channels_last = self.key, self.step, self.buffers, self.channels_last
        scale = (1.0 / step.std).numpy().astype(np.float32)

        def random_crop_finish(images, dst, indices):
            alpha = torch.from_numpy(train_draws(key.value, indices)["alpha"])
            means = step.means(alpha).numpy()
            return _random_finish(images, buffers.take(), indices, U64(key.value), means, scale, channels_last)

        random_crop_finish.with_indices = True
        return random_crop_finish

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, None]:
        # No allocation from FFCV: the output lives in `buffers`, which outlive FFCV's reuse.
        return replace(previous_state, jit_mode=False, shape=self.shape, dtype=np.dtype(np.float32)), None


class EpochKey:
    """The key of the epoch being loaded, read by RandomCropFlip at every batch."""

    def __init__(self) -> None:
        self.value = 0


class RandomCropFlip(Operation):
    """The training crop: a 224×224 window at (dx, dy) from the draws, mirrored when they say so.

    A Python-level step around the numba kernel `_random_crops`, so that the epoch's key can
    change without recompiling (see the module docstring).
    """

    def __init__(self, key: EpochKey) -> None:
        super().__init__()
        self.key = key

    def generate_code(self) -> Callable:
        key = self.key

        def random_crop_flip(images, dst, indices):
            return _random_crops(images, dst, indices, U64(key.value))

        random_crop_flip.with_indices = True
        return random_crop_flip

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        shape = (CROP_SIZE, CROP_SIZE, 3)
        return replace(previous_state, jit_mode=False, shape=shape), AllocationQuery(shape, previous_state.dtype)


CENTER = np.array([[CENTER_OFFSET, CENTER_OFFSET, 0]], np.int64)
TEN = np.array([[dx, dy, flip] for dx, dy, flip in TEN_CROP_OFFSETS], np.int64)


class FixedCrops(Operation):
    """Validation crops at fixed (dx, dy, flip) rows: one (the centre) → H×W×3, ten → 10×H×W×3.

    A jitted FFCV operation; the loop over the batch is the cached parallel kernel
    `_fixed_crops` (a parallel loop compiled afresh in every loader costs about 4 s).
    """

    def __init__(self, offsets: np.ndarray) -> None:
        super().__init__()
        self.offsets = offsets

    def generate_code(self) -> Callable:
        offsets = self.offsets

        def fixed_crops(images, dst):
            _fixed_crops(images, dst.reshape((dst.shape[0], len(offsets), CROP_SIZE, CROP_SIZE, 3)), offsets)
            return dst[: images.shape[0]]

        return fixed_crops

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        shape = (CROP_SIZE, CROP_SIZE, 3) if len(self.offsets) == 1 else (len(self.offsets), CROP_SIZE, CROP_SIZE, 3)
        return replace(previous_state, jit_mode=True, shape=shape), AllocationQuery(shape, previous_state.dtype)


class EpochOrder(TraversalOrder):
    """The sample ids of the coming pass, exactly as FfcvLoader sets them (FFCV then batches them in order).

    FFCV builds its traversal order by calling the object it is given with itself
    (`order(loader)`), so the instance hands itself back.
    """

    def __init__(self, indices: np.ndarray) -> None:
        self.indices = indices

    def __call__(self, loader: Loader) -> EpochOrder:
        return self

    def sample_order(self, epoch: int) -> np.ndarray:
        return self.indices


def image_pipeline(config: LoaderConfig, key: EpochKey, finish: RandomCropFinish | None = None) -> list[Operation]:
    """Decode the full 256×256 image, then either `finish` it there (training on the CPU) or crop
    (random, centre or ten) and hand over a uint8 tensor on the device for the device step."""
    if finish is not None:
        return [SimpleRGBImageDecoder(), finish, ToTensor()]
    if config.train:
        crop = RandomCropFlip(key)
    else:
        crop = FixedCrops(TEN if config.ten_crop else CENTER)
    return [SimpleRGBImageDecoder(), crop, ToTensor(), *to_device(config.device)]


def label_pipeline(device: torch.device) -> list[Operation]:
    return [IntDecoder(), ToTensor(), Squeeze(1), *to_device(device)]


def to_device(device: torch.device) -> list[Operation]:
    """FFCV's asynchronous copy to an accelerator; nothing for the CPU, where it would only be
    one more copy into one more set of buffers (the device step makes new tensors anyway)."""
    return [] if device.type == "cpu" else [ToDevice(device, non_blocking=True)]


class FfcvLoader(SeededEpochs):
    """The FFCV loader behind `make_loader("ffcv", …)`; the contract is in `alexnet.pipeline.loaders.contract`.

    Options: `mode` ("jpg": stored JPEGs, the default; "raw": decoded pixels) picks the beton,
    `os_cache` reads it through the page cache (FFCV's default; shared by every process on the
    machine) rather than FFCV's own process cache, `batches_ahead` is FFCV's prefetch depth.
    Threads: `config.workers` (`default_workers()` by default), capped at numba's thread count; FFCV
    also sets torch's process-wide thread count to it at every pass.
    """

    kind = "ffcv"

    def __init__(self, config: LoaderConfig, mode: Mode = "jpg", os_cache: bool = True, batches_ahead: int = 3) -> None:
        self.config = config
        self.path = existing_beton(config.data, config.split, mode)
        split_shards(config.data, config.split)  # the shards it was exported from are finished and whole
        self.step = DeviceStep(load_stats(config.data), config)
        self.key = EpochKey()
        self.fused = config.train and config.device.type == "cpu"
        finish = (
            RandomCropFinish(self.key, self.step, config.batch_size, config.channels_last, keep=batches_ahead + 3)
            if self.fused
            else None
        )
        threads = ffcv_threads(config.workers)
        self.samples = beton_samples(self.path)
        expected = read_manifest(config.data)["splits"][config.split]["samples"]
        if self.samples != expected:
            raise NotPrepared(
                f"{self.path}: {self.samples} samples, the manifest's {config.split} has {expected}; re-run `{export_hint(config.data, mode)}`"
            )
        # FFCV sizes every pass by the first order it sees: the longest, a whole epoch.
        self.order = EpochOrder(self.epoch_part(config.epoch))
        self.ffcv = Loader(
            str(self.path),
            batch_size=config.batch_size,
            num_workers=threads,
            os_cache=os_cache,
            order=self.order,
            drop_last=False,
            batches_ahead=batches_ahead,
            seed=0,
            pipelines={"image": image_pipeline(config, self.key, finish), "label": label_pipeline(config.device)},
        )
        check_images(self.ffcv.reader.metadata[f"f{self.ffcv.field_name_to_f_ix['image']}"], self.path)
        self.start_at(config.epoch)
        self._running: Iterator | None = None

    def epoch_part(self, epoch: int) -> np.ndarray:
        """This rank's sample ids of `epoch`, in order, trimmed by the last-batch policy."""
        c = self.config
        part = sample_order(self.samples, c, epoch)[rank_slice(self.samples, c.rank, c.world_size)]
        return part[: samples_per_epoch(self.samples, c)].astype(np.uint64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        start = self.begin_pass() * self.config.batch_size
        self._stop()
        c, epoch = self.config, self.position.epoch
        ids = self.epoch_part(epoch)[start:]
        if len(ids) == 0:
            return
        self.key.value = derive_seed(c.seed, epoch)
        self.order.indices = ids
        running = self._running = iter(self.ffcv)
        try:
            for k, (images, labels) in enumerate(running):
                images, draws = self.finish(images, ids[k * c.batch_size : (k + 1) * c.batch_size])
                labels = labels.clone()  # out of FFCV's buffer, which it reuses a few batches on
                self.position.batch += 1
                yield (images, labels, draws) if c.with_draws else (images, labels)
                if self._running is not running:
                    return  # a newer pass has started (and stopped this one)
        finally:
            stop(running)

    def finish(self, images: torch.Tensor, ids: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """The device step: lighting from each sample's α (training) and normalisation, channels first.

        Returns the new float images (FFCV's uint8 buffer is free again) and the draws (None for
        validation). Fused (training on the CPU), the images are already final floats
        (channels last in memory with `channels_last`), and the draws are made only when asked for.
        """
        c = self.config
        want_draws = c.train and (c.with_draws or not self.fused)
        draws = {k: torch.from_numpy(v) for k, v in train_draws(self.key.value, ids).items()} if want_draws else None
        if self.fused:
            return (images.movedim(-1, -3) if c.channels_last else images).to(c.dtype), draws
        alpha = None if draws is None else pinned_to(draws["alpha"], images.device)
        return self.step(images, alpha), draws

    def _stop(self) -> None:
        if self._running is not None:
            stop(self._running)
            self._running = None

    def close(self) -> None:
        """Stop FFCV's loading thread."""
        self._stop()


def ffcv_threads(workers: int | None) -> int:
    """FFCV's thread count for `workers` (every core when None), capped at numba's thread count."""
    return max(1, min(default_workers() if workers is None else workers, numba.config.NUMBA_NUM_THREADS))


def existing_beton(data: Path, split: str, mode: Mode) -> Path:
    """The split's beton, or FileNotFoundError naming the command that writes it."""
    path = beton_path(data, split, mode)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no FFCV file for {split}; run `{export_hint(data, mode)}` first")
    return path


def decode_only(data: Path, batch_size: int, workers: int | None = None) -> Loader:
    """FFCV's own loader over the train JPEG beton doing nothing but decode (SimpleRGBImageDecoder),
    in random order, full batches: the `alexnet-bench loaders` ceiling of FFCV's decoder."""
    return Loader(
        str(existing_beton(data, "train", "jpg")),
        batch_size=batch_size,
        num_workers=ffcv_threads(workers),
        order=OrderOption.RANDOM,
        drop_last=True,
        seed=0,
        pipelines={"image": [SimpleRGBImageDecoder(), ToTensor()], "label": label_pipeline(torch.device("cpu"))},
    )


def stop(running) -> None:
    """End an FFCV epoch iterator and wait for its thread.

    So that no two passes ever run at once (two threads launching parallel numba kernels abort
    the process under numba's workqueue threading layer) and an abandoned pass frees its
    buffers (several batches). FFCV's `close()` alone is not enough: its thread looks at the
    request only when its queue is full, and blocks for good putting its end marker into a full
    queue. So its remaining batches are dropped first (it finishes at most the one in hand) and
    the queue is emptied until the thread has ended.
    """
    running.iter_ixes = iter(())
    running.close()
    while running.is_alive():
        while not running.output_queue.empty():
            running.output_queue.get_nowait()
        running.join(0.01)


def beton_samples(path) -> int:
    """The sample count from a beton's header."""
    from ffcv.types import HeaderType

    return int(np.fromfile(path, dtype=HeaderType, count=1)[0]["num_samples"])


def check_images(metadata: np.ndarray, path) -> None:
    """Every image must be the stored 256×256 (SimpleRGBImageDecoder and the crops rely on it)."""
    sizes = np.unique(np.stack([metadata["height"], metadata["width"]], axis=1), axis=0)
    if sizes.tolist() != [[STORED_SIZE, STORED_SIZE]]:
        raise ValueError(f"{path}: images must all be {STORED_SIZE}×{STORED_SIZE}, found {sizes.tolist()[:3]}")

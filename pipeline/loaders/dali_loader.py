"""`--loader dali`: the shards through one DALI graph, on the GPU or (device_id=None) on the CPU.

The training graph, one small step per line (`train_graph`):

    read      fn.readers.webdataset over the tars + indexes, this rank's part, buffer-shuffled
    draw      crop offsets uniform over 0..32, a coin flip, α ~ N(0, 0.1²) per channel
    decode    only the 224×224 window (region-of-interest decoding), "mixed" (nvJPEG) or CPU
    lighting  per-sample mean 255·(mean − δ) with δ = eigvec·(α ⊙ eigval) (fn.coord_transform)
    finish    mirror + normalise + CHW + float in one fused step: fn.crop_mirror_normalize on the
              GPU; on the CPU a numba kernel inside the graph (`dali_cpu_finish`), cheaper there

With `channels_last` the finishing step writes HWC instead (crop_mirror_normalize's
`output_layout="HWC"`, or the numba kernel's HWC variant) and `to_torch` hands over the
channels-first view of it: a `channels_last`-strided [B, 3, 224, 224], no copy. The normalisation
mode picks the constants (`normalise_constants`): the mean alone (default) or the mean and std.

Epochs: the pipeline is rebuilt for every epoch, seeded by (seed, epoch, rank), over the tars in
that epoch's order (`shard_order`: permuted by (seed, epoch), the same on every rank). DALI's
reader cuts the concatenated samples into `num_shards` contiguous parts by `shard_id` = global
rank; its shuffle draws only among samples of the current pass (the loader tracks pass
boundaries inside the buffer), so a fresh pipeline's first pass is exactly this rank's part,
each sample once. Iterations are scheduled by hand (`schedule_run`/`outputs`) so that the
prefetch never computes a batch past the epoch; the short last batch ("partial") is trimmed
here, so `pad_last_batch` stays off, and `stick_to_shard` keeps the reader on this rank's part.
While a training epoch's last batches go out, the next epoch's pipeline is built and started
(`start_epoch`), so the next `set_epoch` + iteration does not wait for the build and the shuffle
buffer's fill; another epoch number drops it.

Labels: the `.cls` members (ASCII digits of any length) are right-padded to the batch's longest
with `fn.pad` and turned into int64 on the host by a vectorised digit fold (`decode_labels`):
exact, and a few microseconds per batch.

Resume: the pipeline runs with `enable_checkpointing=True`; `state_dict()` stores
`pipe.checkpoint()` (reader position and every random generator after the batches handed out),
and a resumed loader builds the same epoch's pipeline with `checkpoint=`. The epoch and position
bookkeeping is the other loaders' (`SeededEpochs`); no pipeline is started past the run's last
epoch (`LoaderConfig.epochs`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvidia.dali import Pipeline, fn, types

from alexnet.pipeline.augment import (
    CENTER_OFFSET,
    TEN_CROP_OFFSETS,
    Normalize,
    crop_position,
    lighting_matrix,
    normalise_constants,
)
from alexnet.pipeline.loaders.contract import (
    SHUFFLE_BUFFER,
    CorruptSample,
    LoaderConfig,
    SeededEpochs,
    derive_seed,
    rank_slice,
    samples_per_epoch,
    shard_order,
)
from alexnet.pipeline.loaders.dali_cpu_finish import finish_on_cpu
from alexnet.pipeline.loaders.device_step import pinned_to
from alexnet.pipeline.paper import CROP_SIZE, FLIP_PROBABILITY, MAX_CROP_OFFSET, PCA_ALPHA_STD, STORED_SIZE
from alexnet.pipeline.store import storage
from alexnet.pipeline.store.manifest import index_path
from alexnet.pipeline.store.pca_file import PcaStats, load_stats
from alexnet.pipeline.store.shards import ShardReader

READER = "reader"
LABEL_PAD = 255  # not an ASCII digit
CROP_POSITIONS = [crop_position(k) for k in range(MAX_CROP_OFFSET + 1)]  # 0/32 … 32/32: exact offsets 0..32
# nvJPEG buffers per decoding thread, sized for the stored 256×256 RGB images with ample headroom.
GPU_DECODE_PADDING = 4 << 20


@dataclass(frozen=True)
class GraphSettings:
    """What the graph builders need besides the data: device, statistics, output type."""

    gpu: bool
    pca: PcaStats
    dtype: types.DALIDataType
    hw_decoder_load: float
    normalize: Normalize = "mean"
    channels_last: bool = False

    @property
    def layout(self) -> str:
        """The finishing step's output layout: HWC for channels_last, else CHW."""
        return "HWC" if self.channels_last else "CHW"


@dataclass(frozen=True)
class TrainDraws:
    """The per-sample random draws of one training batch (DALI data nodes)."""

    pos_x: Any
    pos_y: Any
    flip: Any
    alpha: Any

    @classmethod
    def sample(cls) -> TrainDraws:
        """Crop positions from the 33 exact offsets, a fair coin, α ~ N(0, 0.1²) per channel."""
        return cls(
            pos_x=fn.random.uniform(values=CROP_POSITIONS),
            pos_y=fn.random.uniform(values=CROP_POSITIONS),
            flip=fn.random.coin_flip(probability=FLIP_PROBABILITY),
            alpha=fn.random.normal(shape=[1, 3], stddev=PCA_ALPHA_STD),
        )


def read(tars: list[Path], config: LoaderConfig, buffer: int) -> tuple[Any, Any]:
    """This rank's part of the tars: encoded JPEGs and padded label digits."""
    jpegs, cls = fn.readers.webdataset(
        name=READER,
        paths=[str(t) for t in tars],
        index_paths=[str(index_path(t)) for t in tars],
        ext=["jpg", "cls"],
        missing_component_behavior="error",
        shard_id=config.rank,
        num_shards=config.world_size,
        stick_to_shard=True,
        random_shuffle=config.train,
        initial_fill=buffer,
    )
    return jpegs, fn.pad(cls, fill_value=LABEL_PAD)


def decoder_options(s: GraphSettings) -> dict[str, Any]:
    """CPU decoding, or nvJPEG with the hardware decoder's share and preallocated buffers."""
    if not s.gpu:
        return {"device": "cpu"}
    return {
        "device": "mixed",
        "hw_decoder_load": s.hw_decoder_load,
        "preallocate_width_hint": STORED_SIZE,
        "preallocate_height_hint": STORED_SIZE,
        "device_memory_padding": GPU_DECODE_PADDING,
        "host_memory_padding": GPU_DECODE_PADDING,
        "jpeg_fancy_upsampling": True,  # the chroma upsampling of libjpeg-turbo (Pillow, DALI's CPU path)
    }


def decode_window(jpegs: Any, pos_x: Any, pos_y: Any, s: GraphSettings) -> Any:
    """Decode only the 224×224 window at (pos_x, pos_y): uint8 HWC RGB."""
    return fn.decoders.image_crop(
        jpegs,
        crop=(CROP_SIZE, CROP_SIZE),
        crop_pos_x=pos_x,
        crop_pos_y=pos_y,
        rounding="round",
        output_type=types.RGB,
        **decoder_options(s),
    )


def lighting_mean(alpha: Any, pca: PcaStats) -> Any:
    """Per-sample normalisation mean 255·(mean − δ), δ = eigvec·(α ⊙ eigval): the lighting, folded in."""
    mean, _ = normalise_constants(pca)  # the mean is the same in every normalisation mode
    m = -255.0 * lighting_matrix(pca)
    return fn.reshape(fn.coord_transform(alpha, M=m.flatten().tolist(), T=mean), shape=[3])


def finish(images: Any, s: GraphSettings, alpha: Any = None, flip: Any = None) -> Any:
    """Mirror, lighting, normalise, CHW and the output dtype in one fused step.

    On the GPU that is `crop_mirror_normalize`; on the CPU the numba kernel of `dali_cpu_finish`,
    three times cheaper there (its docstring has the figures).
    """
    default_mean, std = normalise_constants(s.pca, s.normalize)
    mean = default_mean if alpha is None else lighting_mean(alpha, s.pca)
    if s.gpu:
        return fn.crop_mirror_normalize(
            images, mirror=0 if flip is None else flip, mean=mean, std=std, output_layout=s.layout, dtype=s.dtype
        )
    images = finish_on_cpu(images, mean, std, flip, s.channels_last)
    return images if s.dtype == types.FLOAT else fn.cast(images, dtype=s.dtype)


def crop_finish(images: Any, s: GraphSettings, dx: int, dy: int, flip: bool) -> Any:
    """One fixed crop of a whole decoded image, mirrored or not, normalised: `crop_mirror_normalize` on either device."""
    mean, std = normalise_constants(s.pca, s.normalize)
    return fn.crop_mirror_normalize(
        images,
        crop=(CROP_SIZE, CROP_SIZE),
        crop_pos_x=crop_position(dx),
        crop_pos_y=crop_position(dy),
        mirror=int(flip),
        mean=mean,
        std=std,
        output_layout=s.layout,
        dtype=s.dtype,
    )


def train_graph(jpegs: Any, s: GraphSettings) -> tuple[Any, TrainDraws]:
    """Random window, flip and lighting, normalised: the spec's training sample."""
    draws = TrainDraws.sample()
    images = decode_window(jpegs, draws.pos_x, draws.pos_y, s)
    return finish(images, s, alpha=draws.alpha, flip=draws.flip), draws


def center_graph(jpegs: Any, s: GraphSettings) -> Any:
    """The central window, decoded alone, normalised."""
    pos = crop_position(CENTER_OFFSET)
    return finish(decode_window(jpegs, pos, pos, s), s)


def ten_crop_graph(jpegs: Any, s: GraphSettings) -> Any:
    """Decode once, then the ten crops (`TEN_CROP_OFFSETS` order) stacked: 10×3×224×224 (10×224×224×3 for HWC)."""
    images = fn.decoders.image(jpegs, output_type=types.RGB, **decoder_options(s))
    return fn.stack(*(crop_finish(images, s, dx, dy, flip) for dx, dy, flip in TEN_CROP_OFFSETS), axis=0)


def decode_labels(padded: np.ndarray) -> torch.Tensor:
    """[B, L] uint8 ASCII digits right-padded with LABEL_PAD → int64 [B]."""
    values = np.zeros(len(padded), dtype=np.int64)
    for column in padded.T:
        digit = column != LABEL_PAD
        values = np.where(digit, values * 10 + column.astype(np.int64) - ord("0"), values)
    return torch.from_numpy(values)


def to_torch(batch: Any, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A dense DALI batch as a torch tensor on `device`, without a copy.

    With the dynamic executor the output buffer belongs to the returned object, so DLPack hands
    it over (on a GPU, ordered after DALI's stream on torch's current one), as DALI's own
    iterator does; a copy here cost as much as the augmentation on the CPU. With `channels_last`
    the batch is HWC (…×H×W×3) and the result is its channels-first view (…×3×H×W, channels
    innermost in memory: torch's `channels_last` for a 4-D batch).
    """
    with device:
        images = torch.from_dlpack(batch.as_tensor())
    return images.movedim(-1, -3) if channels_last else images


def handover_stream(device: torch.device) -> torch.cuda.Stream | None:
    """The stream DALI's outputs are handed over on: torch's current stream of `device` (None on the CPU).

    With it, `Pipeline.outputs` returns once the batch's work is queued: torch's stream waits on
    that one batch's event, and the output buffers are re-bound to torch's stream, so they are
    freed in its order after the last kernel that reads them. Without it DALI's executor waits
    for the batch on the host (docs/design.md, "GPU path", §2).
    """
    return torch.cuda.current_stream(device) if device.type == "cuda" else None


def decoder_buffers(threads: int, gpu: bool) -> dict[str, int]:
    """What nvJPEG preallocates for `threads` decoding threads of one rank ("mixed" decoder only):
    two pinned host buffers and one device buffer of GPU_DECODE_PADDING bytes per thread (the
    `host_memory_padding` and `device_memory_padding` schema docs). Recorded in config.json."""
    padding = GPU_DECODE_PADDING if gpu else 0
    return {
        "threads": threads,
        "padding_bytes": padding,
        "pinned_host_bytes": 2 * padding * threads,
        "device_bytes": padding * threads,
    }


def cuda_index(device: torch.device) -> int:
    """The CUDA ordinal of `device` ("cuda" alone means torch's current device)."""
    return torch.cuda.current_device() if device.index is None else device.index


class DaliLoader(SeededEpochs):
    """The DALI loader behind `make_loader("dali", …)`; the contract is in `alexnet.pipeline.loaders.contract`."""

    kind = "dali"

    def __init__(
        self,
        config: LoaderConfig,
        prefetch_queue_depth: int = 2,
        shuffle_buffer: int = SHUFFLE_BUFFER,
        hw_decoder_load: float = 0.65,
    ) -> None:
        self.config = config
        reader = ShardReader.for_split(config.data, config.split)
        self.tars, self.samples = reader.tars, len(reader)
        part = rank_slice(self.samples, config.rank, config.world_size)
        self.buffer = max(1, min(shuffle_buffer, part.stop - part.start))
        self.prefetch_queue_depth = prefetch_queue_depth
        gpu = config.device.type == "cuda"
        dtype = {torch.float32: types.FLOAT, torch.float16: types.FLOAT16}[config.dtype]
        self.settings = GraphSettings(
            gpu, load_stats(config.data), dtype, hw_decoder_load, config.normalize, config.channels_last
        )
        self.decoder_buffers = decoder_buffers(max(1, config.workers), gpu)
        self._checkpoint: bytes | str | None = None  # set by load_state_dict, consumed by __iter__
        self._pipe: Pipeline | None = None
        self._ahead: tuple[int, Pipeline] | None = None  # (next epoch, its pipeline, already started)
        self.start_at(config.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch on the next iteration (keeping its early-started pipeline)."""
        super().set_epoch(epoch)
        self._pipe = None
        if self._ahead is not None and self._ahead[0] != epoch:
            self._ahead = None
        self._checkpoint = None

    def build(self, epoch: int, checkpoint: bytes | str | None = None, depth: int | None = None) -> Pipeline:
        """The pipeline for one epoch of this rank (resumed from `checkpoint` when given)."""
        c = self.config
        order = shard_order(len(self.tars), c, epoch)
        pipe = Pipeline(
            batch_size=c.batch_size,
            num_threads=self.decoder_buffers["threads"],
            device_id=cuda_index(c.device) if self.settings.gpu else None,
            seed=derive_seed(c.seed, epoch, c.rank),
            prefetch_queue_depth=depth or self.prefetch_queue_depth,
            exec_dynamic=True,  # outputs owned by the caller: zero-copy hand-over to torch
            enable_checkpointing=True,
            checkpoint=checkpoint,
        )
        with pipe:
            jpegs, labels = read([self.tars[i] for i in order], c, self.buffer)
            if c.train:
                images, draws = train_graph(jpegs, self.settings)
                extra = (
                    [draws.pos_x, draws.pos_y, draws.flip, fn.reshape(draws.alpha, shape=[3])] if c.with_draws else []
                )
            else:
                images, extra = (ten_crop_graph if c.ten_crop else center_graph)(jpegs, self.settings), []
            pipe.set_outputs(images, labels, *extra)
        try:
            pipe.build()  # opens the tars: on S3, DALI's first requests
        except RuntimeError as e:
            if (failed := self.store_failure(e)) is not None:
                raise failed from None
            raise
        return pipe

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        resume, self._checkpoint = self._checkpoint, None
        ahead, self._ahead, self._pipe = self._ahead, None, None
        start = self.begin_pass()
        if start >= len(self):
            return
        depth = min(self.prefetch_queue_depth, len(self) - start)
        if ahead is not None and ahead[0] == self.position.epoch and start == 0:
            pipe = ahead[1]  # built and started while the previous epoch's last batches went out
        else:
            pipe = self.start_epoch(self.position.epoch, resume or None, depth)
        self._pipe = pipe
        total, size = samples_per_epoch(self.samples, self.config), self.config.batch_size
        try:
            scheduled = depth
            for k in range(start, len(self)):
                outputs = self.outputs(pipe)
                if start + scheduled < len(self):  # never run past the epoch: no batch computed in vain
                    pipe.schedule_run()
                    scheduled += 1
                elif self.config.train and self._ahead is None and not self.last_epoch(self.position.epoch):
                    following = self.position.epoch + 1
                    self._ahead = (
                        following,
                        self.start_epoch(following, None, min(self.prefetch_queue_depth, len(self))),
                    )
                batch = self.convert(outputs, min(size, total - k * size))
                self.position.batch = k + 1
                yield batch
        finally:
            if self._pipe is pipe and self.position.batch == len(self):
                self._pipe = None

    def outputs(self, pipe: Pipeline) -> tuple:
        """The next batch's outputs, bound to torch's current stream on a GPU (`handover_stream`);
        a sample the decoder fails on becomes a CorruptSample.

        DALI's error names the operator but neither the tar nor the key, so the message names the
        split's shards and points to `alexnet-tools verify`, which finds the sample.
        """
        try:
            return pipe.outputs(cuda_stream=handover_stream(self.config.device))
        except RuntimeError as e:
            if (failed := self.store_failure(e)) is not None:
                raise failed from None
            if "fn.decoders." not in str(e):
                raise
            lines = [line.strip() for line in str(e).splitlines() if line.strip() and "no longer valid" not in line]
            reason = lines[-1] if lines else "decode error"
            c = self.config
            raise CorruptSample(
                f"{storage.join(c.data, c.split)}: a sample of the {len(self.tars)} {c.split} shards cannot be decoded "
                f"(DALI: {reason}); find it with `alexnet-tools verify --data {c.data}` and re-run prepare"
            ) from None

    def store_failure(self, e: RuntimeError) -> storage.StorageError | None:
        """A reader's error on s3:// data (DALI's S3 client gave up after its own retries) as one line, else None."""
        if "fn.readers." not in str(e) or not storage.is_url(self.config.data):
            return None
        lines = [line.strip() for line in str(e).splitlines() if line.strip() and "no longer valid" not in line]
        reason = lines[-1] if lines else "read error"
        return storage.StorageError(
            f"{self.config.data}: reading the {self.config.split} shards from the object store failed "
            f"(DALI: {reason}); once it answers again, continue with --resume"
        )

    def start_epoch(self, epoch: int, checkpoint: bytes | str | None, depth: int) -> Pipeline:
        """Build `epoch`'s pipeline and schedule its first `depth` batches (they run in the background)."""
        pipe = self.build(epoch, checkpoint, depth)
        pipe.schedule_run()  # fills the prefetch queue
        return pipe

    def convert(self, outputs: tuple, keep: int) -> tuple[torch.Tensor, ...]:
        """DALI outputs → (images on the device, int64 labels[, draws]), trimmed to `keep` samples."""
        device = self.config.device
        images = to_torch(outputs[0], device, self.config.channels_last)[:keep]
        labels = pinned_to(decode_labels(outputs[1].as_array())[:keep], device)
        if not self.config.with_draws:
            return images, labels
        pos_x, pos_y, flip, alpha = (np.asarray(o.as_array())[:keep] for o in outputs[2:])
        draws = {
            "dx": torch.from_numpy(np.rint(pos_x * MAX_CROP_OFFSET).astype(np.int64)),
            "dy": torch.from_numpy(np.rint(pos_y * MAX_CROP_OFFSET).astype(np.int64)),
            "flip": torch.from_numpy(flip.astype(bool)),
            "alpha": torch.from_numpy(alpha.astype(np.float32)),
        }
        return images, labels, draws

    def extra_state(self) -> dict[str, Any]:
        """DALI's checkpoint of the pipeline after the batches handed out (mid-epoch only)."""
        if self._checkpoint is not None:
            return {"dali_checkpoint": self._checkpoint}
        if self._pipe is not None and 0 < self.position.batch < len(self):
            return {"dali_checkpoint": self._pipe.checkpoint()}
        return {}

    def restore_extra(self, state: dict[str, Any]) -> None:
        if state["batch"] > 0:
            self._checkpoint = state.get("dali_checkpoint", "")
            if not self._checkpoint and state["batch"] < len(self):
                raise ValueError("a mid-epoch DALI loader state needs its dali_checkpoint")

    def close(self) -> None:
        """Release the pipelines (their threads and buffers)."""
        self._pipe = self._ahead = None

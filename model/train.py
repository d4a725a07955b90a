"""The training loop (torchvision references style): §5's SGD recipe, lr schedule, logging, checkpoints.

`train` takes any iterables of (images, labels) batches already on the device; the loader is the
front end's business. A loader may offer `set_epoch(epoch)` (called before each epoch) and
`state_dict()` / `load_state_dict()` for its position inside an epoch (saved in checkpoints and
restored after `set_epoch` on resume); one without state is fast-forwarded by skipping the batches
the interrupted epoch had already used. Resuming from `last.pt` restores model, optimiser, schedule,
epoch, step and every RNG, so an interrupted run continues exactly as if it had never stopped.

The hot path never synchronises host and device between log steps: the loss is summed on the
device and read at the log steps, and on CUDA the data-wait meter is built from CUDA events read
there too (see `Meter`). SIGTERM, SIGINT and SIGUSR1 finish the current step, write last.pt and
return (under DDP every rank stops at the same step, agreed at a log step); checkpoints are
written on a background thread from a CPU snapshot.

Run folder: config.json, metrics.jsonl (a "train" record every `log_every` steps and one marked
"partial" when a run stops between two, an "epoch" record after each epoch), last.pt, best.pt
(lowest validation top-1 error), curves.png, and TensorBoard events with `tensorboard`.
"""

import json
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet.model import distributed
from alexnet.model.checkpoint import (
    BackgroundSaver,
    CheckpointError,
    detached,
    non_finite,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_atomic,
    write_json_atomic,
)
from alexnet.model.distributed import Placement
from alexnet.model.evaluate import Batches, autocast, evaluate
from alexnet.model.paper import EPOCHS, LEARNING_RATE, LR_DROP_FACTOR, MAX_LR_DROPS, MOMENTUM, WEIGHT_DECAY
from alexnet.model.plots import plot_metrics
from alexnet.model.run_lock import RunFolderBusy, run_lock
from alexnet.model.schedule import PLATEAU_PATIENCE, LrSchedule

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class TrainError(Exception):
    """A run that cannot go on as asked (e.g. a resume with another world size mid-epoch); one line."""


class Diverged(TrainError):
    """The training loss (or a weight about to be saved) is no longer finite: the run stops, and no
    checkpoint is written from that state, so last.pt and best.pt keep the last finite one."""


# A run "at the class prior": every training record for this many images in a row (over all ranks)
# has a mean loss within PRIOR_MARGIN nats of ln(classes), the loss of predicting the prior. On
# Imagenette §5's init left that band after about 8,000 images (docs/results.md), so 20,000 is a
# long stretch on real photos, and on ImageNet a few hundred steps at the paper's batch of 128.
PRIOR_MARGIN = 0.1
PRIOR_IMAGES = 20_000


@dataclass
class TrainConfig:
    """Every knob of the loop; the defaults are the paper's recipe (§5)."""

    epochs: int = EPOCHS
    lr: float = LEARNING_RATE
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY  # on conv and fc weights; biases get none (see make_optimizer)
    schedule: str = "plateau"  # "plateau": divide when val top-1 error stops improving; "step": at step_epochs
    patience: int = PLATEAU_PATIENCE  # plateau: this many epochs in a row without a new best val top-1 error → divide
    lr_drop_factor: float = LR_DROP_FACTOR
    max_lr_drops: int = MAX_LR_DROPS  # plateau: at most this many divisions, then the lr stays
    step_epochs: tuple[int, ...] = ()  # step: divide at the start of each of these (0-based) epochs
    max_steps: int | None = None  # stop (and save last.pt) after this many optimiser steps in total
    log_every: int = 50  # steps per "train" record (and, under DDP, how often a stop or timed save is agreed)
    save_every: int = 0  # also write last.pt every this many steps (0: only at epoch ends and stops)
    save_every_minutes: float = 0.0  # ... and when this many minutes passed since the last save (0: never)
    ten_crop: bool = False  # validation batches are [B, 10, 3, 224, 224]: average the softmax
    amp: bool = True  # bf16 autocast (cuda only; CPU runs float32)
    channels_last: bool = True  # NHWC weights and inputs (cuda only)
    cudnn_benchmark: bool = True  # cuDNN picks the fastest kernels for the fixed shapes (cuda only; not bit-exact)
    compile: bool = False  # torch.compile the network
    seed: int = 0  # a fresh run seeds torch and random with seed + rank (dropout masks)
    progress: bool = True  # tqdm bar on rank 0 (tqdm hides it when stderr is not a terminal)
    plot: bool = True  # redraw curves.png after every epoch
    tensorboard: bool = False  # also write metrics.jsonl's scalars as TensorBoard events to the run folder
    prior_images: int = PRIOR_IMAGES  # warn once when the loss sat at ln(classes) for this many images


@dataclass
class TrainState:
    """Where the run is: the next epoch to finish, batches of it already used, steps taken."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_top1_err: float = math.inf
    last_eval: dict[str, float] = field(default_factory=dict)
    epoch_loss_sum: float = 0.0  # training loss summed over this epoch's steps so far
    interval_loss_sum: float = 0.0  # ... and over the steps since the last "train" record
    interval_steps: int = 0
    stopped_by: str = ""  # the signal that stopped the run ("SIGTERM", ...), "" otherwise
    prior_images: int = 0  # images of the latest records in a row whose loss sat at ln(classes)
    prior_warned: bool = False  # the class-prior warning was given (once per run)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on every weight tensor (conv kernels, fc matrices), none on biases.

    §5 writes the decay term for the weights w; cuda-convnet, the paper's code, applied its weight
    cost to weights only, so biases (1-dim tensors) form a second group without decay. One learning
    rate for all layers, as in the paper. torch's SGD keeps its momentum buffer before the learning
    rate (b ← 0.9·b + ∂L/∂w + λ·w, w ← w − ε·b), the paper's v after it (v = −ε·b): the same updates
    while ε is constant, differing only in the few steps after ε is divided.

    `fused=True` is torch's one-pass kernel on each device: one launch for all the tensors of a
    group on a GPU instead of several, and three times faster than the per-tensor loop on the CPU
    (0.15 → 0.05 s a step for AlexNet). `_fused_sgd` (torch 2.13, torch/optim/sgd.py:512-516) steps
    each device's tensors of a group on their own, so the towers' two GPUs share the groups (a
    `cuda` test settles it). Its rounding differs from the loop's in the last bits, so a checkpoint
    saved by the loop resumes with the loop (`load_state_dict` restores each group's `fused`), and
    exactly.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)


def make_schedule(cfg: TrainConfig) -> LrSchedule:
    return LrSchedule(cfg.schedule, cfg.lr, cfg.lr_drop_factor, cfg.patience, cfg.max_lr_drops, cfg.step_epochs)


def _devices(model: nn.Module) -> list[torch.device]:
    return list(dict.fromkeys(p.device for p in model.parameters()))


def _before(record: Mapping[str, Any], state: TrainState) -> bool:
    """Whether a metrics record was written before the checkpoint that `state` comes from.

    A "partial" record closes a stopped run's last interval; the resumed run covers that interval
    again in its next full record, so partial records are dropped on resume.
    """
    if record.get("partial"):
        return False
    if record["kind"] == "epoch":
        return record["epoch"] < state.epoch
    return record["step"] <= state.step


TENSORBOARD_SCALARS = {
    "train": {
        "loss": "train/loss",
        "lr": "train/lr",
        "images_per_s": "train/images_per_s",
        "data_wait": "train/data_wait",
    },
    "epoch": {
        "train_loss": "epoch/train_loss",
        "val_loss": "val/loss",
        "top1_err": "val/top1_err",
        "top5_err": "val/top5_err",
        "lr": "epoch/lr",
    },
}


class MetricsLog:
    """metrics.jsonl, one JSON object per line, appended and flushed as it goes (and TensorBoard events when asked)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tensorboard: Any = None

    def open_tensorboard(self, resume_step: int | None) -> None:
        """Write every record's scalars as TensorBoard events beside metrics.jsonl too (the `tensorboard` extra).

        resume_step: on resume, the checkpoint's step. TensorBoard then hides every event the stopped
        run wrote at or after it (purge_step), the partial interval's included, and the records
        metrics.jsonl keeps at that very step are written again, so both hold the same scalars.
        """
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(self.path.parent), purge_step=resume_step)
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                record = json.loads(line) if line.strip() else {}
                if record.get("step") == resume_step:
                    self._add_scalars(record)

    def _add_scalars(self, record: Mapping[str, Any]) -> None:
        for key, tag in TENSORBOARD_SCALARS[record["kind"]].items():
            if key in record:
                self.tensorboard.add_scalar(tag, record[key], record["step"])
        self.tensorboard.flush()

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            self._add_scalars(record)

    def rewind(self, state: TrainState) -> None:
        """Drop records written after a checkpoint (they will be written again by the resumed run)."""
        if not self.path.exists():
            return
        keep = [
            line for line in self.path.read_text().splitlines() if line.strip() and _before(json.loads(line), state)
        ]
        write_atomic(self.path, lambda f: f.write("".join(line + "\n" for line in keep).encode()))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class StopSignals:
    """Records SIGTERM/SIGINT/SIGUSR1 instead of dying: the loop finishes its step, saves and returns.

    The handler only notes the signal, so a second one while last.pt is written changes nothing.
    Installed only from the main thread (Python delivers signals there); elsewhere it never fires.
    """

    def __init__(self) -> None:
        self.received: str = ""

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = self.received or signal.Signals(signum).name

    @contextmanager
    def installed(self) -> Iterator["StopSignals"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in STOP_SIGNALS}
        # What an outer StopSignals (the front end's, before the run began) noted still stops the run.
        noted = [p.received for p in previous.values() if isinstance(p, StopSignals) and p.received]
        self.received = self.received or (noted[0] if noted else "")
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Meter:
    """Images/s and data-wait over one logging interval, read only when the interval closes.

    On CUDA, data-wait is the share of GPU time between the end of one step and the start of the
    next, from CUDA events recorded around every step on the first device's stream: the GPU was
    idle (or busy with the loader's own copies and kernels) waiting for the batch. Nothing is read
    until `close`, so the host keeps running ahead of the device. On the CPU, where host and
    "device" are one, it is the host's time blocked in `next()`.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.ref = self._event() if self.cuda else None
        self.begin()

    def _event(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def begin(self) -> None:
        self.t0 = time.perf_counter()
        self.seen, self.wait, self.marks = 0, 0.0, []

    def before_next(self) -> None:
        if not self.cuda:
            self.t_next = time.perf_counter()

    def after_next(self) -> None:
        if self.cuda:
            self.marks.append(self._event())
        else:
            self.wait += time.perf_counter() - self.t_next

    def after_step(self, images: int) -> None:
        self.seen += images
        if self.cuda:
            self.marks.append(self._event())

    def close(self) -> tuple[float, float]:
        """(seconds, data-wait fraction) of the interval; the meter starts the next one."""
        if self.cuda and self.marks:
            last = self.marks[-1]
            last.synchronize()
            starts, ends = self.marks[0::2], [self.ref, *self.marks[1::2]]
            idle = sum(e.elapsed_time(s) for e, s in zip(ends, starts)) / 1000
            seconds = self.ref.elapsed_time(last) / 1000
            self.ref = last
        else:
            seconds, idle = time.perf_counter() - self.t0, self.wait
        self.begin()
        return seconds, (idle / seconds if seconds > 0 else 0.0)


@dataclass
class _Run:
    """What one training run's pieces share: the network (wrapped and bare), optimiser, schedule, state."""

    cfg: TrainConfig
    net: nn.Module  # what runs forward: the model, under DDP and/or torch.compile when asked
    core: nn.Module  # the bare model: its state_dict is what checkpoints hold, and what validation runs
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    state: TrainState
    placement: Placement
    devices: list[torch.device]
    log: MetricsLog
    run_dir: Path
    saver: BackgroundSaver = field(default_factory=BackgroundSaver)
    signals: StopSignals = field(default_factory=StopSignals)
    last_save: float = field(default_factory=time.monotonic)
    saved_step: int | None = None  # the step last.pt holds (None: no last.pt yet)
    classes: int = 0  # the network's outputs, read off the logits' shape (no sync)

    @property
    def channels_last(self) -> bool:
        return self.cfg.channels_last and self.devices[0].type == "cuda"


def _resume(run: _Run) -> Any:
    """Load last.pt into the run; return this rank's saved loader state (None when it had none).

    Another world size than the checkpoint's continues only at an epoch boundary (the loaders cut
    an epoch by rank); each rank then seeds its RNG afresh from (seed, step, rank).
    """
    try:
        ckpt = read_checkpoint(run.run_dir / "last.pt", run.core)
    except CheckpointError as e:
        raise TrainError(str(e)) from None
    state = TrainState(**{**ckpt["state"], "stopped_by": ""})
    saved_world, world, rank = len(ckpt["rng"]), run.placement.world_size, run.placement.rank
    if saved_world != world and state.batch_in_epoch:
        raise TrainError(
            f"{run.run_dir / 'last.pt'}: saved by {saved_world} ranks in the middle of epoch {state.epoch} "
            f"(batch {state.batch_in_epoch}); resume it with {saved_world} ranks, or from a checkpoint at an epoch boundary"
        )
    run.core.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(detached(ckpt["optimizer"]))  # its own copy, not the file's mapped pages
    run.schedule.load_state_dict(ckpt["schedule"])
    run.state = state
    run.saved_step = state.step
    if saved_world == world:
        set_rng_state(ckpt["rng"][rank])
    else:
        torch.manual_seed(run.cfg.seed * 1_000_003 + state.step * 1009 + rank)
        random.seed(run.cfg.seed * 1_000_003 + state.step * 1009 + rank)
    if run.placement.is_main:
        run.log.rewind(run.state)
    return ckpt["loader"][rank] if saved_world == world else None


def _loader_state(train_batches: Batches) -> Any:
    """The loader's position, or None when it keeps none (or cannot give it after a failure)."""
    if not hasattr(train_batches, "state_dict"):
        return None
    try:
        return train_batches.state_dict()
    except Exception:
        return None


def _save_last(run: _Run, train_batches: Batches, wait: bool = False) -> None:
    """Write last.pt: everything needed to continue exactly here (a collective call under DDP).

    The state is copied to the CPU here (the only device sync) and written on the saver's thread;
    with `wait` this returns once it is on disk (at a stop, or after the last epoch), and a CPU
    model's tensors are written as they are, without a copy. A non-finite loss on any rank, or a
    non-finite weight in the copy, raises `Diverged` instead, and last.pt keeps the last finite state.
    """
    if not all(distributed.all_gather_objects(_loss_finite(run.state))):
        raise _diverged(run, "the training loss")
    rng = distributed.all_gather_objects(rng_state(run.devices))
    loaders = distributed.all_gather_objects(_loader_state(train_batches))
    if run.placement.is_main:
        model = detached(run.core.state_dict(), copy=not wait)
        _check_weights(run, model, "last.pt")
        ckpt = {
            "model": model,
            "optimizer": detached(run.optimizer.state_dict(), copy=not wait),
            "schedule": run.schedule.state_dict(),
            "state": asdict(run.state),
            "rng": rng,
            "loader": loaders,
            "config": asdict(run.cfg),
        }
        run.saver.save(ckpt, run.run_dir / "last.pt", wait=wait)
    run.last_save = time.monotonic()
    run.saved_step = run.state.step


def _loss_finite(state: TrainState) -> bool:
    """Whether the loss sums read at the last log step, save or epoch end are finite (host floats: no sync)."""
    return math.isfinite(state.epoch_loss_sum) and math.isfinite(state.interval_loss_sum)


def _diverged(run: _Run, what: str) -> Diverged:
    """The one line a diverged run stops with: the step, what is not finite, and the checkpoint to go back to."""
    run.saver.join()  # a save in flight is the last finite state: let it land before naming it
    state, last = run.state, run.run_dir / "last.pt"
    kept = (
        f"{last} holds step {run.saved_step}, the last finite state"
        if run.saved_step is not None and last.is_file()
        else "no checkpoint was written before it"
    )
    return Diverged(f"step {state.step}: {what} is not finite (nan or inf); the run stops here and {kept}")


def _check_weights(run: _Run, tensors: Mapping[str, torch.Tensor], name: str) -> None:
    """Refuse to write `name` from a CPU copy holding a non-finite weight (it would replace a good one)."""
    bad = non_finite(tensors)
    if bad:
        raise _diverged(run, f"{len(bad)} weight tensor(s) ({', '.join(bad[:3])}) about to be saved to {name}")


def _note_prior(run: _Run, record: Mapping[str, Any], images: int) -> None:
    """Warn once when the training loss has sat at ln(classes), the class prior's loss, for
    `prior_images` images in a row: §5's init can stay there for long (docs/recipe.md)."""
    state, cfg = run.state, run.cfg
    prior = math.log(run.classes) if run.classes > 1 else 0.0
    at_prior = run.classes > 1 and abs(record["loss"] - prior) < PRIOR_MARGIN
    state.prior_images = state.prior_images + images if at_prior else 0
    if state.prior_images >= cfg.prior_images and not state.prior_warned:
        state.prior_warned = True
        if run.placement.is_main:
            tqdm.write(
                f"warning: step {state.step}: the training loss has stayed within {PRIOR_MARGIN} of "
                f"ln({run.classes}) = {prior:.3f}, the class prior's, for {state.prior_images:,} images; "
                "the paper's init can sit there for long (docs/recipe.md); --init caffe leaves it sooner",
                file=sys.stderr,
            )


def _position_loader(
    run: _Run, train_batches: Batches, loader_state: Any
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An iterator over the current epoch's batches, from where an interrupted epoch left off."""
    if hasattr(train_batches, "set_epoch"):
        train_batches.set_epoch(run.state.epoch)
    skip = run.state.batch_in_epoch
    if skip and loader_state is not None and hasattr(train_batches, "load_state_dict"):
        train_batches.load_state_dict(loader_state)
        skip = 0
    batches = iter(train_batches)
    for _ in range(skip):
        next(batches)
    return batches


def _stop_or_save(run: _Run, log_step: bool, diverged: bool = False) -> tuple[bool, bool, bool]:
    """(stop now, save now, diverged) for the signals, the timed save and a non-finite loss read at
    this log step: the same answer on every rank.

    Alone, these are host flags checked after every step. Under DDP they are agreed at log steps
    only (one small all-reduce there), so no step pays for a collective of its own, and a loss
    that is non-finite on one rank stops them all at the same step.
    """
    timed = run.cfg.save_every_minutes > 0 and time.monotonic() - run.last_save >= run.cfg.save_every_minutes * 60
    if not run.placement.distributed:
        return bool(run.signals.received), timed, diverged
    if not log_step:
        return False, False, False
    flags = torch.tensor([bool(run.signals.received), timed, diverged], dtype=torch.int32, device=run.placement.device)
    stop, save, bad = distributed.all_reduce_sum(flags).tolist()
    if stop and not run.signals.received:
        run.signals.received = "a signal to another rank"
    return stop > 0, save > 0, bad > 0


def _train_record(run: _Run, meter: Meter, lr: float, partial: bool = False) -> dict[str, Any]:
    """The "train" record of the interval the meter closes (loss sums already read into the state)."""
    state, images = run.state, meter.seen
    seconds, wait = meter.close()
    record = {
        "kind": "train",
        "step": state.step,
        "epoch": state.epoch,
        "lr": lr,
        "loss": state.interval_loss_sum / max(state.interval_steps, 1),
        "images_per_s": images * run.placement.world_size / seconds if seconds > 0 else 0.0,
        "data_wait": wait,
    }
    if partial:
        record["partial"] = True
    return record


def _train_epoch(run: _Run, train_batches: Batches, loader_state: Any) -> str:
    """Step through the rest of the epoch; why it ended: "epoch", "max_steps" or "signal"."""
    cfg, state, devices = run.cfg, run.state, run.devices
    device = devices[0]
    lr = run.optimizer.param_groups[0]["lr"]
    total = len(train_batches) if hasattr(train_batches, "__len__") else None
    bar = tqdm(
        total=total,
        initial=state.batch_in_epoch,
        desc=f"epoch {state.epoch}",
        leave=False,
        dynamic_ncols=True,
        disable=None if cfg.progress and run.placement.is_main else True,
    )
    batches = _position_loader(run, train_batches, loader_state)
    run.net.train()
    # [this epoch's loss sum, this interval's]: float64 on the device, so the sums run in the same
    # order (and give the same bits) whether or not the run was stopped and resumed in between.
    sums = torch.tensor([state.epoch_loss_sum, state.interval_loss_sum], dtype=torch.float64, device=device)
    meter = Meter(device)

    def read_sums() -> None:
        state.epoch_loss_sum, state.interval_loss_sum = sums.tolist()

    try:
        while True:
            if cfg.max_steps is not None and state.step >= cfg.max_steps:
                read_sums()  # last.pt is written next, after _save_last's finite check
                if meter.seen and run.placement.is_main:
                    run.log.write(_train_record(run, meter, lr, partial=True))
                return "max_steps"
            meter.before_next()
            batch = next(batches, None)
            if batch is None:
                read_sums()
                if not _loss_finite(state):  # before validation and best.pt
                    raise _diverged(run, "the training loss")
                return "epoch"
            meter.after_next()
            images, labels = batch
            if run.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, cfg.amp):
                logits = run.net(images)
                loss = F.cross_entropy(logits.float(), labels.to(device, non_blocking=True))
            run.classes = logits.shape[1]
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            sums += loss.detach()
            meter.after_step(images.shape[0])

            state.step += 1
            state.batch_in_epoch += 1
            state.interval_steps += 1
            bar.update(1)
            log_step = state.step % cfg.log_every == 0
            finite_here, first = True, state.step
            if log_step:
                read_sums()  # the log step's one read of the device: the loss check rides on it
                finite_here, first = _loss_finite(state), state.step - state.interval_steps + 1
                images_seen = meter.seen * run.placement.world_size
                record = _train_record(run, meter, lr)
                if run.placement.is_main:
                    run.log.write(record)
                _note_prior(run, record, images_seen)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    img_s=f"{record['images_per_s']:.0f}",
                    wait=f"{record['data_wait']:.0%}",
                )
                state.interval_loss_sum, state.interval_steps = 0.0, 0
                sums[1] = 0.0
            stop, timed, diverged = _stop_or_save(run, log_step, diverged=not finite_here)
            if diverged:
                where = "on another rank" if finite_here else f"over steps {first}-{state.step}"
                raise _diverged(run, f"the training loss {where}")
            if stop:
                read_sums()
                state.stopped_by = run.signals.received
                if meter.seen and run.placement.is_main:
                    run.log.write(_train_record(run, meter, lr, partial=True))
                return "signal"
            if timed or (cfg.save_every and state.step % cfg.save_every == 0):
                read_sums()
                _save_last(run, train_batches)
    except Diverged:
        raise  # nothing from a non-finite state is saved
    except Exception:
        # A loader failure (e.g. a sample that cannot be decoded): keep what was trained so far. Under
        # DDP the other ranks are not here, so a collective save would hang: the last periodic save stands.
        if not run.placement.distributed:
            read_sums()
            try:
                run.saver.wait()
                _save_last(run, train_batches, wait=True)
            except Exception:  # the loader's error is the one to report
                pass
        raise
    finally:
        bar.close()


def _end_epoch(run: _Run, val_batches: Batches | None, lr: float, seconds: float) -> None:
    """Validate (the bare model), move the schedule, log the epoch record, keep best.pt, redraw the curves."""
    state, main = run.state, run.placement.is_main
    result = evaluate(run.core, val_batches, run.cfg.ten_crop, amp=run.cfg.amp) if val_batches is not None else None
    record: dict[str, Any] = {
        "kind": "epoch",
        "step": state.step,
        "epoch": state.epoch,
        "lr": lr,
        "train_loss": state.epoch_loss_sum / max(state.batch_in_epoch, 1),
        "epoch_s": seconds,
    }
    improved = False
    if result is not None:
        run.schedule.end_epoch(result.top1_err)
        state.last_eval = asdict(result)
        record.update(
            val_loss=result.loss, top1_err=result.top1_err, top5_err=result.top5_err, val_images=result.images
        )
        improved = result.top1_err < state.best_top1_err
        state.best_top1_err = min(state.best_top1_err, result.top1_err)
    record["next_lr"] = run.schedule.lr(state.epoch + 1)
    if main:
        run.log.write(record)
        if improved:
            model = detached(run.core.state_dict())
            _check_weights(run, model, "best.pt")
            best = {
                "model": model,
                "epoch": state.epoch,
                "step": state.step,
                "eval": state.last_eval,
                "config": asdict(run.cfg),
            }
            run.saver.save(best, run.run_dir / "best.pt")
    state.epoch, state.batch_in_epoch, state.epoch_loss_sum = state.epoch + 1, 0, 0.0


def use_cudnn_benchmark(cfg: TrainConfig, device: torch.device) -> bool:
    """Turn cuDNN's autotuner on for a CUDA run that asks for it (every step has the same shapes, so
    the search is paid once); returns whether it is on. The CPU, and its bit-for-bit promise, are untouched."""
    on = cfg.cudnn_benchmark and device.type == "cuda"
    if on:
        torch.backends.cudnn.benchmark = True
    return on


@contextmanager
def _owning(run_dir: Path, placement: Placement) -> Iterator[None]:
    """Hold the run folder's lock (`run_lock`) on the main rank for the block; every rank refuses together.

    Only the main rank writes the folder, so only it locks; the others learn its answer, so that
    a busy folder stops all ranks with the same one line instead of leaving them waiting.
    """
    with ExitStack() as stack:
        busy = None
        if placement.is_main:
            try:
                stack.enter_context(run_lock(run_dir))
            except RunFolderBusy as e:
                busy = str(e)
        busy = distributed.all_gather_objects(busy)[0]
        if busy:
            raise TrainError(busy)
        yield


def train(
    model: nn.Module,
    train_batches: Batches,
    val_batches: Batches | None,
    cfg: TrainConfig,
    run_dir: Path | str,
    *,
    placement: Placement | None = None,
    info: Mapping[str, Any] | None = None,
    resume: bool = True,
) -> TrainState:
    """Train `model` (already on its device(s), not yet wrapped) and return where it stopped.

    placement: this process's rank/device under torchrun (DDP-wrapped when world size > 1).
    info: extra facts for config.json (batch size, data folder, loader, ...).
    resume: continue from run_dir/last.pt when it exists.
    val_batches None trains without validation (the plateau schedule then never moves).
    The returned state's `stopped_by` names the signal that stopped the run, if one did.
    The run folder is this process's alone meanwhile (`run_lock`): a TrainError if another holds it.
    """
    run_dir = Path(run_dir)
    placement = placement or Placement(device=_devices(model)[0])
    with _owning(run_dir, placement):
        return _train(model, train_batches, val_batches, cfg, run_dir, placement, info, resume)


def _train(
    model: nn.Module,
    train_batches: Batches,
    val_batches: Batches | None,
    cfg: TrainConfig,
    run_dir: Path,
    placement: Placement,
    info: Mapping[str, Any] | None,
    resume: bool,
) -> TrainState:
    """`train`'s body, with the run folder held."""
    run_dir.mkdir(parents=True, exist_ok=True)
    devices = _devices(model)
    placement = placement or Placement(device=devices[0])
    if cfg.channels_last and devices[0].type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    cudnn_benchmark = use_cudnn_benchmark(cfg, devices[0])
    run = _Run(
        cfg,
        model,
        model,
        make_optimizer(model, cfg),
        make_schedule(cfg),
        TrainState(),
        placement,
        devices,
        MetricsLog(run_dir / "metrics.jsonl"),
        run_dir,
    )

    loader_state = None
    resuming = resume and (run_dir / "last.pt").exists()
    if resuming:
        loader_state = _resume(run)
    else:
        torch.manual_seed(cfg.seed + placement.rank)
        random.seed(cfg.seed + placement.rank)
        if placement.is_main:
            run.log.path.unlink(missing_ok=True)
    if placement.is_main:
        config = {
            "train": asdict(cfg),
            "model": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "world_size": placement.world_size,
            "devices": [str(d) for d in devices],
            "torch": torch.__version__,
            "cudnn_benchmark": cudnn_benchmark,
            **(info or {}),
        }
        write_json_atomic(config, run_dir / "config.json")
        if cfg.tensorboard:
            run.log.open_tensorboard(run.state.step if resuming else None)

    run.net = distributed.wrap(model, placement)
    if cfg.compile:
        run.net = torch.compile(run.net)

    try:
        with run.signals.installed():
            while run.state.epoch < cfg.epochs:
                lr = run.schedule.lr(run.state.epoch)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
                start = time.perf_counter()
                ended = _train_epoch(run, train_batches, loader_state)
                loader_state = None
                if ended != "epoch":
                    _save_last(run, train_batches, wait=True)
                    break
                _end_epoch(run, val_batches, lr, time.perf_counter() - start)
                _save_last(run, train_batches, wait=run.state.epoch == cfg.epochs)
                if placement.is_main and cfg.plot:
                    plot_metrics(run.log.path, run_dir / "curves.png")
            run.saver.wait()
    finally:
        run.log.close()
        run.saver.join()
    return run.state

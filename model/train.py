"""The training loop (torchvision references style): §5's SGD recipe, lr schedule, logging, checkpoints.

`train` takes any iterables of (images, labels) batches already on the device; the loader is the
front end's business. A loader may offer `set_epoch(epoch)` (called before each epoch) and
`state_dict()` / `load_state_dict()` for its position inside an epoch (saved in checkpoints and
restored after `set_epoch` on resume); one without state is fast-forwarded by skipping the batches
the interrupted epoch had already used. Resuming from `last.pt` restores model, optimiser, schedule,
epoch, step and every RNG, so an interrupted run continues exactly as if it had never stopped.

Run folder: config.json, metrics.jsonl (a "train" record every `log_every` steps, an "epoch" record
after each validation), last.pt, best.pt (lowest validation top-1 error) and curves.png.
"""

import json
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet.model import distributed
from alexnet.model.checkpoint import rng_state, save_atomic, set_rng_state, write_atomic, write_json_atomic
from alexnet.model.distributed import Placement
from alexnet.model.evaluate import Batches, autocast, evaluate
from alexnet.model.paper import EPOCHS, LEARNING_RATE, LR_DROP_FACTOR, MAX_LR_DROPS, MOMENTUM, WEIGHT_DECAY
from alexnet.model.plots import plot_metrics
from alexnet.model.schedule import PLATEAU_PATIENCE, LrSchedule


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
    log_every: int = 50  # steps per "train" record
    save_every: int = 0  # also write last.pt every this many steps (0: only at epoch ends and stops)
    ten_crop: bool = False  # validation batches are [B, 10, 3, 224, 224]: average the softmax
    amp: bool = True  # bf16 autocast (cuda only; CPU runs float32)
    channels_last: bool = True  # NHWC weights and inputs (cuda only)
    compile: bool = False  # torch.compile the network
    seed: int = 0  # a fresh run seeds torch and random with seed + rank (dropout masks)
    progress: bool = True  # tqdm bar on rank 0 (tqdm hides it when stderr is not a terminal)
    plot: bool = True  # redraw curves.png after every epoch


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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on every weight tensor (conv kernels, fc matrices), none on biases.

    §5 writes the decay term for the weights w; cuda-convnet, the paper's code, applied its weight
    cost to weights only, so biases (1-dim tensors) form a second group without decay. One learning
    rate for all layers, as in the paper. torch's SGD keeps its momentum buffer before the learning
    rate (b ← 0.9·b + ∂L/∂w + λ·w, w ← w − ε·b), the paper's v after it (v = −ε·b): the same updates
    while ε is constant, differing only in the few steps after ε is divided.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def make_schedule(cfg: TrainConfig) -> LrSchedule:
    return LrSchedule(cfg.schedule, cfg.lr, cfg.lr_drop_factor, cfg.patience, cfg.max_lr_drops, cfg.step_epochs)


def _devices(model: nn.Module) -> list[torch.device]:
    return list(dict.fromkeys(p.device for p in model.parameters()))


def _sync(devices: list[torch.device]) -> None:
    """Wait for queued GPU work, so host clocks measure it (no-op on CPU)."""
    for d in devices:
        if d.type == "cuda":
            torch.cuda.synchronize(d)


def _before(record: Mapping[str, Any], state: TrainState) -> bool:
    """Whether a metrics record was written before the checkpoint that `state` comes from."""
    if record["kind"] == "epoch":
        return record["epoch"] < state.epoch
    return record["step"] <= state.step


class MetricsLog:
    """metrics.jsonl, one JSON object per line, appended and flushed as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def rewind(self, state: TrainState) -> None:
        """Drop records written after a checkpoint (they will be written again by the resumed run)."""
        if not self.path.exists():
            return
        keep = [
            line for line in self.path.read_text().splitlines() if line.strip() and _before(json.loads(line), state)
        ]
        write_atomic(self.path, lambda f: f.write("".join(line + "\n" for line in keep).encode()))


@dataclass
class _Run:
    """What one training run's pieces share: the network (wrapped and bare), optimiser, schedule, state."""

    cfg: TrainConfig
    net: nn.Module  # what runs forward: the model, under DDP and/or torch.compile when asked
    core: nn.Module  # the bare model: its state_dict is what checkpoints hold
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    state: TrainState
    placement: Placement
    devices: list[torch.device]
    log: MetricsLog
    run_dir: Path

    @property
    def channels_last(self) -> bool:
        return self.cfg.channels_last and self.devices[0].type == "cuda"


def _resume(run: _Run) -> Any:
    """Load last.pt into the run; return this rank's saved loader state (None when it had none)."""
    ckpt = torch.load(run.run_dir / "last.pt", map_location="cpu", weights_only=False)
    run.core.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["schedule"])
    run.state = TrainState(**ckpt["state"])
    rank = run.placement.rank if len(ckpt["rng"]) == run.placement.world_size else 0
    set_rng_state(ckpt["rng"][rank])
    if run.placement.is_main:
        run.log.rewind(run.state)
    return ckpt["loader"][rank]


def _save_last(run: _Run, train_batches: Batches) -> None:
    """Write last.pt: everything needed to continue exactly here (a collective call under DDP)."""
    loader = train_batches.state_dict() if hasattr(train_batches, "state_dict") else None
    rng = distributed.all_gather_objects(rng_state(run.devices))
    loaders = distributed.all_gather_objects(loader)
    if run.placement.is_main:
        ckpt = {
            "model": run.core.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "schedule": run.schedule.state_dict(),
            "state": asdict(run.state),
            "rng": rng,
            "loader": loaders,
            "config": asdict(run.cfg),
        }
        save_atomic(ckpt, run.run_dir / "last.pt")


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


def _train_epoch(run: _Run, train_batches: Batches, loader_state: Any) -> bool:
    """Step through the rest of the epoch; False when max_steps stopped it first."""
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
    seen, wait = 0, 0.0
    _sync(devices)
    interval_start = time.perf_counter()
    try:
        while cfg.max_steps is None or state.step < cfg.max_steps:
            _sync(devices)  # so the time below is only the wait for data, not queued GPU work
            t0 = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - t0
            if batch is None:
                return True
            images, labels = batch
            if run.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, cfg.amp):
                loss = F.cross_entropy(run.net(images).float(), labels.to(device))
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()

            loss_value = loss.item()
            state.step += 1
            state.batch_in_epoch += 1
            state.epoch_loss_sum += loss_value
            state.interval_loss_sum += loss_value
            state.interval_steps += 1
            seen += images.shape[0]
            bar.update(1)
            if state.step % cfg.log_every == 0:
                _sync(devices)
                wall = time.perf_counter() - interval_start
                record = {
                    "kind": "train",
                    "step": state.step,
                    "epoch": state.epoch,
                    "lr": lr,
                    "loss": state.interval_loss_sum / state.interval_steps,
                    "images_per_s": seen * run.placement.world_size / wall,
                    "data_wait": wait / wall,
                }
                if run.placement.is_main:
                    run.log.write(record)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    img_s=f"{record['images_per_s']:.0f}",
                    wait=f"{record['data_wait']:.0%}",
                )
                state.interval_loss_sum, state.interval_steps, seen, wait = 0.0, 0, 0, 0.0
                interval_start = time.perf_counter()
            if cfg.save_every and state.step % cfg.save_every == 0:
                _save_last(run, train_batches)
        return False
    finally:
        bar.close()


def _end_epoch(run: _Run, val_batches: Batches | None, lr: float, seconds: float) -> None:
    """Validate, move the schedule, log the epoch record, keep best.pt, redraw the curves."""
    state, main = run.state, run.placement.is_main
    result = evaluate(run.net, val_batches, run.cfg.ten_crop, amp=run.cfg.amp) if val_batches is not None else None
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
            best = {
                "model": run.core.state_dict(),
                "epoch": state.epoch,
                "step": state.step,
                "eval": state.last_eval,
                "config": asdict(run.cfg),
            }
            save_atomic(best, run.run_dir / "best.pt")
    state.epoch, state.batch_in_epoch, state.epoch_loss_sum = state.epoch + 1, 0, 0.0


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
    """Train `model` (already on its device, not yet wrapped) and return where it stopped.

    placement: this process's rank/device under torchrun (DDP-wrapped when world size > 1).
    info: extra facts for config.json (batch size, data folder, loader, ...).
    resume: continue from run_dir/last.pt when it exists.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    devices = _devices(model)
    placement = placement or Placement(device=devices[0])
    if cfg.channels_last and devices[0].type == "cuda":
        model = model.to(memory_format=torch.channels_last)
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
    if resume and (run_dir / "last.pt").exists():
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
            **(info or {}),
        }
        write_json_atomic(config, run_dir / "config.json")

    run.net = distributed.wrap(model, placement)
    if cfg.compile:
        run.net = torch.compile(run.net)

    while run.state.epoch < cfg.epochs:
        lr = run.schedule.lr(run.state.epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        finished = _train_epoch(run, train_batches, loader_state)
        loader_state = None
        if not finished:
            _save_last(run, train_batches)
            break
        _end_epoch(run, val_batches, lr, time.perf_counter() - start)
        _save_last(run, train_batches)
        if placement.is_main and cfg.plot:
            plot_metrics(run.log.path, run_dir / "curves.png")
    return run.state

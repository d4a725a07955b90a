"""`alexnet-train`: the paper's recipe on prepared shards, with any of the three loaders.

Conventional flags in the style of torchvision's references/classification/train.py; every recipe
value defaults to the paper's (§5). Under `torchrun` each process trains one data-parallel rank
(`--parallel data`); `--parallel towers` puts the paper's two columns on two devices.

    alexnet-train --data OUT --loader dali
    torchrun --nproc-per-node 2 -m alexnet.tools.train --data OUT --loader dali
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import click
import torch
from click.core import ParameterSource

from alexnet.model import distributed, paper
from alexnet.model.alexnet import INIT_SCHEMES, AlexNet
from alexnet.model.checkpoint import CheckpointError, WriteFailed, read_checkpoint
from alexnet.model.evaluate import evaluate
from alexnet.model.towers import towers_from_alexnet
from alexnet.model.train import Diverged, StopSignals, TrainConfig, TrainError, train
from alexnet.pipeline import LOADER_KINDS, make_loader
from alexnet.pipeline.loaders.contract import CorruptSample, Loader, default_workers
from alexnet.pipeline.store.manifest import read_manifest
from alexnet.pipeline.store.storage import StorageError
from alexnet.tools.options import (
    EpochList,
    FiniteRange,
    cache_bytes,
    cache_options,
    check_device,
    class_count,
    data_option,
    default_device,
    normalize_option,
)


def build_model(num_classes: int, init: str, parallel: str, device: torch.device) -> torch.nn.Module:
    """The network on its device(s): one device, or the two columns on `device` and the next GPU (towers:
    cuda:0 and cuda:1 alone, cuda:2r and cuda:2r+1 for rank r under torchrun; both share a lone GPU or the CPU).

    Its initial weights are drawn from torch's global generator: seed it first for a reproducible run.
    """
    model = AlexNet(num_classes=num_classes, init=init)
    if parallel == "towers":
        following = (device.index or 0) + 1
        second = (
            torch.device("cuda", following)
            if device.type == "cuda" and torch.cuda.device_count() > following
            else device
        )
        return towers_from_alexnet(model, (device, second))
    return model.to(device)


def trainer_loader(
    kind: str, data: Path, split: str, batch_size: int, device: torch.device, **options: object
) -> Loader:
    """A loader built as alexnet-train builds it for its loop: channels_last exactly when the trainer runs
    NHWC (on CUDA), and the caller's normalisation, workers, seed and rank (`alexnet-bench train` uses it too,
    so that the bench's batches are the trainer's)."""
    channels_last = device.type == "cuda" and TrainConfig.channels_last  # the trainer's NHWC
    return make_loader(kind, data, split, batch_size, device, channels_last=channels_last, **options)


# The exit code of a run stopped by a non-finite loss (click uses 1 for its errors, 2 for usage).
DIVERGED_EXIT = 3


class DivergedRun(click.ClickException):
    """A run stopped by a non-finite loss: one line, and its own exit code, so a job script can tell it apart."""

    exit_code = DIVERGED_EXIT


def warn_known_bad(init: str, normalize: str) -> None:
    """One line before training for a combination known to start badly (a warning, not a refusal: the run
    stops by itself if it diverges, and someone reproducing docs/recipe.md may want exactly this)."""
    if init == "kaiming" and normalize == "mean":
        click.echo(
            "warning: --init kaiming with --normalize mean starts at a loss of about 60 and can diverge to nan "
            "(docs/recipe.md); He init assumes unit-variance inputs: add --normalize std",
            err=True,
        )


def data_identity(data: Path) -> dict[str, object]:
    """What a resumed run must find again in --data: the class count and a digest of the wnids, in order."""
    wnids = [c["wnid"] for c in read_manifest(data)["classes"]]
    return {"num_classes": len(wnids), "classes_sha256": hashlib.sha256("\n".join(wnids).encode()).hexdigest()}


def recorded_config(run_dir: Path) -> dict:
    """What a run's config.json recorded ({} for a run folder without one)."""
    config = run_dir / "config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def check_same_data(run_dir: Path, data: Path) -> None:
    """Refuse a --resume on another data set than the run's (other class count, or other wnids)."""
    recorded = recorded_config(run_dir)
    if "classes_sha256" not in recorded:
        return
    mine = data_identity(data)
    if recorded["classes_sha256"] != mine["classes_sha256"]:
        detail = "the same count, other wnids" if recorded["num_classes"] == mine["num_classes"] else "another count"
        raise click.ClickException(
            f"--resume {run_dir}: the run was trained on {recorded.get('data')} ({recorded['num_classes']} classes), "
            f"not on {data} ({mine['num_classes']} classes: {detail}); resume with --data {recorded.get('data')} or start a new run"
        )


def loader_budget(loader) -> dict[str, object]:
    """What config.json records of the loader's CPU and memory budget: its workers per rank (by default
    `default_workers()`, the cores this process may use over the ranks on this machine) and, for DALI,
    the nvJPEG buffers those threads preallocate."""
    budget: dict[str, object] = {"workers": loader.config.workers}
    if hasattr(loader, "decoder_buffers"):
        budget["dali_decoder_buffers"] = loader.decoder_buffers
    return budget


def cpu_threads(device: torch.device, workers: int | None) -> int | None:
    """torch's intra-op threads for a CPU run: -j, or -j's default when it is unset or 0 (the torch
    loader in the main process); None on a GPU.

    The CPU's kernels split their sums by thread, so the thread count changes the bits. FFCV's loader
    sets torch's count to -j itself at every epoch; the trainer does the same for every loader, so the
    recorded -j (restored by --resume) fixes the numbers whatever the process started with.
    """
    if device.type != "cpu":
        return None
    return workers or default_workers()


def has_split(data: Path, split: str) -> bool:
    return bool(read_manifest(data)["splits"].get(split, {}).get("shards"))


# --resume continues a run with the settings its config.json records, for every flag not given again.
# A flag given again may change the recipe (RECIPE_SETTINGS) or how it runs (RUN_SETTINGS: -j sets
# FFCV's torch thread count, so it changes the numbers; --ten-crop moves the plateau schedule) but
# not what the run is (RUN_IDENTITY): a different value there refuses in one line. Each maps a click
# parameter to its place in config.json. --max-steps, --compile and --device belong to the
# invocation and are never taken from the record (the printed resume command names --device and
# what is left of --max-steps).
RUN_IDENTITY = {
    "loader_kind": ("loader",),
    "batch_size": ("batch_size",),
    "init": ("init",),
    "normalize": ("normalize",),
    "parallel": ("parallel",),
    "seed": ("train", "seed"),
}
RECIPE_SETTINGS = {
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "momentum": ("train", "momentum"),
    "weight_decay": ("train", "weight_decay"),
    "lr_schedule": ("train", "schedule"),
    "lr_steps": ("train", "step_epochs"),
    "patience": ("train", "patience"),
    "log_every": ("train", "log_every"),
    "save_every": ("train", "save_every"),
    "save_every_minutes": ("train", "save_every_minutes"),
    "amp": ("train", "amp"),
}
RUN_SETTINGS = {
    "workers": ("workers",),
    "ten_crop": ("train", "ten_crop"),
    "tensorboard": ("train", "tensorboard"),
}


def recorded_setting(recorded: dict, name: str, where: tuple[str, ...]) -> object:
    """One setting of a config.json as its click parameter takes it (None when not recorded)."""
    value: object = recorded
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    if name == "lr_steps" and isinstance(value, list):
        return tuple(value)
    return value


def settings_of_run(run_dir: Path, ctx: click.Context) -> dict[str, object]:
    """The options a --resume takes from RUN_DIR's config.json: each recorded one the user did not give.

    Refuses a given identity flag that differs from the record. Nothing is printed (a refusal further
    on stays one line); the resumed run's config.json says what it went on with.
    """
    recorded = recorded_config(run_dir)
    flags = {p.name: max(p.opts, key=len) for p in ctx.command.params}  # --batch-size, not -b
    taken: dict[str, object] = {}
    for name, where in {**RUN_IDENTITY, **RECIPE_SETTINGS, **RUN_SETTINGS}.items():
        value = recorded_setting(recorded, name, where)
        if value is None:
            continue
        given = ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
        if not given:
            taken[name] = value
        elif name in RUN_IDENTITY and ctx.params[name] != value:
            raise click.ClickException(
                f"{flags[name]} {ctx.params[name]}: {run_dir} was trained with {flags[name]} {value}; "
                "drop the flag to continue it as it was trained"
            )
    return taken


def check_lr_steps(lr_schedule: str, lr_steps: tuple[int, ...]) -> None:
    """Refuse --lr-steps where the schedule would ignore them (plateau divides on validation error)."""
    if lr_steps and lr_schedule != "step":
        steps = ",".join(map(str, lr_steps))
        raise click.UsageError(
            f"--lr-steps {steps}: only --lr-schedule step divides at fixed epochs ({lr_schedule} does not); "
            "add --lr-schedule step or drop --lr-steps"
        )


def check_run_dir_pair(resume: Path | None, run_dir: Path | None) -> None:
    """Refuse --run-dir naming another folder than --resume's: a resume continues in the run's own folder."""
    if resume is None or run_dir is None:
        return
    own = resume if resume.is_dir() else resume.parent
    if run_dir.absolute() != own.absolute():
        raise click.UsageError(
            f"--run-dir {run_dir}: --resume {resume} continues in its own folder {own}; drop --run-dir, "
            f"or copy the run first (cp -r {own} {run_dir}) and --resume {run_dir}"
        )


def checkpoint_advice(path: Path) -> str:
    """What to do about an unusable checkpoint: the other checkpoint of its folder, when there is one."""
    other = path.with_name("last.pt" if path.name == "best.pt" else "best.pt")
    if not (other.is_file() and other.stat().st_size > 0):
        return "start a new --run-dir (or put back a good copy of the file)"
    if path.name == "best.pt":
        return f"evaluate {other} instead: --eval-only --resume {other}"
    return f"the run cannot continue from it; {other} holds its best weights: --eval-only --resume {other}, or start a new --run-dir"


def checked_checkpoint(path: Path, model: torch.nn.Module) -> dict:
    """`read_checkpoint` for the CLI: a damaged or foreign file is one line naming it and what to do."""
    try:
        return read_checkpoint(path, model)
    except CheckpointError as e:
        raise click.ClickException(f"{e}; {checkpoint_advice(path)}") from None


def resume_state(run_dir: Path, model: torch.nn.Module, loader_kind: str, seed: int) -> dict:
    """The TrainState record of RUN_DIR/last.pt, after checking, before any tensor is read, that the
    checkpoint is whole and this run's: this network's tensors, loader and seed."""
    path = run_dir / "last.pt"
    ckpt = checked_checkpoint(path, model)
    saved_kinds = {s.get("kind") for s in ckpt.get("loader") or [] if isinstance(s, dict)}
    kind = loader_kind.removesuffix("-raw")  # ffcv-raw's state is an ffcv loader's
    saved_seed = (ckpt.get("config") or {}).get("seed", seed)
    problem = (
        f"saved by the {', '.join(sorted(map(str, saved_kinds)))} loader, this run uses {loader_kind}"
        if saved_kinds and saved_kinds != {kind}
        else f"saved with --seed {saved_seed}, this run has {seed}"
        if saved_seed != seed
        else ""
    )
    if problem or not isinstance(ckpt.get("state"), dict):
        problem = f"another run's checkpoint: {problem}" if problem else "damaged (no training state in it)"
        raise click.ClickException(f"{path}: {problem}; {checkpoint_advice(path)}")
    return ckpt["state"]


def nothing_to_train(run_dir: Path, state: dict, epochs: int) -> None:
    """Say that a resume has no epoch left to train (and leave config.json as it was)."""
    click.echo(
        f"nothing to train: {run_dir} has finished epoch {state['epoch']} of --epochs {epochs} (step {state['step']}); "
        f"give --epochs above {state['epoch']} to continue it; {run_dir / 'config.json'} is unchanged"
    )


def eval_checkpoint(resume: Path) -> Path:
    """The checkpoint --eval-only evaluates: a folder's best.pt, else its last.pt, or the file named."""
    if not resume.is_dir():
        return resume
    return resume / "best.pt" if (resume / "best.pt").is_file() else resume / "last.pt"


def resume_arguments(data: Path, run_dir: Path, device: str, max_steps: int | None, steps_done: int) -> str:
    """The printed resume command's arguments: absolute paths (it may be run from elsewhere), the device
    when it is not the default, and what is left of this invocation's --max-steps."""
    args = f"--data {data.absolute()} --resume {run_dir.absolute()}"
    if device != default_device():
        args += f" --device {device}"
    if max_steps and max_steps > steps_done:
        args += f" --max-steps {max_steps - steps_done}"
    return args


def validation_summary(last_eval: dict) -> str:
    """The end line's word on validation: the last result, or that there was none yet."""
    return f"last validation: {last_eval}" if last_eval else "no validation yet (no epoch ended)"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@data_option
@cache_options
@click.option("--loader", "loader_kind", type=click.Choice(LOADER_KINDS), default="dali")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=default_device)
@click.option(
    "--parallel",
    type=click.Choice(["data", "towers"]),
    default="data",
    help="data: DDP under torchrun; towers: the paper's two columns on two devices. --resume uses the run's own.",
)
@click.option("--epochs", default=paper.EPOCHS, type=click.IntRange(1))
@click.option(
    "-b", "--batch-size", default=paper.BATCH_SIZE, type=click.IntRange(1), help="Images per step per process."
)
@click.option("--lr", default=paper.LEARNING_RATE, type=FiniteRange(0, min_open=True))
@click.option("--momentum", default=paper.MOMENTUM, type=FiniteRange(0, 1, max_open=True))
@click.option("--wd", "--weight-decay", "weight_decay", default=paper.WEIGHT_DECAY, type=FiniteRange(0))
@click.option("--lr-schedule", type=click.Choice(["plateau", "step"]), default="plateau")
@click.option(
    "--lr-steps",
    type=EpochList(),
    default="",
    help="step schedule: comma-separated epochs at which the lr is divided by 10.",
)
@click.option(
    "--patience",
    default=TrainConfig.patience,
    type=click.IntRange(1),
    help="plateau: epochs without a new best val error before dividing.",
)
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many steps of this invocation (short runs).")
@click.option(
    "--init",
    type=click.Choice(INIT_SCHEMES),
    default="paper",
    help="paper: §5 with §4.2's dropout. caffe: BVLC Caffe's (biases 0.1, fc6/fc7 std 0.005, inverted "
    "dropout). kaiming: He init, inverted dropout, learns from the first steps with --normalize std. "
    "Only paper is the paper's.",
)
@normalize_option
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(0),
    help="Loader threads/processes per rank [default: the cores this process may use ÷ ranks on this machine].",
)
@click.option("--seed", default=0, type=int)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="[default: runs/<time>-<loader>]")
@click.option(
    "--resume",
    type=click.Path(exists=True, path_type=Path),
    help="A run folder or its last.pt: continue it exactly, with its recorded settings.",
)
@click.option(
    "--eval-only",
    is_flag=True,
    help="Evaluate the --resume checkpoint (a folder's best.pt, else its last.pt) on the validation split and exit.",
)
@click.option("--ten-crop/--no-ten-crop", default=False, help="Validate with the paper's ten crops (§4.1).")
@click.option("--amp/--no-amp", default=True, help="bf16 autocast on CUDA (the CPU runs float32).")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the network.")
@click.option("--log-every", default=TrainConfig.log_every, type=click.IntRange(1), help="Steps per metrics record.")
@click.option(
    "--save-every",
    default=0,
    type=click.IntRange(0),
    help="Also write last.pt every this many steps (0: at epoch ends).",
)
@click.option(
    "--save-every-minutes",
    default=0.0,
    type=click.FloatRange(0),
    help="Also write last.pt when this many minutes passed since the last save (0: never).",
)
@click.option(
    "--tensorboard/--no-tensorboard",
    default=False,
    help="Also write the metrics as TensorBoard events (the `tensorboard` extra).",
)
def main(**options: object) -> None:
    """Train AlexNet on DATA with the paper's recipe; writes a run folder with metrics, checkpoints and curves.

    --resume RUN continues RUN with the settings its config.json records. Flags given again override
    its epochs, lr, momentum, weight decay, schedule, logging, saving, -j, --ten-crop and --tensorboard;
    another --loader, -b, --init, --normalize, --parallel or --seed is refused. --max-steps counts the
    steps of this invocation only. One process at a time trains into a run folder.

    A training loss that stops being finite ends the run with one line and exit code 3; no checkpoint
    is written from that state, so last.pt and best.pt keep the last finite one.
    """
    # A stop signal before training begins is noted, not fatal: the run says it had not started
    # (or, once in the loop, train() takes the signal over and stops after its first step).
    threads = torch.get_num_threads()
    with StopSignals().installed() as early:
        resume = options["resume"]
        if isinstance(resume, Path):
            options.update(settings_of_run(resume if resume.is_dir() else resume.parent, click.get_current_context()))
        try:
            run(**options, early=early)
        finally:
            torch.set_num_threads(threads)


def run(
    data: Path,
    loader_kind: str,
    device: str,
    parallel: str,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    lr_schedule: str,
    lr_steps: tuple[int, ...],
    patience: int,
    max_steps: int | None,
    init: str,
    normalize: str,
    workers: int | None,
    seed: int,
    run_dir: Path | None,
    resume: Path | None,
    eval_only: bool,
    ten_crop: bool,
    amp: bool,
    compile_model: bool,
    log_every: int,
    save_every: int,
    save_every_minutes: float,
    tensorboard: bool,
    cache_dir: Path | None = None,
    cache_max_gb: float | None = None,
    early: StopSignals | None = None,
) -> None:
    """The body of `main`, with every option settled (`early`: the stop signals noted before training)."""
    check_device(device)
    check_lr_steps(lr_schedule, lr_steps)
    check_run_dir_pair(resume, run_dir)
    if eval_only and resume is None:
        raise click.ClickException("--eval-only needs --resume CKPT (a run folder or its last.pt / best.pt)")
    if resume is not None and resume.is_dir() and not (resume / "last.pt").is_file():
        raise click.ClickException(
            f"--resume {resume}: no last.pt in that folder, so there is no run to continue or evaluate"
        )
    run_dir = (resume if resume.is_dir() else resume.parent) if resume else run_dir
    run_dir = run_dir or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{loader_kind}"
    if resume is None and (run_dir / "last.pt").exists():
        raise click.ClickException(
            f"{run_dir} holds a run already; continue it with --resume {run_dir}, or pick another --run-dir"
        )
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise click.ClickException("--tensorboard: the tensorboard package is missing; pip install -e '.[tensorboard]'")
    num_classes = class_count(data)
    if resume:
        check_same_data(run_dir, data)
    with_val = has_split(data, "val")
    if not with_val and (eval_only or lr_schedule == "plateau"):
        raise click.ClickException(
            f"{data}: no val split, so {'--eval-only has nothing to evaluate' if eval_only else '--lr-schedule plateau cannot see validation error'}"
            + ("" if eval_only else "; train with --lr-schedule step (and --lr-steps)")
        )
    try:
        placement = distributed.setup_from_env(device, devices_per_rank=2 if parallel == "towers" else 1)
    except ValueError as e:
        raise click.ClickException(f"--parallel {parallel}: {e}") from None
    if placement.is_main and not eval_only:
        warn_known_bad(init, normalize)
    threads = cpu_threads(placement.device, workers)
    if threads is not None:
        torch.set_num_threads(threads)  # `main` puts it back (alexnet-train also runs in-process)
    torch.manual_seed(seed)  # the initial weights (train() seeds again, per rank, for the dropout masks)
    model = build_model(num_classes, init, parallel, placement.device)
    start_step = 0
    if resume and not eval_only:
        start = resume_state(run_dir, model, loader_kind, seed)
        if start["epoch"] >= epochs:
            if placement.is_main:
                nothing_to_train(run_dir, start, epochs)
            distributed.teardown()
            return
        start_step = start["step"]

    def loader(split: str, **kw):
        return trainer_loader(
            loader_kind,
            data,
            split,
            batch_size,
            placement.device,
            seed=seed,
            rank=placement.rank,
            world_size=placement.world_size,
            workers=workers,
            normalize=normalize,
            cache_dir=cache_dir,
            cache_max_bytes=cache_bytes(cache_max_gb),
            **kw,
        )

    loaders: list = []
    try:
        if with_val:
            loaders.append(loader("val", ten_crop=ten_crop))
    except (
        FileNotFoundError,
        ImportError,
        ValueError,
        StorageError,
    ) as e:  # no pca.json, no export-ffcv yet, FFCV not installed
        raise click.ClickException(str(e)) from None
    try:
        if eval_only:
            ckpt = eval_checkpoint(resume)
            model.load_state_dict(checked_checkpoint(ckpt, model)["model"])
            r = evaluate(model, loaders[0], ten_crop=ten_crop, amp=amp)
            if placement.is_main:
                click.echo(
                    json.dumps(
                        {
                            "checkpoint": str(ckpt),
                            "images": r.images,
                            "loss": r.loss,
                            "top1_err": r.top1_err,
                            "top5_err": r.top5_err,
                            "ten_crop": ten_crop,
                        }
                    )
                )
            return
        cfg = TrainConfig(
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            schedule=lr_schedule,
            patience=patience,
            step_epochs=lr_steps,
            max_steps=start_step + max_steps if max_steps else None,  # the loop counts steps in total
            log_every=log_every,
            save_every=save_every,
            save_every_minutes=save_every_minutes,
            ten_crop=ten_crop,
            amp=amp,
            compile=compile_model,
            seed=seed,
            tensorboard=tensorboard,
        )
        info = {
            "data": str(data),
            **data_identity(data),
            "loader": loader_kind,
            "batch_size": batch_size,
            "parallel": parallel,
            "init": init,
            "normalize": normalize,
        }
        try:
            train_loader = loader("train", epochs=epochs)
        except (FileNotFoundError, ImportError, ValueError, StorageError) as e:
            raise click.ClickException(str(e)) from None
        loaders.append(train_loader)
        info.update(loader_budget(train_loader), torch_threads=threads)
        if early is not None and early.received:
            raise click.ClickException(
                f"stopped by {early.received} before training started: {run_dir} is as it was; run the command again"
            )
        if len(train_loader) == 0:
            per_rank = f" over {placement.world_size} ranks" if placement.distributed else ""
            raise click.ClickException(
                f"{data}/train: {getattr(train_loader, 'samples', 'too few')} samples{per_rank} make no batch of "
                f"{batch_size}; lower -b/--batch-size"
            )
        val_loader = loaders[0] if with_val else None
        try:
            state = train(
                model, train_loader, val_loader, cfg, run_dir, placement=placement, info=info, resume=resume is not None
            )
        except Diverged as e:
            raise DivergedRun(
                f"{e}; continue from it with a lower --lr (--resume {run_dir} --lr ...), "
                "or start anew with an init that suits the inputs (docs/recipe.md)"
            ) from None
        except (CorruptSample, StorageError) as e:  # a bad sample, or the object store failing mid-epoch
            raise click.ClickException(f"{e}; {run_dir / 'last.pt'} keeps the run up to the batch before") from None
        except (TrainError, WriteFailed) as e:
            raise click.ClickException(str(e)) from None
        if placement.is_main and state.stopped_by:
            launcher = "torchrun ... -m alexnet.tools.train" if placement.distributed else "alexnet-train"
            click.echo(
                f"stopped by {state.stopped_by} at epoch {state.epoch}, step {state.step}; last.pt is saved; "
                f"continue with: {launcher} {resume_arguments(data, run_dir, device, max_steps, state.step - start_step)}"
            )
        elif placement.is_main:
            click.echo(
                f"stopped at epoch {state.epoch}, step {state.step}; {validation_summary(state.last_eval)}; run folder: {run_dir}"
            )
    finally:
        for each in loaders:
            each.close()
        distributed.teardown()


if __name__ == "__main__":
    main()

"""`alexnet-train`: the paper's recipe on prepared shards, with any of the three loaders.

Conventional flags in the style of torchvision's references/classification/train.py; every recipe
value defaults to the paper's (§5). Under `torchrun` each process trains one data-parallel rank
(`--parallel data`); `--parallel towers` puts the paper's two columns on two devices.

    alexnet-train --data OUT --loader dali
    torchrun --nproc-per-node 2 -m alexnet.tools.train --data OUT --loader dali
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from alexnet.model import distributed, paper
from alexnet.model.alexnet import INIT_SCHEMES, AlexNet
from alexnet.model.evaluate import evaluate
from alexnet.model.towers import towers_from_alexnet
from alexnet.model.train import TrainConfig, train
from alexnet.pipeline import LOADER_KINDS, make_loader
from alexnet.tools.options import check_device, class_count, default_device, normalize_option


def build_model(num_classes: int, init: str, parallel: str, device: torch.device) -> torch.nn.Module:
    """The network on its device(s): one device, or the two columns on cuda:0 and cuda:1 (towers)."""
    model = AlexNet(num_classes=num_classes, init=init)
    if parallel == "towers":
        second = torch.device("cuda", 1) if device.type == "cuda" and torch.cuda.device_count() > 1 else device
        return towers_from_alexnet(model, (device, second))
    return model.to(device)


def recorded_parallel(run_dir: Path, asked: str) -> str:
    """The --parallel a resumed run was trained with (its checkpoints' layout), from its config.json."""
    config = run_dir / "config.json"
    recorded = json.loads(config.read_text()).get("parallel", asked) if config.is_file() else asked
    if recorded != asked:
        click.echo(f"--parallel {recorded}: the layout {run_dir} was trained with (its config.json)", err=True)
    return recorded


def check_recorded_normalize(run_dir: Path, asked: str) -> None:
    """Refuse to continue a run with another --normalize than the one its config.json records."""
    config = run_dir / "config.json"
    recorded = json.loads(config.read_text()).get("normalize") if config.is_file() else None
    if recorded is not None and recorded != asked:
        raise click.ClickException(
            f"--normalize {asked}: {run_dir} was trained with --normalize {recorded}; pass that to continue it"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder `prepare` wrote (with pca.json).",
)
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
@click.option("--lr", default=paper.LEARNING_RATE, type=float)
@click.option("--momentum", default=paper.MOMENTUM, type=float)
@click.option("--wd", "--weight-decay", "weight_decay", default=paper.WEIGHT_DECAY, type=float)
@click.option("--lr-schedule", type=click.Choice(["plateau", "step"]), default="plateau")
@click.option("--lr-steps", default="", help="step schedule: comma-separated epochs at which the lr is divided by 10.")
@click.option(
    "--patience",
    default=TrainConfig.patience,
    type=click.IntRange(1),
    help="plateau: epochs without a new best val error before dividing.",
)
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many steps (short runs).")
@click.option(
    "--init",
    type=click.Choice(INIT_SCHEMES),
    default="paper",
    help="kaiming (He init, inverted dropout; not the paper's) learns from the first steps, with --normalize std.",
)
@normalize_option
@click.option("-j", "--workers", type=click.IntRange(0), help="Loader threads/processes [default: every core].")
@click.option("--seed", default=0, type=int)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="[default: runs/<time>-<loader>]")
@click.option(
    "--resume", type=click.Path(exists=True, path_type=Path), help="A run folder or its last.pt: continue it exactly."
)
@click.option(
    "--eval-only",
    is_flag=True,
    help="Evaluate the --resume checkpoint (a folder's best.pt, else its last.pt) on the validation split and exit.",
)
@click.option("--ten-crop", is_flag=True, help="Validate with the paper's ten crops (§4.1).")
@click.option("--amp/--no-amp", default=True, help="bf16 autocast on CUDA (the CPU runs float32).")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the network.")
@click.option("--log-every", default=TrainConfig.log_every, type=click.IntRange(1), help="Steps per metrics record.")
def main(
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
    lr_steps: str,
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
) -> None:
    """Train AlexNet on DATA with the paper's recipe; writes a run folder with metrics, checkpoints and curves."""
    check_device(device)
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
    num_classes = class_count(data)
    parallel = recorded_parallel(run_dir, parallel) if resume else parallel
    if resume:
        check_recorded_normalize(run_dir, normalize)
    placement = distributed.setup_from_env(device)
    model = build_model(num_classes, init, parallel, placement.device)

    def loader(split: str, **kw):
        return make_loader(
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
            channels_last=placement.device.type == "cuda" and TrainConfig.channels_last,  # the trainer's NHWC
            **kw,
        )

    try:
        loaders = [loader("val", ten_crop=ten_crop)]
    except (FileNotFoundError, ImportError) as e:  # no pca.json, no export-ffcv yet, FFCV not installed
        raise click.ClickException(str(e)) from None
    try:
        if eval_only:
            ckpt = (
                (resume / "best.pt" if (resume / "best.pt").is_file() else resume / "last.pt")
                if resume.is_dir()
                else resume
            )
            model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
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
            step_epochs=tuple(int(e) for e in lr_steps.split(",") if e.strip()),
            max_steps=max_steps,
            log_every=log_every,
            ten_crop=ten_crop,
            amp=amp,
            compile=compile_model,
            seed=seed,
        )
        info = {
            "data": str(data),
            "loader": loader_kind,
            "batch_size": batch_size,
            "parallel": parallel,
            "init": init,
            "normalize": normalize,
        }
        loaders.append(loader("train", epochs=epochs))
        state = train(
            model, loaders[1], loaders[0], cfg, run_dir, placement=placement, info=info, resume=resume is not None
        )
        if placement.is_main:
            click.echo(
                f"stopped at epoch {state.epoch}, step {state.step}; last validation: {state.last_eval}; run folder: {run_dir}"
            )
    finally:
        for each in loaders:
            each.close()
        distributed.teardown()


if __name__ == "__main__":
    main()

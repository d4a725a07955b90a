"""`alexnet-bench train`: is the trainer fed? Its ceiling on a resident batch against each loader.

Every row runs the same training loop (`alexnet.model.train.train`, via `alexnet.model.throughput`)
on a fresh paper AlexNet with the data's class count: first on one batch already on the device (the
ceiling), then on each loader's training batches, built as alexnet-train builds them
(`tools.train.trainer_loader`: the same channels_last and normalisation). The loop logs at
alexnet-train's interval (`--log-every`), and only whole intervals inside the first epoch, after the
warm-up, are timed (`throughput.Plan`). A loader within 5% of the ceiling is "fed"; otherwise the
row says how much slower it is, and whether the loop waited for data ("starved") or not ("slowed").
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from alexnet.model.throughput import Plan, Rate, ResidentBatches, make_plan, measure, resident_batch, verdict
from alexnet.model.train import TrainConfig
from alexnet.pipeline.bench.charts import bar_chart
from alexnet.pipeline.bench.timing import best_of
from alexnet.pipeline.store.manifest import read_manifest
from alexnet.tools.bench_outputs import json_option, plot_option, write_json
from alexnet.tools.options import (
    check_device,
    class_count,
    data_option,
    default_device,
    normalize_option,
    parse_loader_list,
)
from alexnet.tools.train import build_model, trainer_loader

DEFAULT_BATCH = {"cpu": 32, "cuda": 128}
CEILING = "ceiling"


def measure_ceiling(
    num_classes: int, device: torch.device, batch_size: int, plan: Plan, cfg: TrainConfig | None = None
) -> Rate:
    """The loop on one batch resident on `device`, handed out for one epoch of `plan.total` steps."""
    images, labels = resident_batch(batch_size, num_classes, device)
    model = build_model(num_classes, "paper", "data", device)
    return measure(model, ResidentBatches(images, labels, plan.total), batch_size, plan, cfg)


def measure_loader(
    kind: str,
    data: Path,
    num_classes: int,
    device: torch.device,
    batch_size: int,
    plan: Plan,
    workers: int | None,
    cfg: TrainConfig | None = None,
    normalize: str = "mean",
) -> Rate:
    """The loop on the first epoch of `kind`'s training batches, built as alexnet-train builds them."""
    loader = trainer_loader(kind, data, "train", batch_size, device, workers=workers, normalize=normalize, epochs=1)
    try:
        model = build_model(num_classes, "paper", "data", device)
        return measure(model, loader, batch_size, plan, cfg)
    finally:
        loader.close()


def check_epoch_fits(data: Path, batch_size: int, plan: Plan) -> None:
    """Refuse, before anything runs, a train split whose one epoch holds fewer batches than the plan times."""
    samples = read_manifest(data)["splits"].get("train", {}).get("samples", 0)
    if samples // batch_size < plan.total:
        raise click.ClickException(
            f"{data}: one epoch of the train split is {samples // batch_size} batches of {batch_size}, and the bench "
            f"times {plan.total} steps ({plan.warmup} warm-up + {plan.steps}, in log intervals of {plan.log_every}) "
            "inside one epoch; lower --steps, --warmup, --log-every or -b, or use a larger split"
        )


def report(
    device: str,
    batch_size: int,
    plan: Plan,
    rounds: int,
    ceiling: Rate,
    rates: dict[str, Rate],
    cfg: TrainConfig,
    normalize: str = "mean",
) -> dict[str, Any]:
    """The JSON document: the ceiling, and per loader its rate, data-wait, share of the ceiling and verdict."""
    cuda = device == "cuda"
    return {
        "device": device,
        "batch_size": batch_size,
        "compile": cfg.compile,
        "amp": cfg.amp and cuda,
        "channels_last": cfg.channels_last and cuda,
        "normalize": normalize,
        "log_every": plan.log_every,
        "steps": plan.steps,
        "warmup": plan.warmup,
        "rounds": rounds,
        "ceiling": {"images_per_s": ceiling.images_per_s, "data_wait": ceiling.data_wait},
        "loaders": {
            kind: {
                "images_per_s": r.images_per_s,
                "data_wait": r.data_wait,
                "vs_ceiling": r.images_per_s / ceiling.images_per_s,
                "verdict": verdict(r, ceiling),
            }
            for kind, r in rates.items()
        },
    }


def format_table(doc: dict[str, Any]) -> str:
    """One row for the ceiling and one per loader."""
    c = doc["ceiling"]
    lines = [
        f"device {doc['device']}, batch {doc['batch_size']}{', torch.compile' if doc.get('compile') else ''}, "
        f"{doc['steps']} timed steps after {doc['warmup']} warm-up, logging every {doc['log_every']}"
        + (f", best of {doc['rounds']} rounds" if doc["rounds"] > 1 else ""),
        f"{'':<22}{'images/s':>10}{'data-wait':>11}{'× ceiling':>11}  verdict",
        f"{'ceiling (resident)':<22}{c['images_per_s']:>10.1f}{c['data_wait']:>11.1%}{1.0:>11.2f}",
    ]
    for kind, r in doc["loaders"].items():
        lines.append(
            f"{'loader ' + kind:<22}{r['images_per_s']:>10.1f}{r['data_wait']:>11.1%}{r['vs_ceiling']:>11.2f}  {r['verdict']}"
        )
    return "\n".join(lines)


@click.command("train")
@data_option
@click.option(
    "--loader",
    "kinds",
    multiple=True,
    default=["dali"],
    callback=parse_loader_list,
    help="Loader to feed the trainer; repeat or comma-separate.  [default: dali]",
)
@click.option(
    "--device", type=click.Choice(["cuda", "cpu"]), default=default_device, show_default="cuda when visible, else cpu"
)
@click.option(
    "--log-every",
    default=TrainConfig.log_every,
    show_default=True,
    type=click.IntRange(1),
    help="Steps per metrics record, as alexnet-train --log-every: the timed unit.",
)
@click.option(
    "--steps",
    type=click.IntRange(1),
    help="Timed steps per row, rounded up to whole log intervals.  [default: 2 intervals]",
)
@click.option(
    "--warmup",
    type=click.IntRange(0),
    help="Untimed steps first, rounded up to whole log intervals.  [default: 1 interval]",
)
@click.option("-b", "--batch-size", type=click.IntRange(1), help="[default: 32 on cpu, 128 on cuda]")
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(0),
    help="Loader threads/processes [default: this process's cores over the ranks on this machine].",
)
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Run every row this many times, interleaved; keep each row's fastest.",
)
@click.option(
    "--ceiling-only", is_flag=True, help="Time only the ceiling row (no loader, no data read but the class count)."
)
@click.option(
    "--compile", "compile_model", is_flag=True, help="torch.compile the network (as alexnet-train --compile)."
)
@normalize_option
@json_option
@plot_option
def train_bench(
    data: Path,
    kinds: list[str],
    device: str,
    log_every: int,
    steps: int | None,
    warmup: int | None,
    batch_size: int | None,
    workers: int | None,
    rounds: int,
    ceiling_only: bool,
    compile_model: bool,
    normalize: str,
    json_path: Path | None,
    plot_path: Path | None,
) -> None:
    """Training images/s with each loader against the trainer's ceiling (one batch resident on the device).

    Each row is alexnet-train's loop with its recipe (bf16 autocast and channels_last on CUDA), timed
    over whole --log-every intervals inside one epoch, after the warm-up, with no validation or save.
    """
    check_device(device)
    num_classes = class_count(data)
    batch_size = batch_size or DEFAULT_BATCH[device]
    plan = make_plan(steps or 2 * log_every, log_every if warmup is None else warmup, log_every)
    kinds = [] if ceiling_only else kinds
    if kinds:
        check_epoch_fits(data, batch_size, plan)
    dev = torch.device(device)
    cfg = TrainConfig(compile=compile_model)
    runs: dict[str, Callable[[], Rate]] = {CEILING: lambda: measure_ceiling(num_classes, dev, batch_size, plan, cfg)}
    for kind in kinds:
        runs[kind] = lambda kind=kind: measure_loader(
            kind, data, num_classes, dev, batch_size, plan, workers, cfg, normalize
        )
    try:
        rates = best_of(runs, rounds)
    except (FileNotFoundError, ImportError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    doc = report(device, batch_size, plan, rounds, rates.pop(CEILING), rates, cfg, normalize)
    click.echo(format_table(doc))
    if json_path:
        write_json(doc, json_path)
    if plot_path:
        plot(doc, plot_path)
        click.echo(f"→ {plot_path}")


def plot(doc: dict[str, Any], path: Path) -> None:
    """Bars of training images/s: the ceiling, then each loader (labelled with its share of the ceiling)."""
    names = ["ceiling\n(resident)"] + [f"{k}\n{r['vs_ceiling']:.2f}× ceiling" for k, r in doc["loaders"].items()]
    rates = [doc["ceiling"]["images_per_s"]] + [r["images_per_s"] for r in doc["loaders"].values()]
    colours = ["0.6"] + ["tab:green" if k == "dali" else "tab:blue" for k in doc["loaders"]]
    compiled = ", torch.compile" if doc["compile"] else ""
    bar_chart(names, rates, colours, f"Training on {doc['device']}, batch {doc['batch_size']}{compiled}", path)

"""`alexnet-bench train`: is the trainer fed? Its ceiling on a resident batch against each loader.

Every row runs the same training loop (`alexnet.model.train.train`, via `alexnet.model.throughput`)
on a fresh paper AlexNet with the data's class count: first on one batch already on the device (the
ceiling), then on each loader's training batches. A loader within 5% of the ceiling, or one the
loop waits for less than 5% of the time, is "fed"; otherwise the row says how much slower it is.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from alexnet.model.throughput import Rate, ResidentBatches, measure, resident_batch, verdict
from alexnet.model.train import TrainConfig
from alexnet.pipeline import make_loader
from alexnet.pipeline.bench.timing import best_of
from alexnet.tools.options import (
    check_device,
    class_count,
    data_option,
    default_device,
    normalize_option,
    parse_loader_list,
)
from alexnet.tools.train import build_model

DEFAULT_BATCH = {"cpu": 32, "cuda": 128}
WARMUP_STEPS = 3
CEILING = "ceiling"


def measure_ceiling(
    num_classes: int, device: torch.device, batch_size: int, steps: int, warmup: int, cfg: TrainConfig | None = None
) -> Rate:
    """The loop on one batch resident on `device`, handed out warmup + steps times."""
    images, labels = resident_batch(batch_size, num_classes, device)
    model = build_model(num_classes, "paper", "data", device)
    return measure(model, ResidentBatches(images, labels, warmup + steps), batch_size, steps, warmup, cfg)


def measure_loader(
    kind: str,
    data: Path,
    num_classes: int,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    workers: int | None,
    cfg: TrainConfig | None = None,
    normalize: str = "mean",
) -> Rate:
    """The loop on `kind`'s training batches (epoch after epoch when the split is short)."""
    loader = make_loader(kind, data, "train", batch_size, device, workers=workers, normalize=normalize)
    try:
        if len(loader) == 0:
            raise click.ClickException(
                f"{data}: the train split holds fewer than one batch of {batch_size}; lower --batch-size"
            )
        model = build_model(num_classes, "paper", "data", device)
        return measure(model, loader, batch_size, steps, warmup, cfg)
    finally:
        loader.close()


def report(
    device: str,
    batch_size: int,
    steps: int,
    warmup: int,
    rounds: int,
    ceiling: Rate,
    rates: dict[str, Rate],
    compiled: bool = False,
) -> dict[str, Any]:
    """The JSON document: the ceiling, and per loader its rate, data-wait, share of the ceiling and verdict."""
    return {
        "device": device,
        "batch_size": batch_size,
        "compile": compiled,
        "steps": steps,
        "warmup": warmup,
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
        f"{doc['steps']} timed steps after {doc['warmup']} warm-up"
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
@click.option("--steps", default=10, show_default=True, type=click.IntRange(1), help="Timed training steps per row.")
@click.option("--warmup", default=WARMUP_STEPS, show_default=True, type=click.IntRange(0), help="Untimed steps first.")
@click.option("-b", "--batch-size", type=click.IntRange(1), help="[default: 32 on cpu, 128 on cuda]")
@click.option("-j", "--workers", type=click.IntRange(0), help="Loader threads/processes [default: every core].")
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Run every row this many times, interleaved; keep each row's fastest.",
)
@click.option(
    "--compile", "compile_model", is_flag=True, help="torch.compile the network (as alexnet-train --compile)."
)
@normalize_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the figures as JSON.")
def train_bench(
    data: Path,
    kinds: list[str],
    device: str,
    steps: int,
    warmup: int,
    batch_size: int | None,
    workers: int | None,
    rounds: int,
    compile_model: bool,
    normalize: str,
    json_path: Path | None,
) -> None:
    """Training images/s with each loader against the trainer's ceiling (one batch resident on the device)."""
    check_device(device)
    num_classes = class_count(data)
    batch_size = batch_size or DEFAULT_BATCH[device]
    dev = torch.device(device)
    cfg = TrainConfig(compile=compile_model)
    runs: dict[str, Callable[[], Rate]] = {
        CEILING: lambda: measure_ceiling(num_classes, dev, batch_size, steps, warmup, cfg)
    }
    for kind in kinds:
        runs[kind] = lambda kind=kind: measure_loader(
            kind, data, num_classes, dev, batch_size, steps, warmup, workers, cfg, normalize
        )
    try:
        rates = best_of(runs, rounds)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    doc = report(device, batch_size, steps, warmup, rounds, rates.pop(CEILING), rates, compile_model)
    click.echo(format_table(doc))
    if json_path:
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        click.echo(f"→ {json_path}")

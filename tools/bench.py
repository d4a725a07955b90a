"""`alexnet-bench`: the benchmarks, one click group (`loaders`, `offline`)."""

from pathlib import Path

import click

from alexnet.pipeline.bench.loaders import WARMUP_BATCHES, format_table, plot, run_bench
from alexnet.pipeline.store.storage import Location, StorageError
from alexnet.tools.bench_offline import offline
from alexnet.tools.bench_outputs import json_option, plot_option, write_json
from alexnet.tools.bench_train import train_bench
from alexnet.tools.options import (
    cache_bytes,
    cache_options,
    check_device,
    data_option,
    normalize_option,
    parse_loader_list,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmarks of the data pipeline."""


@main.command("loaders")
@data_option
@cache_options
@click.option(
    "--loaders",
    "kinds",
    default="dali,torch",
    show_default=True,
    callback=parse_loader_list,
    help="Comma-separated loaders to run.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    type=click.Choice(["cpu", "cuda"]),
    help="Where the batches must land.",
)
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--batches", default=20, show_default=True, type=click.IntRange(1), help="Timed batches per loader.")
@click.option(
    "--warmup", default=WARMUP_BATCHES, show_default=True, type=click.IntRange(0), help="Untimed batches first."
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="DALI threads / DataLoader workers / decode processes [default: this process's cores over the ranks on this machine].",
)
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Run everything this many times, interleaved; keep each row's best.",
)
@click.option(
    "--hw-decoder-load",
    type=click.FloatRange(0.0, 1.0),
    help="DALI on cuda: the share of images sent to the GPU's hardware JPEG decoder.  [default: DALI loader's 0.65]",
)
@json_option
@plot_option
@normalize_option
def loaders(
    data: Location,
    cache_dir: Path | None,
    cache_max_gb: float | None,
    kinds: list[str],
    device: str,
    batch_size: int,
    batches: int,
    warmup: int,
    workers: int | None,
    rounds: int,
    hw_decoder_load: float | None,
    json_path: Path | None,
    plot_path: Path | None,
    normalize: str,
) -> None:
    """Training batches per second of each loader on the same shards, against plain JPEG decoding."""
    check_device(device)
    try:
        dali = {} if hw_decoder_load is None else {"hw_decoder_load": hw_decoder_load}
        result = run_bench(
            data,
            kinds,
            device,
            batch_size,
            batches,
            warmup,
            workers,
            rounds,
            normalize,
            dali,
            cache_dir=cache_dir,
            cache_max_bytes=cache_bytes(cache_max_gb),
        )
    except (FileNotFoundError, ValueError, StorageError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_table(result))
    if json_path:
        write_json(result.to_json(), json_path)
    if plot_path:
        plot(result, plot_path)
        click.echo(f"→ {plot_path}")


main.add_command(offline)
main.add_command(train_bench)

if __name__ == "__main__":
    main()

"""`alexnet-bench offline`: prepare and pca-stats rates against their same-run baselines."""

from pathlib import Path

import click

from alexnet.pipeline.bench.offline import bench_offline
from alexnet.tools.bench_outputs import json_option, write_json


@click.command("offline")
@click.option(
    "--imagenet-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An ILSVRC-shaped tree (e.g. from `alexnet-tools synth`).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="Worker processes [default: this process's cores over the ranks on this machine].",
)
@click.option(
    "--naive-images",
    default=300,
    show_default=True,
    type=click.IntRange(1),
    help="Images the one-process baseline times.",
)
@click.option(
    "--limit", type=click.IntRange(1), help="Use only the first N images of each split (real ImageNet: e.g. 20000)."
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the shards are written (and removed) [default: the system's temporary folder].",
)
@json_option
def offline(
    imagenet_dir: Path,
    workers: int | None,
    naive_images: int,
    limit: int | None,
    work_dir: Path | None,
    json_path: Path | None,
) -> None:
    """Time prepare (all cores) against a naive one-process Pillow loop, and pca-stats against plain decoding."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    r = bench_offline(imagenet_dir, workers, naive_images, limit, work_dir)
    click.echo(f"{r['images']} images, {r['workers']} workers")
    click.echo(f"{'step':<16}{'images/s':>10}{'images/CPU·s':>14}")
    for name, value in r["images_per_s"].items():
        per_cpu = r["images_per_cpu_s"][name]
        click.echo(f"{name:<16}{value:>10.1f}{'-' if per_cpu is None else f'{per_cpu:.1f}':>14}")
    click.echo(
        f"prepare / naive loop: {ratio(r['prepare_vs_naive'])}× on {r['workers']} workers (goal ≥ {r['prepare_goal']:.2f}×); "
        f"per CPU-second {ratio(r['prepare_vs_naive_per_cpu'])}× (≥ 0.9 means it scales to {r['workers']} cores on a quiet machine)"
    )
    click.echo(
        f"pca-stats / plain decode: {ratio(r['pca_vs_decode'])} (goal ≥ {r['pca_goal']:.2f}); "
        f"per CPU-second {ratio(r['pca_vs_decode_per_cpu'])}"
    )
    if json_path:
        write_json(r, json_path)


def ratio(value: float | None) -> str:
    """A ratio to two places, or "-" when a run was too short for the CPU clock."""
    return "-" if value is None else f"{value:.2f}"

"""`alexnet-bench offline`: prepare and pca-stats rates against their same-run baselines."""

import json
from pathlib import Path

import click

from alexnet.pipeline.bench_offline import bench_offline


@click.command("offline")
@click.option("--imagenet-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="An ILSVRC-shaped tree (e.g. from `alexnet-tools synth`).")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [default: every core].")
@click.option("--naive-images", default=300, show_default=True, type=click.IntRange(1), help="Images the one-process baseline times.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the figures as JSON.")
def offline(imagenet_dir: Path, workers: int | None, naive_images: int, json_path: Path | None) -> None:
    """Time prepare (all cores) against a naive one-process Pillow loop, and pca-stats against plain decoding."""
    r = bench_offline(imagenet_dir, workers, naive_images)
    click.echo(f"{'step':<16}{'images/s':>10}{'images/CPU·s':>14}")
    for name, value in r["images_per_s"].items():
        click.echo(f"{name:<16}{value:>10.1f}{r['images_per_cpu_s'][name]:>14.1f}")
    click.echo(
        f"prepare / naive loop: {r['prepare_vs_naive']:.2f}× on {r['workers']} workers (goal ≥ {r['prepare_goal']:.2f}×); "
        f"per CPU-second {r['prepare_vs_naive_per_cpu']:.2f}× (≥ 0.9 means it scales to {r['workers']} cores on a quiet machine)"
    )
    click.echo(
        f"pca-stats / plain decode: {r['pca_vs_decode']:.2f} (goal ≥ {r['pca_goal']:.2f}); per CPU-second {r['pca_vs_decode_per_cpu']:.2f}"
    )
    if json_path:
        json_path.write_text(json.dumps(r, indent=2) + "\n")

"""`alexnet-tools pca-stats`: RGB mean, std and PCA eigenbasis of the prepared training images."""

from pathlib import Path

import click

from alexnet.pipeline.offline.pca import compute_pca, format_stats
from alexnet.pipeline.store.pca_file import PCA_FILE, save_pca


@click.command("pca-stats")
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder `prepare` wrote.")
@click.option("--max-images", type=click.IntRange(1), help="Use an evenly spread subset of this many images.")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [default: every core].")
def pca_stats(data: Path, max_images: int | None, workers: int | None) -> None:
    """Write DATA/pca.json (0–1 scale) for PCA lighting and normalisation, and print it."""
    try:
        stats = compute_pca(data, max_images, workers)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    try:
        save_pca(stats, data / PCA_FILE)
    except OSError as e:
        raise click.ClickException(
            f"{data / PCA_FILE}: cannot write ({e.strerror or e}); free space or fix permissions and re-run"
        ) from None
    click.echo(format_stats(stats))
    click.echo(f"→ {data / PCA_FILE}")

"""`alexnet-tools pca-stats`: RGB mean, std and PCA eigenbasis of the prepared training images."""

import click

from alexnet.pipeline.offline.pca import compute_pca, format_stats
from alexnet.pipeline.store.pca_file import PCA_FILE, save_pca
from alexnet.pipeline.store.storage import Location, StorageError, join
from alexnet.tools.options import DataLocation


@click.command("pca-stats")
@click.option("--data", required=True, type=DataLocation(), help="Folder (or s3://bucket/prefix) `prepare` wrote.")
@click.option("--max-images", type=click.IntRange(1), help="Use an evenly spread subset of this many images.")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [default: every core].")
def pca_stats(data: Location, max_images: int | None, workers: int | None) -> None:
    """Write DATA/pca.json (0–1 scale) for PCA lighting and normalisation, and print it."""
    try:
        stats = compute_pca(data, max_images, workers)
    except (FileNotFoundError, StorageError) as e:
        raise click.ClickException(str(e)) from None
    try:
        save_pca(stats, join(data, PCA_FILE))
    except StorageError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(
            f"{join(data, PCA_FILE)}: cannot write ({e.strerror or e}); free space or fix permissions and re-run"
        ) from None
    click.echo(format_stats(stats))
    click.echo(f"→ {join(data, PCA_FILE)}")

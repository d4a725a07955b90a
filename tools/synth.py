"""`alexnet-tools synth`: write a small synthetic ILSVRC-2012-shaped tree."""

from pathlib import Path

import click

from alexnet.pipeline.offline.synth import write_tree


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to create.")
@click.option("--classes", default=10, show_default=True, type=click.IntRange(2, 1000))
@click.option("--train-per-class", default=100, show_default=True, type=click.IntRange(1))
@click.option("--val-per-class", default=20, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--archives",
    is_flag=True,
    help="Write the images as the three official archives (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, "
    "ILSVRC2012_devkit_t12.tar.gz) instead of the extracted tree.",
)
def synth(out: Path, classes: int, train_per_class: int, val_per_class: int, seed: int, archives: bool) -> None:
    """Write train/<wnid>/*.JPEG, flat val/ with LOC_val_solution.csv, and LOC_synset_mapping.txt (or, with
    --archives, the official archives and LOC_synset_mapping.txt)."""
    try:
        summary = write_tree(out, classes, train_per_class, val_per_class, seed, archives)
    except FileExistsError as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary)

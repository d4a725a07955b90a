"""`alexnet-tools summary`: the network's per-layer table (shapes, parameters, MACs, column split)."""

import click

from alexnet.model.summary import format_table, layer_rows


@click.command("summary")
@click.option(
    "--batch-size", default=1, show_default=True, type=click.IntRange(1), help="Images per batch for shapes and MACs."
)
def summary(batch_size: int) -> None:
    """Print every layer's output shape, parameters, multiply-accumulates and two-column placement."""
    click.echo(format_table(layer_rows(batch_size), batch_size))

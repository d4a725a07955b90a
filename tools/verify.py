"""`alexnet-tools verify`: check every shard, index and sample of a prepared folder."""

import click

from alexnet.pipeline.offline.verify import verify
from alexnet.pipeline.store.storage import Location, StorageError
from alexnet.tools.options import DataLocation


@click.command("verify")
@click.option("--data", required=True, type=DataLocation(), help="Folder (or s3://bucket/prefix) `prepare` wrote.")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [default: every core].")
def verify_cmd(data: Location, workers: int | None) -> None:
    """Compare shards with the manifest (bytes, sha256, counts), indexes with their tars, and decode every sample."""
    try:
        problems = verify(data, workers)
    except (FileNotFoundError, StorageError) as e:
        raise click.ClickException(str(e)) from None
    for p in problems:
        click.echo(p)
    if problems:
        raise click.ClickException(
            f"{len(problems)} problem(s) in {data}; re-run prepare with the same options: it rebuilds every "
            "shard that differs from the manifest and keeps the others (files it does not list are yours to remove)"
        )
    click.echo(f"{data}: all shards, indexes and samples check out")

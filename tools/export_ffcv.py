"""`alexnet-tools export-ffcv`: the prepared shards as FFCV betons for `--loader ffcv`."""

import click

from alexnet.pipeline.offline.ffcv_export import ExportError, ExportResult, export
from alexnet.pipeline.store.betons import FfcvMissing
from alexnet.pipeline.store.storage import Location, is_url
from alexnet.tools.options import DataLocation


@click.command("export-ffcv")
@click.option("--data", required=True, type=DataLocation(), help="Folder `prepare` wrote (on local disk).")
@click.option("--workers", type=click.IntRange(1), help="Writer processes [default: every core].")
@click.option(
    "--raw",
    is_flag=True,
    help="Store decoded pixels (FFCV's fastest mode, many times the JPEGs' size) as DATA/ffcv/<split>-raw.beton.",
)
def export_ffcv(data: Location, workers: int | None, raw: bool) -> None:
    """Write DATA/ffcv/train.beton and val.beton from the shards, in shard order, and record them in the manifest.

    By default each sample's stored JPEG goes in unchanged (no re-encoding); --raw decodes it.
    """
    if is_url(data):  # FFCV writes a beton by seeking into a local file
        raise click.ClickException(
            f"{data}: export-ffcv writes its betons on local disk; run it on a local copy of the shards, "
            "then upload that copy's ffcv/ folder and manifest.json to the prefix"
        )
    try:
        results = export(data, mode="raw" if raw else "jpg", workers=workers, announce=click.echo)
    except (FileNotFoundError, FfcvMissing, ExportError) as e:
        raise click.ClickException(str(e)) from None
    for r in results:
        click.echo(summary_line(r))


def summary_line(r: ExportResult) -> str:
    """`train: 998 samples, jpg, 18.9 MB (tars 16.1 MB) in 0.8 s → ffcv/train.beton`."""
    i = r.info
    return f"{r.split}: {i.samples} samples, {i.mode}, {i.bytes / 1e6:.1f} MB (tars {i.shard_bytes / 1e6:.1f} MB) in {r.seconds:.1f} s → {i.path}"

"""`alexnet-tools prepare`: ILSVRC-2012 JPEGs → 256×256 JPEG shards, DALI indexes and a manifest."""

import errno
import sys
import time
from pathlib import Path

import click

from alexnet.pipeline.offline.ilsvrc import LayoutError
from alexnet.pipeline.offline.prepare import (
    JPEG_QUALITY,
    SHARD_SIZE,
    Settings,
    SettingsMismatch,
    format_summary,
    prepare,
)
from alexnet.pipeline.store.storage import Location, StorageError, is_url
from alexnet.tools.options import DataLocation


@click.command("prepare")
@click.option(
    "--imagenet-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder holding train/ and val/, the official ILSVRC-2012 archives, or WebDataset tars.",
)
@click.option(
    "--out",
    required=True,
    type=DataLocation(),
    help="Folder (or s3://bucket/prefix) for shards and manifest; S3 is configured by the AWS_* variables.",
)
@click.option(
    "--val-labels",
    type=click.Path(path_type=Path),
    help="LOC_val_solution.csv, the devkit ground truth or ILSVRC2012_devkit_t12.tar.gz (found automatically otherwise).",
)
@click.option(
    "--classes",
    type=click.Path(dir_okay=False, path_type=Path),
    help="WebDataset tars: the wnid of each .cls index, one a line in index order (as LOC_synset_mapping.txt).",
)
@click.option("--workers", type=click.IntRange(1), help="Worker processes [default: every core].")
@click.option(
    "--quality",
    default=JPEG_QUALITY,
    show_default=True,
    type=click.IntRange(1, 100),
    help="JPEG quality of the stored images.",
)
@click.option("--shard-size", default=SHARD_SIZE, show_default=True, type=click.IntRange(1), help="Samples per shard.")
@click.option("--overwrite", is_flag=True, help="Replace shards made with other settings or input.")
def prepare_cmd(
    imagenet_dir: Path,
    out: Location,
    val_labels: Path | None,
    classes: Path | None,
    workers: int | None,
    quality: int,
    shard_size: int,
    overwrite: bool,
) -> None:
    """Resize every image's short side to 256, crop the centre 256×256, and write WebDataset shards.

    Undecodable files (and decompression bombs) are listed in the manifest's quarantine and counted;
    the run still succeeds. A re-run with the same settings resumes: it keeps finished shards whose
    sha256 still matches the manifest, rebuilds the others, and retries files it could not read.
    Ctrl-C stops it at once; run the same command again to resume.
    """
    if not imagenet_dir.is_dir():
        raise click.ClickException(
            f"{imagenet_dir}: no such folder; pass the ILSVRC folder holding train/ and val/ (or the archives)"
        )
    start = time.perf_counter()
    try:
        results = prepare(
            root=imagenet_dir,
            out=out,
            settings=Settings(quality=quality, shard_size=shard_size),
            val_labels=val_labels,
            workers=workers,
            overwrite=overwrite,
            announce=click.echo,
            classes=classes,
        )
    except (LayoutError, SettingsMismatch, StorageError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(os_error_line(e, out)) from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; run the same command again to resume (finished shards in {out} are kept)", err=True)
        sys.exit(130)
    click.echo(format_summary(results, time.perf_counter() - start, out))


def os_error_line(e: OSError, out: Location) -> str:
    """One line for a failed read or write: disk full, unreadable input, unwritable output, or what the OS said."""
    where = Path(e.filename) if e.filename else out
    if is_url(out) and not e.filename:
        return f"{out}: {e.strerror or e}"
    if e.errno == errno.ENOSPC:
        return f"{where}: disk full; free space (or choose another --out) and re-run: finished shards are kept"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        path, dest = Path(where).resolve(), Path(out).resolve()
        if path.is_relative_to(dest) or dest.is_relative_to(path):  # prepare writes only OUT and its parents
            return f"{where}: not writable; choose another --out or fix its permissions"
        return f"{where}: cannot read this input ({e.strerror}); fix its permissions or run as a user who can read it"
    return f"{where}: {e.strerror or e}"

"""What several front ends share: the data-location type, the device option and its check, the loader-list option, the class count."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import click
import torch

from alexnet.pipeline import LOADER_KINDS
from alexnet.pipeline.paper import NORMALIZE_MODES
from alexnet.pipeline.store.manifest import read_manifest
from alexnet.pipeline.store.storage import Location, StorageError, is_url, parse_location


class DataLocation(click.ParamType):
    """A local folder (a Path, checked like click.Path) or an `s3://bucket/prefix` URL (a str, never made a Path)."""

    name = "folder|s3://bucket/prefix"

    def __init__(self, exists: bool = False) -> None:
        self.folder = click.Path(exists=exists, file_okay=False, path_type=Path)

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Location:
        if isinstance(value, str) and is_url(value):
            try:
                return parse_location(value)
            except StorageError as e:
                self.fail(str(e), param, ctx)
        return self.folder.convert(value, param, ctx)


data_option = click.option(
    "--data",
    required=True,
    type=DataLocation(exists=True),
    help="Folder (or s3://bucket/prefix) `prepare` and `pca-stats` wrote.",
)


def cache_options(command: Callable) -> Callable:
    """`--cache-dir` and `--cache-max-gb`: where the torch and FFCV loaders keep the shards of an s3:// --data."""
    command = click.option(
        "--cache-max-gb",
        type=click.FloatRange(0, min_open=True),
        help="Bound on --cache-dir's size; other data sets' files in it go first, least recently used [default: none].",
    )(command)
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="With --data s3://…: local folder the shards are fetched into, checked and reused across runs "
        "(needed by the torch and FFCV loaders; DALI streams from S3 without it).",
    )(command)


def cache_bytes(gigabytes: float | None) -> int | None:
    """--cache-max-gb in bytes."""
    return None if gigabytes is None else int(gigabytes * 1e9)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """One line when `--device cuda` is asked for where torch sees no CUDA device."""
    if device == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda: no CUDA device is visible; use --device cpu")


def parse_loader_list(ctx: click.Context, param: click.Parameter, values: str | tuple[str, ...] | None) -> list[str]:
    """`--loader dali --loader torch` or `--loader dali,torch`: the kinds in order, each once."""
    values = (values,) if isinstance(values, str) else values or ()
    kinds = list(dict.fromkeys(k.strip() for v in values for k in v.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in LOADER_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(LOADER_KINDS)}")
    return kinds


def class_count(data: Location) -> int:
    """The number of classes the manifest of DATA lists (one line when there is no manifest or the store fails)."""
    try:
        return len(read_manifest(data)["classes"])
    except (FileNotFoundError, StorageError) as e:
        raise click.ClickException(str(e)) from None


normalize_option = click.option(
    "--normalize",
    type=click.Choice(NORMALIZE_MODES),
    default="mean",
    show_default=True,
    help="mean: subtract the training set's per-channel mean on the 0–255 scale (§2); std: also divide by the std.",
)


class FiniteRange(click.FloatRange):
    """A FloatRange that also refuses nan and ±inf (a comparison with nan is never out of range)."""

    name = "finite float range"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return number


class EpochList(click.ParamType):
    """`30,60`: comma-separated non-negative epochs, as a tuple of ints ("" is none)."""

    name = "epochs"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple | list):
            return tuple(int(e) for e in value)
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        if not all(p.isascii() and p.isdigit() for p in parts):
            self.fail(f"{value!r} is not a comma-separated list of non-negative epochs, e.g. 30,60.", param, ctx)
        return tuple(int(p) for p in parts)

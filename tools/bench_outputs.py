"""The benchmarks' output files: `--json` and `--plot`, checked when the command line is read, written whole.

A benchmark can run for minutes; an output path that cannot be written (a missing or read-only
folder, a chart not named `.png`) is refused in one line before anything is measured, and every
file is written under a temporary name and renamed into place, so a failed write leaves the old
file (or none), never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from alexnet.pipeline.store.atomic import write_atomic


def check_output_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """click callback: refuse an output path that cannot be written, in one line, before the run starts."""
    if value is None:
        return None
    flag = max(param.opts, key=len)
    folder = value.parent
    if param.name == "plot_path" and value.suffix.lower() != ".png":
        raise click.ClickException(f"{flag} {value}: the chart is a PNG image; give a file name ending in .png")
    if value.is_dir():
        raise click.ClickException(f"{flag} {value}: that is a folder; give a file name in it")
    if not folder.is_dir():
        raise click.ClickException(
            f"{flag} {value}: the folder {folder} does not exist; create it or pick another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.ClickException(f"{flag} {value}: the folder {folder} is not writable; pick another path")
    return value


json_option = click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),  # checked by the callback, in one line
    callback=check_output_path,
    help="Write the figures as JSON.",
)
plot_option = click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),  # checked by the callback, in one line
    callback=check_output_path,
    help="Write a PNG bar chart.",
)


def write_json(doc: dict[str, Any], path: Path) -> None:
    """The figures as indented JSON, atomically, and a line saying where."""
    write_atomic(path, json.dumps(doc, indent=2) + "\n")
    click.echo(f"→ {path}")

"""The training loss per logged step of several runs on one chart (docs/recipe.md).

    python scripts/plot_losses.py --out losses.png RUN_DIR[=LABEL] RUN_DIR[=LABEL] ... [--chance 100]

Each RUN_DIR is an `alexnet-train` run folder (its metrics.jsonl); LABEL defaults to the folder's name.
`--chance C` draws the loss of a uniform guess over C classes, ln C.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alexnet.model.plots import read_metrics


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The PNG to write.")
@click.option("--chance", type=click.IntRange(2), help="Draw ln(classes), the loss of a uniform guess.")
@click.option("--title", default="training loss per step", show_default=True)
def main(runs: tuple[str, ...], out: Path, chance: int | None, title: str) -> None:
    """Plot the `train` records' loss against step for every run."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for spec in runs:
        folder, _, label = spec.partition("=")
        train = [r for r in read_metrics(Path(folder) / "metrics.jsonl") if r["kind"] == "train"]
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1.2, label=label or Path(folder).name)
    if chance:
        ax.axhline(math.log(chance), color="grey", ls=":", lw=1, label=f"ln {chance} (chance)")
    ax.set(xlabel="step", ylabel="cross-entropy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(out, dpi=100)
    click.echo(f"→ {out}")


if __name__ == "__main__":
    main()

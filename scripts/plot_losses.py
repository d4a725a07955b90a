"""Several runs side by side (docs/recipe.md): training loss per logged step, and validation top-5 error per epoch.

    python scripts/plot_losses.py --out losses.png RUN_DIR[=LABEL] RUN_DIR[=LABEL] ... [--chance 100] [--smooth 10] [--ymax 5.2]

Each RUN_DIR is an `alexnet-train` run folder (its metrics.jsonl); LABEL defaults to the folder's name.
`--chance C` draws the loss and the top-5 error of a uniform guess over C classes (ln C, 1 − 5/C).
Top-5 rather than top-1, as a small validation set moves in steps of 1/images and top-1 moves last.
`--smooth N` draws each loss curve's trailing N-step mean over the raw curve, which stays faint.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alexnet.model.plots import read_metrics


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The PNG to write.")
@click.option("--chance", type=click.IntRange(2), help="Draw ln(classes), the loss of a uniform guess.")
@click.option("--ymax", type=float, help="Top of the loss axis (a spike in the first steps can flatten the rest).")
@click.option(
    "--smooth", default=1, show_default=True, type=click.IntRange(1), help="Trailing mean over this many steps."
)
def main(runs: tuple[str, ...], out: Path, chance: int | None, ymax: float | None, smooth: int) -> None:
    """Plot the `train` records' loss against step and the `epoch` records' top-5 error for every run."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, err_ax = fig.subplots(1, 2, width_ratios=(2, 1))
    for colour, spec in enumerate(runs):
        folder, _, label = spec.partition("=")
        records = read_metrics(Path(folder) / "metrics.jsonl")
        train = [r for r in records if r["kind"] == "train"]
        steps, losses = np.array([r["step"] for r in train]), np.array([r["loss"] for r in train])
        label = label or Path(folder).name
        if smooth > 1:
            loss_ax.plot(steps, losses, color=f"C{colour}", lw=0.6, alpha=0.3)
            loss_ax.plot(steps, trailing_mean(losses, smooth), color=f"C{colour}", lw=1.5, label=label)
        else:
            loss_ax.plot(steps, losses, color=f"C{colour}", lw=1.2, label=label)
        epochs = [r for r in records if r["kind"] == "epoch" and "top5_err" in r]
        err_ax.plot([r["step"] for r in epochs], [r["top5_err"] for r in epochs], "o-", color=f"C{colour}", label=label)
    if chance:
        loss_ax.axhline(math.log(chance), color="grey", ls=":", lw=1, label=f"ln {chance} (chance)")
        err_ax.axhline(1 - 5 / chance, color="grey", ls=":", lw=1, label="chance")
    title = "training loss per step" + (f" ({smooth}-step trailing mean)" if smooth > 1 else "")
    loss_ax.set(xlabel="step", ylabel="cross-entropy", title=title)
    loss_ax.set_ylim(top=ymax)
    err_ax.set(xlabel="step", ylabel="top-5 error", title="validation (centre crop), per epoch")
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(out, dpi=100)
    click.echo(f"→ {out}")


def trailing_mean(values: np.ndarray, n: int) -> np.ndarray:
    """Each value's mean with up to n − 1 values before it (shorter windows at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    counts = np.minimum(np.arange(1, len(values) + 1), n)
    return (sums[1:] - sums[np.arange(len(values)) + 1 - counts]) / counts


if __name__ == "__main__":
    main()

"""Loss and error curves from a run's metrics.jsonl, drawn to PNG (Agg canvas, no display needed)."""

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_metrics(path: Path | str) -> list[dict]:
    """The records of a metrics.jsonl, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path: Path | str, png_path: Path | str) -> Path:
    """Two panels: training and validation loss against step; top-1/top-5 validation error against epoch."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r["kind"] == "train"]
    epochs = [r for r in records if r["kind"] == "epoch" and "top1_err" in r]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, err_ax = fig.subplots(1, 2)

    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train (per log interval)")
    loss_ax.plot([r["step"] for r in epochs], [r["val_loss"] for r in epochs], "o-", label="validation")
    loss_ax.set(xlabel="step", ylabel="cross-entropy", title="loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend()

    x = [r["epoch"] + 1 for r in epochs]
    err_ax.plot(x, [100 * r["top1_err"] for r in epochs], "o-", label="top-1")
    err_ax.plot(x, [100 * r["top5_err"] for r in epochs], "s-", label="top-5")
    for r in epochs:
        if r["next_lr"] < r["lr"]:
            err_ax.axvline(r["epoch"] + 1, color="grey", ls=":", lw=1)
    err_ax.set(xlabel="epoch (dotted: lr divided after it)", ylabel="error %", title="validation error")
    err_ax.grid(alpha=0.3)
    err_ax.legend()

    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    return png_path

"""The benchmarks' one chart: labelled bars of images/s, saved as a PNG atomically."""

from __future__ import annotations

from pathlib import Path

from alexnet.pipeline.store.atomic import tmp_path


def bar_chart(names: list[str], rates: list[float], colours: list[str], title: str, path: Path) -> None:
    """Bars of images/s with their values on top, written to `path` (PNG) under a temporary name first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 4))
    bars = ax.bar(names, rates, color=colours)
    ax.bar_label(bars, fmt="%.0f")
    ax.margins(y=0.12)
    ax.set_ylabel("images / s")
    ax.set_title(title)
    fig.tight_layout()
    tmp = tmp_path(path)
    try:
        fig.savefig(tmp, dpi=120, format="png")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)

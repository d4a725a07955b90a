"""Per-layer activation and gradient scales of AlexNet on one real training batch (docs/recipe.md).

    python scripts/layer_scales.py --data OUT [--normalize mean|std] [--init paper] [--checkpoint RUN/last.pt]

For every layer's output (conv and fc before their ReLU, and pool5): its rms, its across-image
std (the std over the batch of each unit, averaged over units: the part that can tell images
apart) and the share of its energy that is the same for every image (the constant part: biases
and the mean input). For every weight: the rms of ∂L/∂W and the relative size lr·‖∂L/∂W‖/‖W‖ of
one plain SGD step. Then the loss and the logits' across-image std. The batch comes from the
torch loader in training mode (crops, flips, lighting) and the network runs in training mode
(dropout on, as in a training step), or with `--eval` in eval mode (dropout's fixed 0.5, so the
across-image std of fc7 and fc8 is the images' alone, not the masks').
"""

from __future__ import annotations

from pathlib import Path

import click
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.model.alexnet import INIT_SCHEMES, AlexNet
from alexnet.model.paper import BIAS_ONE_LAYERS
from alexnet.pipeline import make_loader
from alexnet.pipeline.paper import NORMALIZE_MODES
from alexnet.tools.options import class_count

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")


def scales(model: AlexNet, images: torch.Tensor, labels: torch.Tensor, lr: float) -> tuple[list[dict], float]:
    """One forward and backward pass: the per-layer rows (see the module docstring) and the loss."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach()))
        for name in LAYERS
    ]
    model.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    for h in hooks:
        h.remove()
    rows = []
    for name in LAYERS:
        y = outputs[name].double().flatten(1)
        energy = y.pow(2).mean()
        row = {
            "layer": name,
            "rms": energy.sqrt().item(),
            "across_std": y.std(0).mean().item(),
            "constant_share": (y.mean(0).pow(2).mean() / energy).item(),
        }
        module = getattr(model, name)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            g, w = module.weight.grad.double(), module.weight.detach().double()
            row["grad_rms"] = g.pow(2).mean().sqrt().item()
            row["step_ratio"] = (lr * g.norm() / w.norm()).item()
        rows.append(row)
    rows.append({"layer": "logits", "rms": 0.0, "across_std": outputs["fc8"].std(0).mean().item()})
    return rows, loss.item()


def format_rows(rows: list[dict], loss: float) -> str:
    lines = [f"{'layer':<8}{'rms':>11}{'across-img std':>16}{'constant share':>16}{'grad rms':>11}{'lr·|g|/|W|':>12}"]
    for r in rows[:-1]:
        grad = f"{r['grad_rms']:>11.2e}{r['step_ratio']:>12.2e}" if "grad_rms" in r else ""
        lines.append(f"{r['layer']:<8}{r['rms']:>11.3g}{r['across_std']:>16.3g}{r['constant_share']:>16.6%}{grad}")
    lines.append(f"loss {loss:.4f}; logits' across-image std {rows[-1]['across_std']:.3g}")
    return "\n".join(lines)


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--normalize", type=click.Choice(NORMALIZE_MODES), default="mean", show_default=True)
@click.option("--init", type=click.Choice(INIT_SCHEMES), default="paper", show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A run's last.pt.")
@click.option("-b", "--batch-size", default=32, show_default=True, type=click.IntRange(2))
@click.option("--lr", default=0.01, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--eval", "eval_mode", is_flag=True, help="Run the network in eval mode (no dropout masks).")
@click.option(
    "--one-bias",
    type=float,
    help="A what-if: set the biases §5 sets to 1 (conv2, conv4, conv5, fc6, fc7) to this instead.",
)
def main(
    data: Path,
    normalize: str,
    init: str,
    checkpoint: Path | None,
    batch_size: int,
    lr: float,
    seed: int,
    eval_mode: bool,
    one_bias: float | None,
) -> None:
    """Print the per-layer scales of the network at init (or at a checkpoint) on one training batch."""
    torch.manual_seed(seed)
    model = AlexNet(num_classes=class_count(data), init=init)
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    if one_bias is not None:
        with torch.no_grad():
            for name in BIAS_ONE_LAYERS:
                getattr(model, name).bias.fill_(one_bias)
    loader = make_loader("torch", data, "train", batch_size, seed=seed, workers=0, normalize=normalize)
    try:
        images, labels = next(iter(loader))
    finally:
        loader.close()
    rows, loss = scales(model.train(not eval_mode), images, labels, lr)
    mode = "eval mode" if eval_mode else "training mode"
    bias = "" if one_bias is None else f", biases of 1 set to {one_bias}"
    where = checkpoint or "at initialisation"
    click.echo(f"init {init}{bias}, normalize {normalize}, {where}, batch {batch_size}, {mode}")
    click.echo(format_rows(rows, loss))


if __name__ == "__main__":
    main()

"""A per-layer table of the network: output shape, parameters, multiply-accumulates, column split.

Shapes come from a forward pass on the meta device (no memory, no arithmetic). MACs count the
convolutions' and fully connected layers' multiply-accumulates only; ReLU, LRN, pooling and the
biases' additions are left out, as is usual for "FLOPs" tables.
"""

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.model.alexnet import AlexNet
from alexnet.model.paper import IMAGE_SIZE, NUM_CLASSES
from alexnet.model.towers import READS_BOTH_COLUMNS, column_sizes

ROWS = ("conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")


@dataclass(frozen=True)
class LayerRow:
    """One layer: its output shape for the batch, own parameters, MACs for the batch, placement."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    columns: str


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        k, s = m.kernel_size[0], m.stride[0]
        return f"conv {k}×{k}/{s}" + (f" g{m.groups}" if m.groups > 1 else "")
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.MaxPool2d):
        return f"max-pool {m.kernel_size}/{m.stride}"
    return "LRN"


def _macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        return out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return 0


def _columns(name: str, m: nn.Module) -> str:
    """How the towers place the layer: each column's share, and which column(s) it reads."""
    if not isinstance(m, (nn.Conv2d, nn.Linear)):
        return "per column"
    a, b = column_sizes(m.weight.shape[0])
    return f"{a} | {b}, " + ("both columns" if name in READS_BOTH_COLUMNS else "own column")


def layer_rows(batch_size: int = 1, num_classes: int = NUM_CLASSES) -> list[LayerRow]:
    """The table's rows, in forward order, for a batch of `batch_size` 224×224 images."""
    with torch.device("meta"):
        model = AlexNet(num_classes)
    outputs: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o)) for n in ROWS]
    with torch.no_grad():
        model(torch.empty(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, device="meta"))
    for h in hooks:
        h.remove()
    rows = []
    for name in ROWS:
        m, out = getattr(model, name), outputs[name]
        params = sum(p.numel() for p in m.parameters())
        rows.append(LayerRow(name, _kind(m), tuple(out.shape), params, _macs(m, out), _columns(name, m)))
    return rows


def format_table(rows: list[LayerRow], batch_size: int = 1) -> str:
    """The rows as an aligned text table with a totals line (MACs for the batch and per image)."""
    header = ("layer", "kind", "output", "params", "MACs", "column 0 (device A) | column 1 (device B)")
    body = [
        (r.name, r.kind, "×".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.macs:,}", r.columns) for r in rows
    ]
    params, macs = sum(r.params for r in rows), sum(r.macs for r in rows)
    total = (
        "total",
        "",
        f"batch {batch_size}",
        f"{params:,}",
        f"{macs:,}",
        f"{macs / batch_size / 1e9:.4f} G MACs per image",
    )
    widths = [max(len(line[i]) for line in (header, *body, total)) for i in range(len(header))]
    right = {3, 4}

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *map(fmt, body), rule, fmt(total)])

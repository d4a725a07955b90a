"""The paper's model parallelism (§3.2): column 0 on one device, column 1 on the other.

Every layer is split by its outputs into the two columns' halves (48+48 conv1 kernels, 128+128
conv2, ..., 2048+2048 fc6 and fc7 neurons, and fc8's classes halved). A column's half reads only
its own column's previous layer, except where the paper lets the GPUs talk: conv3, fc6, fc7 and
fc8 read both columns. So activations cross devices exactly four times per forward pass, and the
logits are gathered on the first device. Built from an AlexNet's weights (and convertible back),
so towers(x) equals AlexNet(x) for the same weights; on one device both columns simply share it.
"""

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.model.alexnet import POOL5_SIDE, AlexNet, ResponseNorm, dropout_form_of, make_dropout, max_pool
from alexnet.model.paper import COLUMNS, DROPOUT, FC_WIDTH, KERNELS, NUM_CLASSES

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
READS_BOTH_COLUMNS = ("conv3", "fc6", "fc7", "fc8")  # where the paper's GPUs communicate


def column_sizes(n: int) -> list[int]:
    """How n outputs split over the columns (the first column takes the odd one out)."""
    return [n // COLUMNS + (1 if c < n % COLUMNS else 0) for c in range(COLUMNS)]


class Column(nn.Module):
    """One GPU's half of every layer; `column` picks which half of an odd class count it holds.

    Its dropout is AlexNet's own module (`make_dropout`), in the same form as the whole network's.
    """

    def __init__(
        self, column: int, num_classes: int = NUM_CLASSES, dropout: float = DROPOUT, dropout_form: str = "paper"
    ) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (k // COLUMNS for k in KERNELS)
        fc = FC_WIDTH // COLUMNS
        self.conv1 = nn.Conv2d(3, c1, 11, stride=4, padding=2)
        self.norm1 = ResponseNorm(columns=1)
        self.pool1 = max_pool()
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.norm2 = ResponseNorm(columns=1)
        self.pool2 = max_pool()
        self.conv3 = nn.Conv2d(COLUMNS * c2, c3, 3, padding=1)
        self.conv4 = nn.Conv2d(c3, c4, 3, padding=1)
        self.conv5 = nn.Conv2d(c4, c5, 3, padding=1)
        self.pool5 = max_pool()
        self.fc6 = nn.Linear(COLUMNS * c5 * POOL5_SIDE * POOL5_SIDE, fc)
        self.drop6 = make_dropout(dropout, dropout_form)
        self.fc7 = nn.Linear(COLUMNS * fc, fc)
        self.drop7 = make_dropout(dropout, dropout_form)
        self.fc8 = nn.Linear(COLUMNS * fc, column_sizes(num_classes)[column])

    def lower(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 and conv2 on this column's own input."""
        x = self.pool1(self.norm1(F.relu(self.conv1(x))))
        return self.pool2(self.norm2(F.relu(self.conv2(x))))

    def upper(self, both: torch.Tensor) -> torch.Tensor:
        """conv3 on both columns' conv2 maps, then conv4 and conv5 on this column's own."""
        x = F.relu(self.conv3(both))
        x = F.relu(self.conv4(x))
        return self.pool5(F.relu(self.conv5(x)))

    def hidden6(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop6(F.relu(self.fc6(torch.flatten(both, 1))))

    def hidden7(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop7(F.relu(self.fc7(both)))


def _gather(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Both columns' outputs side by side (channels or neurons) on `device`: a crossing."""
    return torch.cat([p.to(device) for p in parts], dim=1)


class Towers(nn.Module):
    """Two columns, column c on devices[c]; input may be anywhere, logits land on devices[0]."""

    def __init__(
        self,
        devices: tuple[torch.device | str, torch.device | str],
        num_classes: int = NUM_CLASSES,
        dropout: float = DROPOUT,
        dropout_form: str = "paper",
    ) -> None:
        super().__init__()
        self.devices = tuple(torch.device(d) for d in devices)
        self.num_classes = num_classes
        self.columns = nn.ModuleList(
            Column(c, num_classes, dropout, dropout_form).to(d) for c, d in enumerate(self.devices)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols, devs = list(self.columns), self.devices
        dtype = cols[0].conv1.weight.dtype
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(dtype)
        h = [c.lower(x.to(d)) for c, d in zip(cols, devs)]
        h = [c.upper(_gather(h, d)) for c, d in zip(cols, devs)]
        h = [c.hidden6(_gather(h, d)) for c, d in zip(cols, devs)]
        h = [c.hidden7(_gather(h, d)) for c, d in zip(cols, devs)]
        return _gather([c.fc8(_gather(h, d)) for c, d in zip(cols, devs)], devs[0])

    def to_alexnet(self) -> AlexNet:
        """The same weights as one single-device AlexNet on devices[0] (e.g. to save or evaluate)."""
        drop = self.columns[0].drop6
        model = AlexNet(self.num_classes, dropout=drop.p, dropout_form=dropout_form_of(drop)).to(self.devices[0])
        with torch.no_grad():
            for name in LAYERS:
                whole = getattr(model, name)
                halves = [getattr(c, name) for c in self.columns]
                whole.weight.copy_(torch.cat([h.weight.to(self.devices[0]) for h in halves]))
                whole.bias.copy_(torch.cat([h.bias.to(self.devices[0]) for h in halves]))
        return model


def towers_from_alexnet(model: AlexNet, devices: tuple[torch.device | str, torch.device | str]) -> Towers:
    """Split an AlexNet's weights into Towers on `devices` (copies; the model is left as it was).

    Every layer splits by output rows: for the grouped conv2/conv4/conv5 the weight's rows of one
    group already hold only that column's inputs; for conv3 and the fc layers each half keeps every
    input, which is what reading both columns means.
    """
    towers = Towers(
        devices, num_classes=model.fc8.out_features, dropout=model.drop6.p, dropout_form=dropout_form_of(model.drop6)
    )
    with torch.no_grad():
        for name in LAYERS:
            whole = getattr(model, name)
            sizes = column_sizes(whole.weight.shape[0])
            for column, w, b in zip(towers.columns, whole.weight.split(sizes), whole.bias.split(sizes)):
                getattr(column, name).weight.copy_(w)
                getattr(column, name).bias.copy_(b)
    towers.train(model.training)
    return towers

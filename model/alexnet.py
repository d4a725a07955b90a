"""The paper's network (Krizhevsky et al. 2012, §3 and Figure 2) as one single-device module.

The two GPU columns are kept as groups: conv2, conv4 and conv5 have groups=2, so each column's
half of the kernels sees only its own column's half of the previous layer, and local response
normalisation runs within each column's channels, as it did on each GPU. conv3, fc6, fc7 and fc8
read both columns. towers.py splits this same module across two devices.

    input   3×224×224
    conv1   96×11×11 /4 pad 2 → 96×55×55, ReLU, LRN, max-pool 3/2 → 27×27
    conv2   256×5×5 pad 2, groups 2 → 256×27×27, ReLU, LRN, max-pool 3/2 → 13×13
    conv3   384×3×3 pad 1 → 384×13×13, ReLU
    conv4   384×3×3 pad 1, groups 2 → 384×13×13, ReLU
    conv5   256×3×3 pad 1, groups 2 → 256×13×13, ReLU, max-pool 3/2 → 6×6
    fc6     9216 → 4096, ReLU, dropout
    fc7     4096 → 4096, ReLU, dropout
    fc8     4096 → classes (logits; softmax is in the loss)

Dropout comes in two forms (`DROPOUT_FORMS`). "paper" is §4.2's: in training a dropped unit
outputs zero and a kept one passes unscaled; at test time every output is multiplied by 0.5.
"inverted" is torch's `nn.Dropout`: kept units are scaled by 2 in training, nothing at test time.
The two give the same function when the next layer's weights are halved, but not the same
training: under §5's init the inverted form doubles fc7's and fc8's effective initial weights and
quadruples their effective learning rate. `init="paper"` uses the paper's form; `init="kaiming"`
uses the inverted one (He init is derived for a layer whose input keeps its scale, which inverted
dropout preserves in training), and so does `init="caffe"` (Caffe's Dropout layer is the inverted
form); `dropout_form=` overrides any of them.
"""

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.model.paper import (
    BIAS_ONE_LAYERS,
    COLUMNS,
    DROPOUT,
    FC_WIDTH,
    INIT_STD,
    KERNELS,
    LRN_ALPHA,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    NUM_CLASSES,
    POOL_KERNEL,
    POOL_STRIDE,
)

POOL5_SIDE = 6  # spatial side after pool5 for a 224 input: 224 → 55 → 27 → 13 → 6
DROPOUT_FORMS = ("paper", "inverted")


class PaperDropout(nn.Module):
    """§4.2 dropout: in training each unit is zeroed with probability p and kept ones are not
    scaled; in eval mode the outputs are multiplied by 1 − p (0.5 for the paper's p)."""

    def __init__(self, p: float = DROPOUT) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p}: choose 0 <= p < 1")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        if not self.training:
            return x * (1.0 - self.p)
        return x * torch.empty_like(x).bernoulli_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def make_dropout(p: float, form: str) -> nn.Module:
    """The dropout module of `form` ("paper": `PaperDropout`; "inverted": torch's `nn.Dropout`)."""
    if form not in DROPOUT_FORMS:
        raise ValueError(f"unknown dropout form {form!r}; choose one of {', '.join(DROPOUT_FORMS)}")
    return PaperDropout(p) if form == "paper" else nn.Dropout(p)


def dropout_form_of(module: nn.Module) -> str:
    """Which form a dropout module is (the inverse of `make_dropout`)."""
    return "paper" if isinstance(module, PaperDropout) else "inverted"


def default_dropout_form(init: str) -> str:
    """The dropout that goes with an init scheme: the paper's with "paper", inverted with the others."""
    return "paper" if init == "paper" else "inverted"


class ResponseNorm(nn.Module):
    """§3.3 local response normalisation across channels, within each of `columns` channel groups.

    The paper's formula divides by (k + α Σ a_j²)^β over n neighbouring channels with α = 1e-4 on
    the plain sum. torch.nn.LocalResponseNorm computes (k + alpha/n · Σ a_j²)^β, i.e. it averages
    the squares, so it is given alpha = n·α (5e-4) to get the printed formula. (cuda-convnet's
    layer parser divides the configured scale by the window size too, so if Krizhevsky's layer
    files gave scale=0.0001 as in the paper, his code's effective α on the sum was 2e-5, five times
    smaller than printed; this module follows the paper.) Its window is channels i-2..i+2 clipped
    at the ends, as in the paper. With columns=2 each column's channels are normalised on their
    own, as each GPU did.
    """

    def __init__(self, columns: int = COLUMNS) -> None:
        super().__init__()
        self.columns = columns
        self.lrn = nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.columns == 1:
            return self.lrn(x)
        return torch.cat([self.lrn(part) for part in x.chunk(self.columns, dim=1)], dim=1)


def max_pool() -> nn.MaxPool2d:
    """§3.4 overlapping max pooling: 3×3 windows, stride 2."""
    return nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE)


class AlexNet(nn.Module):
    """The paper's network on one device: 60,965,224 parameters with 1000 classes.

    `dropout` is the drop probability on fc6's and fc7's outputs (0 turns it off, for tests);
    `dropout_form` is "paper" or "inverted" (default: the one that goes with `init`, see above).
    Inputs are [B, 3, 224, 224] of any float dtype (cast to the weights' dtype unless autocast is on)
    in either memory format; call `.to(memory_format=torch.channels_last)` for the NHWC kernels.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        dropout: float = DROPOUT,
        init: str = "paper",
        dropout_form: str | None = None,
    ) -> None:
        super().__init__()
        form = dropout_form or default_dropout_form(init)
        c1, c2, c3, c4, c5 = KERNELS
        # The layers are made without storage ("meta"), then given uninitialised memory on the
        # default device that init_weights fills, all of it: torch's default init would draw 61M
        # numbers only to have them overwritten (a third of a model build's time on the CPU).
        device = torch.get_default_device()
        with torch.device("meta"):
            self.conv1 = nn.Conv2d(3, c1, 11, stride=4, padding=2)
            self.norm1 = ResponseNorm()
            self.pool1 = max_pool()
            self.conv2 = nn.Conv2d(c1, c2, 5, padding=2, groups=COLUMNS)
            self.norm2 = ResponseNorm()
            self.pool2 = max_pool()
            self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
            self.conv4 = nn.Conv2d(c3, c4, 3, padding=1, groups=COLUMNS)
            self.conv5 = nn.Conv2d(c4, c5, 3, padding=1, groups=COLUMNS)
            self.pool5 = max_pool()
            self.fc6 = nn.Linear(c5 * POOL5_SIDE * POOL5_SIDE, FC_WIDTH)
            # §4.2 zeroes "the output of each hidden neuron" of fc6 and fc7, so dropout follows their
            # ReLUs (as in Caffe's reference net); torchvision instead drops fc6's and fc7's inputs.
            self.drop6 = make_dropout(dropout, form)
            self.fc7 = nn.Linear(FC_WIDTH, FC_WIDTH)
            self.drop7 = make_dropout(dropout, form)
            self.fc8 = nn.Linear(FC_WIDTH, num_classes)
        self.to_empty(device=device)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.conv1.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.conv1.weight.dtype)
        x = self.pool1(self.norm1(F.relu(self.conv1(x))))
        x = self.pool2(self.norm2(F.relu(self.conv2(x))))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = self.pool5(F.relu(self.conv5(x)))
        x = torch.flatten(x, 1)
        x = self.drop6(F.relu(self.fc6(x)))
        x = self.drop7(F.relu(self.fc7(x)))
        return self.fc8(x)


INIT_SCHEMES = ("paper", "caffe", "kaiming")

# Not the paper's: BVLC Caffe's replication of AlexNet (models/bvlc_alexnet/train_val.prototxt and
# its readme, which says biases of 1 "gave flat loss"). Its other weights are N(0, 0.01) as in §5.
# Only the fillers are Caffe's: its solver's doubled bias learning rate (lr_mult 2) is not copied.
CAFFE_BIAS = 0.1  # in place of §5's biases of 1, in the same five layers
CAFFE_FC_STD = 0.005  # fc6's and fc7's weights ~ N(0, 0.005²)


def init_weights(model: nn.Module, scheme: str = "paper") -> None:
    """Initialise every conv and linear layer; layers are matched by name, so towers' columns too.

    "paper" (§5): every weight ~ N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0.
    What it needs to start learning is measured in docs/recipe.md.
    "caffe": BVLC Caffe's replication, not the paper's: the same but with biases of 0.1 and fc6's
    and fc7's weights ~ N(0, 0.005) (docs/recipe.md compares it with "paper").
    "kaiming": He-normal weights and zero biases, not the paper's; it learns from the first steps,
    which short runs (the demo, CPU smoke tests) need.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        layer = name.rsplit(".", 1)[-1]
        if scheme == "kaiming":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
            continue
        caffe = scheme == "caffe"
        std = CAFFE_FC_STD if caffe and layer in ("fc6", "fc7") else INIT_STD
        bias = (CAFFE_BIAS if caffe else 1.0) if layer in BIAS_ONE_LAYERS else 0.0
        nn.init.normal_(module.weight, mean=0.0, std=std)
        nn.init.constant_(module.bias, bias)

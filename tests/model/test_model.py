"""The network: parameter count, per-layer shapes, §5 init, §3.3 LRN, §4.2 dropout, dtypes, towers ≡ one device, metrics."""

import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from alexnet.model.alexnet import AlexNet, PaperDropout, ResponseNorm
from alexnet.model.metrics import ten_crop_probs, topk_errors
from alexnet.model.paper import PARAMETER_COUNT
from alexnet.model.summary import format_table, layer_rows
from alexnet.model.towers import towers_from_alexnet
from alexnet.tools.summary import summary

MACS_PER_IMAGE = 724_406_816  # conv and fc multiply-accumulates for one 224×224 image


@pytest.fixture(scope="module")
def model() -> AlexNet:
    torch.manual_seed(0)
    return AlexNet().eval()


def test_parameter_count(model: AlexNet) -> None:
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNT == 60_965_224


def test_per_layer_shapes_params_and_macs() -> None:
    rows = {r.name: r for r in layer_rows(batch_size=2)}
    shapes = {n: r.output_shape for n, r in rows.items()}
    assert shapes == {
        "conv1": (2, 96, 55, 55), "norm1": (2, 96, 55, 55), "pool1": (2, 96, 27, 27),
        "conv2": (2, 256, 27, 27), "norm2": (2, 256, 27, 27), "pool2": (2, 256, 13, 13),
        "conv3": (2, 384, 13, 13), "conv4": (2, 384, 13, 13), "conv5": (2, 256, 13, 13), "pool5": (2, 256, 6, 6),
        "fc6": (2, 4096), "fc7": (2, 4096), "fc8": (2, 1000),
    }  # fmt: skip
    assert rows["conv2"].params == 256 * 48 * 5 * 5 + 256  # grouped: each kernel sees its column's 48 maps
    assert sum(r.params for r in rows.values()) == PARAMETER_COUNT
    assert sum(r.macs for r in rows.values()) == 2 * MACS_PER_IMAGE
    assert rows["conv3"].columns.endswith("both columns") and rows["conv4"].columns.endswith("own column")


def test_forward_shape_any_float_dtype_and_channels_last(model: AlexNet) -> None:
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (2, 1000) and ref.dtype == torch.float32
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            assert model(x.to(dtype)).dtype == torch.float32
        torch.testing.assert_close(model(x.double()), ref)
        nhwc = AlexNet().to(memory_format=torch.channels_last).eval()
        nhwc.load_state_dict(model.state_dict())
        assert nhwc.conv2.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(nhwc(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("init", "bias", "fc_std"),
    [("paper", 1.0, 0.01), ("caffe", 0.1, 0.005)],  # §5; BVLC Caffe's bvlc_alexnet/train_val.prototxt
)
def test_init_statistics(init: str, bias: float, fc_std: float) -> None:
    """Weights N(0, 0.01) (fc6 and fc7: N(0, fc_std)); `bias` in conv2, conv4, conv5, fc6, fc7, 0 in conv1, conv3, fc8."""
    torch.manual_seed(0)
    model = AlexNet(init=init)
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        std = fc_std if name in ("fc6", "fc7") else 0.01
        w = m.weight.detach().double()
        tolerance = 5 / math.sqrt(w.numel())  # five standard errors of the sample std (relative)
        assert abs(w.std().item() / std - 1) < tolerance, name
        assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel()), name
        expected = bias if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.equal(m.bias.detach(), torch.full_like(m.bias, expected)), name


def paper_lrn(a: torch.Tensor, n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75) -> torch.Tensor:
    """§3.3 literally: b_i = a_i / (k + α Σ_{j=max(0, i−n/2)}^{min(N−1, i+n/2)} a_j²)^β."""
    N = a.shape[1]
    out = torch.empty_like(a)
    for i in range(N):
        window = a[:, max(0, i - n // 2) : min(N - 1, i + n // 2) + 1]
        out[:, i] = a[:, i] / (k + alpha * (window**2).sum(dim=1)) ** beta
    return out


def test_lrn_matches_the_papers_formula() -> None:
    torch.manual_seed(1)
    a = torch.randn(2, 9, 4, 4, dtype=torch.float64) * 40  # large enough that α Σ a² matters (≈ 0.8)
    torch.testing.assert_close(ResponseNorm(columns=1)(a), paper_lrn(a), rtol=1e-12, atol=1e-12)
    b = torch.randn(2, 12, 3, 3, dtype=torch.float64) * 40
    per_column = torch.cat([paper_lrn(b[:, :6]), paper_lrn(b[:, 6:])], dim=1)
    torch.testing.assert_close(ResponseNorm(columns=2)(b), per_column, rtol=1e-12, atol=1e-12)


def test_paper_dropout_in_training_zeroes_or_keeps_unscaled() -> None:
    """§4.2 in training: each output is 0 or the input itself, zero with probability 0.5, so E = 0.5·x."""
    torch.manual_seed(3)
    x = torch.rand(4000, 64) + 0.5
    drop = PaperDropout(0.5).train()
    y = drop(x)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # kept units are not scaled
    n = kept.numel()
    assert abs(kept.double().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(n)
    mean_ratio = (torch.stack([drop(x) for _ in range(20)]).mean(0) / x).mean().item()
    assert abs(mean_ratio - 0.5) < 4 * 0.5 / math.sqrt(20 * n)


def test_paper_dropout_at_test_time_halves_and_p0_is_identity() -> None:
    x = torch.randn(3, 7)
    torch.testing.assert_close(PaperDropout(0.5).eval()(x), 0.5 * x, rtol=0, atol=0)
    assert torch.equal(PaperDropout(0.0).train()(x), x) and torch.equal(PaperDropout(0.0).eval()(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        PaperDropout(1.0)


def test_dropout_form_follows_the_init() -> None:
    assert isinstance(AlexNet(num_classes=4, init="paper").drop6, PaperDropout)
    assert type(AlexNet(num_classes=4, init="kaiming").drop7) is nn.Dropout
    assert type(AlexNet(num_classes=4, init="caffe").drop6) is nn.Dropout  # Caffe's Dropout layer scales by 2
    assert type(AlexNet(num_classes=4, init="paper", dropout_form="inverted").drop6) is nn.Dropout
    towers = towers_from_alexnet(AlexNet(num_classes=4), ("cpu", "cpu"))
    assert all(isinstance(c.drop6, PaperDropout) and isinstance(c.drop7, PaperDropout) for c in towers.columns)
    assert isinstance(towers.to_alexnet().drop7, PaperDropout)


def test_paper_dropout_equals_inverted_dropout_with_halved_weights() -> None:
    """The paper's form with weights W is the inverted form with fc7's and fc8's weights ×0.5, at test time
    and for any one mask in training (inverted: W/2 · 2·(m⊙h) = W · (m⊙h))."""
    torch.manual_seed(4)
    paper = AlexNet(num_classes=10, init="paper")
    inverted = AlexNet(num_classes=10, init="paper", dropout_form="inverted")
    inverted.load_state_dict(paper.state_dict())
    with torch.no_grad():
        inverted.fc7.weight.mul_(0.5)
        inverted.fc8.weight.mul_(0.5)
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        torch.testing.assert_close(inverted.eval()(x), paper.eval()(x), rtol=1e-5, atol=1e-5)
        h = torch.relu(torch.randn(2, 4096))
        mask = torch.rand(2, 4096) < 0.5
        paper_out = paper.fc7(h * mask)  # what PaperDropout passes on for this mask
        inverted_out = inverted.fc7(h * mask * 2.0)  # what nn.Dropout(0.5) passes on for the same mask
        torch.testing.assert_close(inverted_out - inverted.fc7.bias, paper_out - paper.fc7.bias)


def test_towers_match_single_device() -> None:
    """Both 'devices' on the CPU: the same logits and the same gradients, split by column."""
    torch.manual_seed(2)
    single = AlexNet(num_classes=11, dropout=0.0)  # odd class count: fc8 splits 6 | 5
    towers = towers_from_alexnet(single, ("cpu", "cpu"))
    x = torch.randn(2, 3, 224, 224) * 50  # paper-scale inputs, so every layer's signal is far from zero
    y = torch.tensor([3, 9])
    out_single, out_towers = single(x), towers(x)
    torch.testing.assert_close(out_towers, out_single, rtol=1e-5, atol=1e-5)
    nn.functional.cross_entropy(out_single, y).backward()
    nn.functional.cross_entropy(out_towers, y).backward()
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        grad = getattr(single, name).weight.grad
        split = torch.cat([getattr(c, name).weight.grad for c in towers.columns])
        torch.testing.assert_close(split, grad, rtol=1e-4, atol=1e-6, msg=name)
    back = towers.to_alexnet()
    for (n, p), q in zip(single.state_dict().items(), back.state_dict().values()):
        assert torch.equal(p, q), n


def test_topk_errors_on_hand_made_logits() -> None:
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0]] * 4)
    labels = torch.tensor([0, 4, 5, 1])  # right; top-5 only; wrong; top-5 only
    assert topk_errors(logits, labels) == [3, 1]
    assert topk_errors(logits[:, :3], torch.tensor([0, 2, 1, 1]), ks=(1, 5)) == [3, 0]  # k capped at 3 classes


def test_ten_crop_softmax_average() -> None:
    logits = torch.zeros(1, 10, 2)
    logits[0, :5, 0] = math.log(3.0)  # five crops say [0.75, 0.25], five say [0.5, 0.5]
    torch.testing.assert_close(ten_crop_probs(logits), torch.tensor([[0.625, 0.375]]))
    # probabilities are averaged, not logits: one huge logit cannot outvote nine crops
    votes = torch.zeros(1, 10, 2)
    votes[0, 0] = torch.tensor([0.0, 100.0])
    votes[0, 1:] = torch.tensor([1.0, 0.0])
    assert topk_errors(ten_crop_probs(votes), torch.tensor([0]), ks=(1,)) == [0]
    assert topk_errors(votes.mean(dim=1), torch.tensor([0]), ks=(1,)) == [1]
    with pytest.raises(ValueError):
        ten_crop_probs(torch.zeros(3, 2))


def test_summary_command_prints_the_table() -> None:
    result = CliRunner().invoke(summary, ["--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "60,965,224" in result.output and f"{4 * MACS_PER_IMAGE:,}" in result.output
    assert "4×96×55×55" in result.output
    assert result.output.strip() == format_table(layer_rows(4), 4)

"""Runs that go wrong stop and say so (issue 19): a non-finite loss stops the run without saving it,
a checkpoint never replaces a finite one with non-finite weights, and a run sitting at the class
prior is warned about once. The loop runs a tiny network on deterministic batches (test_train_loop's)."""

import math
from pathlib import Path

import pytest
import torch
from test_train_loop import SyntheticBatches, Tiny, config, records, val_batches

from alexnet.model.checkpoint import non_finite
from alexnet.model.train import Diverged, train


def last(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False)


def finite(state_dict: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values() if t.is_floating_point())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_names_each_tensor_with_a_nan_or_an_inf_anywhere(bad: float) -> None:
    tensors = {"w": torch.randn(64, 9), "b": torch.zeros(0), "steps": torch.tensor([7]), "h": torch.randn(3).half()}
    assert non_finite(tensors) == []
    for name, index in (("w", (63, 8)), ("w", (0, 0)), ("h", (1,))):
        broken = {k: v.clone() for k, v in tensors.items()}
        broken[name][index] = bad
        assert non_finite(broken) == [name]


def test_a_huge_lr_stops_at_the_first_non_finite_loss_and_keeps_the_finite_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # Step 1 is finite; its update (lr 1e30) overflows the logits, so step 2's loss is inf or nan.
    cfg = config(lr=1e30, log_every=1, save_every=1, epochs=2)
    with pytest.raises(Diverged) as stopped:
        train(Tiny(), SyntheticBatches(n_batches=5), val_batches(), cfg, tmp_path)
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith("step 2: the training loss over steps 2-2 is not finite")
    assert f"{tmp_path / 'last.pt'} holds step 1, the last finite state" in message
    ckpt = last(tmp_path)
    assert ckpt["state"]["step"] == 1 and finite(ckpt["model"])
    assert not (tmp_path / "best.pt").exists()  # no epoch ended
    steps = [r["step"] for r in records(tmp_path) if r["kind"] == "train"]
    assert steps == [1, 2]  # nothing trained past the stop
    assert not math.isfinite(records(tmp_path)[-1]["loss"])


def test_a_non_finite_loss_between_log_steps_is_caught_at_the_save(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = config(lr=1e30, log_every=10, save_every=3, epochs=1)
    with pytest.raises(Diverged, match=r"^step 3: the training loss is not finite.*no checkpoint was written"):
        train(Tiny(), SyntheticBatches(n_batches=5), val_batches(), cfg, tmp_path)
    assert not (tmp_path / "last.pt").exists()


class Poisoning(SyntheticBatches):
    """Batches that, once `at` of them were handed out, put a nan into a weight the loss never sees."""

    def __init__(self, model: "WithSpare", at: int) -> None:
        super().__init__(n_batches=4)
        self.model, self.at = model, at

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if i == self.at:
                with torch.no_grad():
                    self.model.spare.fill_(math.nan)
            yield batch


class WithSpare(Tiny):
    def __init__(self) -> None:
        super().__init__()
        self.spare = torch.nn.Parameter(torch.zeros(3))  # no gradient, so SGD leaves it alone


def test_a_checkpoint_never_replaces_a_finite_one_with_non_finite_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = WithSpare()
    cfg = config(log_every=1, save_every=1, epochs=1)
    with pytest.raises(Diverged, match=r"1 weight tensor\(s\) \(spare\) about to be saved to last.pt") as stopped:
        train(model, Poisoning(model, at=2), val_batches(), cfg, tmp_path)
    assert "holds step 2, the last finite state" in str(stopped.value)
    ckpt = last(tmp_path)
    assert ckpt["state"]["step"] == 2 and finite(ckpt["model"])


class AtPrior(Tiny):
    """Outputs the same logits for every image: its loss is ln(classes) up to the tiny lr's drift."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.zero_()


def test_a_run_sitting_at_the_class_prior_is_warned_about_once(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    # 4 images a step: the warning is due after 12 images, at step 3, and never again.
    cfg = config(lr=1e-6, log_every=1, epochs=3, prior_images=12)
    train(AtPrior(), SyntheticBatches(n_batches=3), val_batches(), cfg, tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1
    assert lines[0].startswith(f"warning: step 3: the training loss has stayed within 0.1 of ln(5) = {math.log(5):.3f}")
    assert "docs/recipe.md" in lines[0] and "--init caffe" in lines[0]


def test_a_run_that_leaves_the_prior_is_not_warned_about(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    # The same network a long way from the prior (a large fc bias on one class): its loss is far from ln 5.
    model = AtPrior()
    with torch.no_grad():
        model.fc.bias[0] = 10.0
    cfg = config(lr=1e-6, log_every=1, epochs=3, prior_images=12)
    train(model, SyntheticBatches(n_batches=3), val_batches(), cfg, tmp_path)
    assert "warning:" not in capsys.readouterr().err

"""On CUDA: bf16 autocast with channels_last training, torch.compile, the towers across two GPUs (and the
fused SGD step over both), no host sync between log steps, and data-wait on the GPU clock."""

import json
import time
from pathlib import Path

import pytest
import torch

from alexnet.model.alexnet import AlexNet
from alexnet.model.towers import towers_from_alexnet
from alexnet.model.train import TrainConfig, make_optimizer, train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def cuda_batches(n: int, batch_size: int = 4, crops: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    shape = (batch_size, crops, 3, 224, 224) if crops else (batch_size, 3, 224, 224)
    return [
        (torch.randn(shape, generator=g).cuda(), torch.randint(0, 10, (batch_size,), generator=g).cuda())
        for _ in range(n)
    ]


@pytest.mark.parametrize("compile_", [False, True])
def test_bf16_channels_last_training_with_ten_crop_validation(tmp_path: Path, compile_: bool) -> None:
    model = AlexNet(num_classes=10).cuda()
    cfg = TrainConfig(epochs=1, log_every=1, ten_crop=True, compile=compile_, progress=False)
    state = train(model, cuda_batches(3), cuda_batches(1, 2, crops=10), cfg, tmp_path)
    assert state.step == 3 and model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["data_wait"] <= 1 and r["loss"] == r["loss"] for r in lines if r["kind"] == "train")
    assert lines[-1]["val_images"] == 2 and (tmp_path / "best.pt").exists()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_towers_on_two_gpus_match_one_device() -> None:
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    single = AlexNet(num_classes=10).cuda(0).eval()
    towers = towers_from_alexnet(single, ("cuda:0", "cuda:1")).eval()
    assert towers.columns[1].conv1.weight.device == torch.device("cuda:1")
    x = torch.randn(4, 3, 224, 224, device="cuda:0") * 50
    with torch.no_grad():
        torch.testing.assert_close(towers(x), single(x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_fused_sgd_steps_the_towers_on_two_gpus_as_one_device() -> None:
    """make_optimizer's fused SGD with one parameter group spread over two GPUs: torch's `_fused_sgd`
    (torch/optim/sgd.py:512-516) groups each group's tensors by device and steps each device's own; after
    one step the towers hold the single device's weights."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    single = AlexNet(num_classes=10, dropout=0.0).cuda(0)
    towers = towers_from_alexnet(single, ("cuda:0", "cuda:1"))
    x, y = torch.randn(4, 3, 224, 224, device="cuda:0") * 50, torch.arange(4, device="cuda:0")
    for model in (single, towers):
        optimizer = make_optimizer(model, TrainConfig())
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    torch.testing.assert_close(towers.to_alexnet().state_dict(), single.state_dict(), rtol=1e-4, atol=1e-5)


class SyncForbidden:
    """Resident CUDA batches that turn on torch's sync debug mode ("error") from the first batch handed
    over until the trainer asks for the one after the last: every step in between must queue work
    without waiting for the device."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.batches
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_no_host_sync_between_log_steps(tmp_path: Path) -> None:
    n = 8
    model = AlexNet(num_classes=10).cuda()
    cfg = TrainConfig(epochs=1, log_every=n + 1, progress=False, plot=False, schedule="step")
    state = train(model, SyncForbidden(cuda_batches(n)), None, cfg, tmp_path)
    assert state.step == n


class SlowCuda:
    """Resident CUDA batches handed over after `delay` seconds of host time each."""

    delay = 0.05

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            time.sleep(self.delay)
            yield batch


def test_data_wait_on_the_gpu_clock(tmp_path: Path) -> None:
    """A loader 50 ms late per batch leaves the GPU idle ~50 ms a step (a step at batch 4 is far shorter);
    resident batches handed over at once leave it idle ~0."""
    batches = cuda_batches(12)
    cfg = TrainConfig(epochs=1, log_every=6, progress=False, plot=False, schedule="step")
    train(AlexNet(num_classes=10).cuda(), SlowCuda(batches), None, cfg, tmp_path / "slow")
    train(AlexNet(num_classes=10).cuda(), batches, None, cfg, tmp_path / "resident")
    slow, resident = (
        [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("slow", "resident")
    )
    for r in [r for r in slow if r["kind"] == "train"][1:]:
        assert r["data_wait"] * 4 / r["images_per_s"] == pytest.approx(SlowCuda.delay, rel=0.3), r
    assert all(r["data_wait"] < 0.1 for r in resident if r["kind"] == "train")

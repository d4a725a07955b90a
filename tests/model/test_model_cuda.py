"""On CUDA: bf16 autocast with channels_last training, torch.compile, and the towers across two GPUs."""

import json
from pathlib import Path

import pytest
import torch

from alexnet.model.alexnet import AlexNet
from alexnet.model.towers import towers_from_alexnet
from alexnet.model.train import TrainConfig, train

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

"""DALI on a GPU (issue 18 §6): the ten-crop graph and float16 output against the CPU reference, and the
trainer fed by the real DALI GPU loader with no host-device synchronisation between log steps.

The ten crops on the GPU are decode once + `fn.stack` of ten cropping `crop_mirror_normalize`s;
`pipeline/augment.py` is the reference. nvJPEG may differ from Pillow by a few levels (the module
docstring of test_loaders.py: at most 4 anywhere, 0.5 on average). These tests skip without CUDA.
"""

import json
from pathlib import Path

import pytest
import torch
from shard_data import BATCH, PCA, VAL_LABEL0, assert_levels_close, decode_stored, labels_of, write_prepared

from alexnet.model.alexnet import AlexNet
from alexnet.model.train import TrainConfig, train
from alexnet.pipeline import augment
from alexnet.pipeline.loaders import make_loader

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
GPU_LEVELS = (4.0, 0.5)  # (max, mean) levels against Pillow, as in test_loaders.py
VAL_IMAGES = 21


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def decoded(data) -> dict[int, torch.Tensor]:
    return decode_stored(data)


def epoch(data: Path, split: str, **kw) -> list[tuple]:
    """One epoch of a fresh DALI loader on the GPU."""
    ld = make_loader("dali", data, split, kw.pop("batch_size", BATCH), device="cuda", workers=2, **kw)
    try:
        return list(ld)
    finally:
        ld.close()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("normalize", ["mean", "std"])
def test_ten_crops_on_the_gpu_equal_the_reference(data, decoded, normalize, channels_last):
    batches = epoch(data, "val", ten_crop=True, normalize=normalize, channels_last=channels_last)
    assert labels_of(batches) == list(range(VAL_LABEL0, VAL_LABEL0 + VAL_IMAGES))
    for crops, labels in batches:
        assert crops.device.type == "cuda" and crops.shape[1:] == (10, 3, 224, 224) and crops.dtype == torch.float32
        if channels_last:  # channels innermost: the strides of [B, 10, 224, 224, 3]
            assert crops.stride()[-3] == 1
        for ten, label in zip(crops.cpu(), labels.tolist()):
            expected = augment.ten_crop_sample(decoded[label], PCA, normalize)
            assert_levels_close(ten, expected, f"ten crops of {label} on the GPU", GPU_LEVELS, normalize)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_float16_on_the_gpu_is_the_float32_batch_rounded(data, decoded, ten_crop):
    kw = {"ten_crop": ten_crop, "batch_size": VAL_IMAGES}
    ((full, labels),) = epoch(data, "val", **kw)
    ((half, same),) = epoch(data, "val", dtype=torch.float16, **kw)
    assert half.dtype == torch.float16 and half.device.type == "cuda" and torch.equal(labels, same)
    torch.testing.assert_close(half.float(), full, atol=1e-2, rtol=1e-3)
    reference = augment.ten_crop_sample if ten_crop else augment.val_sample
    for image, label in zip(half.float().cpu(), labels.tolist()):
        assert_levels_close(image, reference(decoded[label], PCA), f"float16 sample {label}", GPU_LEVELS)


class SyncForbidden:
    """A loader whose epoch runs under torch's sync debug mode "error": from the trainer's first `next()`
    until it asks for the batch after the last, every step (and the loader's hand-over) must only queue
    work. A log step (here only after the epoch) is where the trainer may read the device."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.loader
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_the_trainer_on_the_dali_gpu_loader_never_waits_for_the_device_between_log_steps(data, tmp_path):
    loader = make_loader("dali", data, "train", BATCH, device="cuda", workers=2, channels_last=True, epochs=1)
    steps = len(loader)
    cfg = TrainConfig(epochs=1, log_every=steps + 1, progress=False, plot=False, schedule="step")
    try:
        state = train(AlexNet(num_classes=48).cuda(), SyncForbidden(loader), None, cfg, tmp_path)
    finally:
        loader.close()
    assert state.step == steps
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["cudnn_benchmark"] is True and torch.backends.cudnn.benchmark
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in records if r["kind"] == "train")  # finite, read after the epoch


def test_batches_handed_over_on_a_side_stream_are_ordered_on_it(data, decoded):
    """`outputs(cuda_stream=...)` binds a batch to torch's current stream; on a side stream the values
    read there are the finished ones."""
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        batches = epoch(data, "val")
        images = [(i.clone(), labels) for i, labels in batches]  # read on the side stream
    side.synchronize()
    for crops, labels in images:
        for image, label in zip(crops.cpu(), labels.tolist()):
            assert_levels_close(image, augment.val_sample(decoded[label], PCA), f"centre crop {label}", GPU_LEVELS)

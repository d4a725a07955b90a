"""Every loader held to the batch contract and to the reference augmentation, on tiny synthetic shards.

Every sample has its own label (train 0..47, val 100..120), so a label names its image.

Decoder tolerance, in pixel levels (0–255) before normalisation: DALI's CPU decoder and Pillow are
both libjpeg-turbo and agree bit for bit in this build (measured max difference 0, with or without
region-of-interest decoding), so on the CPU only float rounding is allowed: at most 1 level
anywhere and 0.05 on average. nvJPEG on a GPU (fancy upsampling on) may differ by a few levels:
at most 4 anywhere and 0.5 on average. `ffcv-raw` holds Pillow's pixels (float rounding only);
from JPEG betons FFCV decodes with libjpeg-turbo's fast integer IDCT (fixed in libffcv) where Pillow
uses the accurate one: about one level on average and a handful at most on these noisy q90 images
(measured 1.0 and 6), so 8 anywhere and 1.5 on average.

Normalisation: the reference-equality tests run in both modes ("mean", the default, and "std");
the rest in the default. channels_last: every loader's batches in that format hold the same values.
"""

import importlib.util
import pickle

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from shard_data import BATCH, EIGVEC, PCA, VAL_LABEL0, assert_levels_close, decode_stored, labels_of, write_prepared

from alexnet.pipeline import augment
from alexnet.pipeline.loaders import make_loader
from alexnet.pipeline.paper import MAX_CROP_OFFSET, PCA_ALPHA_STD

HAVE_FFCV = importlib.util.find_spec("ffcv") is not None
KINDS = ["dali", "torch"] + (["ffcv", "ffcv-raw"] if HAVE_FFCV else [])
NORMALIZE = ["mean", "std"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tolerance(kind: str, device: str = "cpu") -> tuple[float, float]:
    """(max, mean) levels allowed against Pillow's pixels; see the module docstring."""
    if kind == "ffcv":
        return (8.0, 1.5)
    return (4.0, 0.5) if device == "cuda" else (1.0, 0.05)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = write_prepared(tmp_path_factory.mktemp("shards"))
    if HAVE_FFCV:
        from alexnet.pipeline.offline.ffcv_export import export

        for mode in ("jpg", "raw"):
            export(out, mode, workers=2, announce=lambda line: None)
    return out


@pytest.fixture(scope="module")
def decoded(data) -> dict[int, torch.Tensor]:
    return decode_stored(data)


def loader(kind, data, split="train", **kw):
    kw.setdefault("workers", 2)
    return make_loader(kind, data, split, kw.pop("batch_size", BATCH), **kw)


def run(kind, data, split="train", **kw) -> list[tuple]:
    """One epoch of a fresh loader, as a list of its batches."""
    ld = loader(kind, data, split, **kw)
    try:
        return list(ld)
    finally:
        ld.close()


@pytest.mark.parametrize("kind", KINDS)
def test_batch_contract(kind, data):
    train = loader(kind, data)
    assert len(train) == 48 // BATCH
    batches = list(train)
    train.close()
    assert len(batches) == len(train)
    for images, labels in batches:
        assert images.shape == (BATCH, 3, 224, 224) and images.dtype == torch.float32 and images.device.type == "cpu"
        assert labels.shape == (BATCH,) and labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() < 48
    val = run(kind, data, "val")
    assert [len(b[1]) for b in val] == [8, 8, 5]
    assert all(b[0].shape[1:] == (3, 224, 224) for b in val)
    tens = run(kind, data, "val", ten_crop=True, batch_size=16)
    assert [tuple(b[0].shape) for b in tens] == [(16, 10, 3, 224, 224), (5, 10, 3, 224, 224)]
    assert labels_of(tens) == list(range(VAL_LABEL0, VAL_LABEL0 + 21))


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("kind", KINDS)
def test_validation_equals_reference(kind, normalize, data, decoded):
    for images, labels in run(kind, data, "val", normalize=normalize):
        for image, label in zip(images, labels.tolist()):
            expected = augment.val_sample(decoded[label], PCA, normalize)
            assert_levels_close(image, expected, f"centre crop of {label}", tolerance(kind), normalize)
    images, labels = run(kind, data, "val", ten_crop=True, batch_size=4, normalize=normalize)[0]
    for crops, label in zip(images, labels.tolist()):
        expected = augment.ten_crop_sample(decoded[label], PCA, normalize)
        assert_levels_close(crops, expected, f"ten crops of {label}", tolerance(kind), normalize)


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("kind", KINDS)
def test_training_sample_equals_reference_for_its_draws(kind, normalize, data, decoded):
    """The loader reports each sample's draws; the reference recomputes the sample from them."""
    for images, labels, draws in run(kind, data, with_draws=True, normalize=normalize):
        for i, label in enumerate(labels.tolist()):
            d = {k: v[i] for k, v in draws.items()}
            expected = augment.train_sample(
                decoded[label], int(d["dx"]), int(d["dy"]), bool(d["flip"]), d["alpha"], PCA, normalize
            )
            assert_levels_close(images[i], expected, f"training sample {label}", tolerance(kind), normalize)


@pytest.mark.parametrize("kind", KINDS)
def test_channels_last_is_the_same_batch_in_nhwc(kind, data):
    """channels_last=True: [B, 3, 224, 224] with NHWC strides (no copy made after the loader's own pass),
    the very values of the default layout; ten crops keep the channels innermost too."""
    nchw = run(kind, data, seed=6)
    nhwc = run(kind, data, seed=6, channels_last=True)
    assert len(nhwc) == len(nchw)
    for (a, la), (b, lb) in zip(nchw, nhwc):
        assert a.is_contiguous() and b.shape == a.shape
        assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
        assert torch.equal(la, lb) and torch.equal(a, b)
    ((tens, _), *_) = run(kind, data, "val", ten_crop=True, batch_size=4, channels_last=True)
    assert tens.shape == (4, 10, 3, 224, 224) and tens.stride()[2] == 1
    ((contiguous, _), *_) = run(kind, data, "val", ten_crop=True, batch_size=4)
    assert torch.equal(tens, contiguous)


@pytest.mark.parametrize("kind", KINDS)
def test_free_draws_have_the_spec_distribution(kind, data):
    """Ten epochs (480 samples): offsets uniform over 0..32, flips fair, lighting shift with the PCA covariance."""
    ld = loader(kind, data, with_draws=True, seed=7)
    draws = []
    for epoch in range(10):
        ld.set_epoch(epoch)
        draws += [d for _, _, d in ld]
    ld.close()
    offsets = torch.cat([torch.cat([d["dx"], d["dy"]]) for d in draws]).numpy()
    flips = torch.cat([d["flip"] for d in draws]).double().numpy()
    alpha = torch.cat([d["alpha"] for d in draws])
    n = len(flips)
    assert n == 480 and offsets.min() >= 0 and offsets.max() <= MAX_CROP_OFFSET
    assert chisquare(np.bincount(offsets, minlength=MAX_CROP_OFFSET + 1)).pvalue > 1e-3
    assert abs(flips.mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
    shift = augment.lighting_shift(alpha, PCA).double().numpy()
    expected = EIGVEC @ np.diag((PCA_ALPHA_STD * np.array(PCA.eigval)) ** 2) @ EIGVEC.T
    assert np.all(np.abs(shift.mean(axis=0)) < 4 * np.sqrt(np.diag(expected) / n))
    assert np.linalg.norm(np.cov(shift.T) - expected) < 0.25 * np.linalg.norm(expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split, last_batch", [("train", "partial"), ("train", "drop"), ("val", "partial")])
def test_two_ranks_split_the_data(kind, data, split, last_batch):
    per_rank = [labels_of(run(kind, data, split, rank=r, world_size=2, last_batch=last_batch, seed=3)) for r in (0, 1)]
    everything = set(range(48)) if split == "train" else set(range(VAL_LABEL0, VAL_LABEL0 + 21))
    assert not set(per_rank[0]) & set(per_rank[1])
    assert all(len(set(p)) == len(p) for p in per_rank)
    if last_batch == "partial":
        assert set(per_rank[0]) | set(per_rank[1]) == everything
    else:
        assert len(per_rank[0]) == len(per_rank[1]) == (48 // 2) // BATCH * BATCH


@pytest.mark.parametrize("kind", KINDS)
def test_seed_and_epoch_decide_the_batches(kind, data):
    first = run(kind, data, seed=5, epoch=1)
    again = run(kind, data, seed=5, epoch=1)
    other_epoch = run(kind, data, seed=5, epoch=2)
    for (a, la), (b, lb) in zip(first, again):
        assert torch.equal(la, lb) and torch.equal(a, b)
    assert labels_of(first) != labels_of(other_epoch)
    assert sorted(labels_of(first)) == sorted(labels_of(other_epoch)) == list(range(48))


@pytest.mark.parametrize("kind", KINDS)
def test_epochs_in_a_row_equal_fresh_loaders(kind, data):
    """One loader through epochs 0, 1 and then 3 (DALI starts each next epoch's pipeline early and
    must drop it when another epoch is asked for) gives each epoch's batches exactly."""
    ld = loader(kind, data, seed=9)
    for epoch in (0, 1, 3):
        ld.set_epoch(epoch)
        for (a, la), (b, lb) in zip(list(ld), run(kind, data, seed=9, epoch=epoch), strict=True):
            assert torch.equal(la, lb) and torch.equal(a, b), f"epoch {epoch}"
    ld.close()


@pytest.mark.parametrize("kind", KINDS)
def test_resume_mid_epoch_continues_exactly(kind, data):
    uninterrupted = run(kind, data, seed=11, epoch=3)
    ld = loader(kind, data, seed=11)
    ld.set_epoch(3)
    head = []
    for batch in ld:
        head.append(batch)
        if len(head) == 2:
            break
    state = pickle.loads(pickle.dumps(ld.state_dict()))
    ld.close()
    assert state["epoch"] == 3 and state["batch"] == 2
    resumed = loader(kind, data, seed=11)
    resumed.load_state_dict(state)
    tail = list(resumed)
    resumed.close()
    assert len(head) + len(tail) == len(uninterrupted)
    for (a, la), (b, lb) in zip(head + tail, uninterrupted):
        assert torch.equal(la, lb) and torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_finished_epoch_state_resumes_to_nothing(kind, data):
    ld = loader(kind, data, seed=1)
    list(ld)
    state = ld.state_dict()
    ld.close()
    resumed = loader(kind, data, seed=1)
    resumed.load_state_dict(state)
    assert list(resumed) == []
    resumed.set_epoch(state["epoch"] + 1)
    assert len(list(resumed)) == len(resumed)
    resumed.close()


def test_state_of_another_loader_is_refused(data):
    ld = loader("torch", data, seed=1)
    other = loader("dali", data, seed=2)
    with pytest.raises(ValueError):
        other.load_state_dict(ld.state_dict())
    other.close()
    other_mode = loader("torch", data, seed=1, normalize="std")
    with pytest.raises(ValueError, match="'normalize': 'mean'"):
        other_mode.load_state_dict(ld.state_dict())
    ld.close()
    other_mode.close()
    assert loader("torch", data, seed=1, channels_last=True).state_dict() == loader("torch", data, seed=1).state_dict()


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="unknown loader"):
        make_loader("ffcv-not-yet", data, "train", 8)
    with pytest.raises(ValueError, match="ten_crop"):
        make_loader("dali", data, "train", 8, ten_crop=True)
    with pytest.raises(ValueError, match="rank"):
        make_loader("torch", data, "train", 8, rank=2, world_size=2)
    with pytest.raises(FileNotFoundError, match="prepare"):
        make_loader("dali", data, "test", 8)
    with pytest.raises(ValueError, match="normalize 'unit'"):
        make_loader("torch", data, "train", 8, normalize="unit")


@pytest.mark.parametrize("epochs, started", [(None, True), (3, True), (2, False)])
def test_dali_starts_no_pipeline_past_the_last_epoch(data, epochs, started):
    """While epoch 1's last batches go out, the next epoch's pipeline starts only if the run has one."""
    ld = loader("dali", data, epochs=epochs, epoch=1)
    try:
        assert len(list(ld)) == len(ld)
        assert (ld._ahead is not None) == started
        if started:
            assert ld._ahead[0] == 2
    finally:
        ld.close()


def test_dali_labels_of_any_length():
    from alexnet.pipeline.loaders.dali_loader import LABEL_PAD, decode_labels

    padded = np.full((4, 3), LABEL_PAD, np.uint8)
    for row, text in enumerate([b"0", b"7", b"42", b"999"]):
        padded[row, : len(text)] = list(text)
    assert decode_labels(padded).tolist() == [0, 7, 42, 999]


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_batches_match_reference(kind, normalize, data, decoded):
    """On the GPU in both modes; the training batches as the trainer takes them there, channels_last."""
    for images, labels, draws in run(
        kind, data, device="cuda", with_draws=True, normalize=normalize, channels_last=True
    ):
        assert images.device.type == "cuda" and labels.device.type == "cuda" and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last)
        for i, label in enumerate(labels.tolist()):
            d = {k: v[i] for k, v in draws.items()}
            expected = augment.train_sample(
                decoded[label], int(d["dx"]), int(d["dy"]), bool(d["flip"]), d["alpha"], PCA, normalize
            )
            assert_levels_close(
                images[i].cpu(), expected, f"training sample {label} on the GPU", tolerance(kind, "cuda"), normalize
            )
    for images, labels in run(kind, data, "val", device="cuda", normalize=normalize):
        for image, label in zip(images.cpu(), labels.tolist()):
            assert_levels_close(
                image,
                augment.val_sample(decoded[label], PCA, normalize),
                f"centre crop of {label} on the GPU",
                tolerance(kind, "cuda"),
                normalize,
            )


def test_bench_loaders_command(data, tmp_path):
    """`alexnet-bench loaders` end to end on the tiny shards: table, JSON of the documented form, PNG."""
    import json

    from click.testing import CliRunner

    from alexnet.tools.bench import main

    args = ["loaders", "--data", str(data), "--batch-size", "8", "--batches", "2", "--warmup", "1", "--workers", "2"]
    result = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    assert "loader dali" in result.output and "decode ceiling (Pillow)" in result.output
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["device"] == "cpu" and figures["decode_ceiling"]["images_per_s"] > 0
    assert set(figures["loaders"]) == {"dali", "torch"}
    assert figures["loaders"]["torch"]["vs_torch"] == 1.0 and figures["loaders"]["dali"]["images_per_s"] > 0
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert CliRunner().invoke(main, ["loaders", "--data", str(data), "--loaders", "dali,nope"]).exit_code == 2
    assert "fewer than one batch" in CliRunner().invoke(main, [*args[:3], "--batch-size", "64"]).output


@pytest.mark.skipif(not HAVE_FFCV, reason="FFCV is not installed")
def test_bench_loaders_ffcv_decoder_row(data, tmp_path):
    """With the FFCV loader, `alexnet-bench loaders` also measures FFCV's own decoder and the loader against it."""
    import json

    from click.testing import CliRunner

    from alexnet.tools.bench import main

    args = ["loaders", "--data", str(data), "--loaders", "ffcv", "--batch-size", "8", "--batches", "2", "--warmup", "1"]
    result = CliRunner().invoke(main, [*args, "--workers", "2", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "decode ceiling (FFCV decoder)" in result.output and "against its own decoder" in result.output
    figures = json.loads((tmp_path / "b.json").read_text())
    ceiling = figures["ffcv_decode_ceiling"]
    assert ceiling["decoder"] == "ffcv" and ceiling["images"] == 16 and ceiling["images_per_s"] > 0
    ffcv = figures["loaders"]["ffcv"]
    assert ffcv["vs_ffcv_decoder"] == pytest.approx(ffcv["images_per_s"] / ceiling["images_per_s"])
    assert "fewer than one batch" in CliRunner().invoke(main, [*args[:5], "--batch-size", "64"]).output


@pytest.mark.parametrize("kind", KINDS)
def test_half_precision_output(kind, data):
    ((full, labels),) = run(kind, data, "val", batch_size=21)
    ((half, same),) = run(kind, data, "val", batch_size=21, dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(labels, same)
    torch.testing.assert_close(half.float(), full, atol=1e-2, rtol=1e-3)

"""The reference augmentation (alexnet.pipeline.augment) against the spec written out in numpy."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from shard_data import EIGVEC, PCA

from alexnet.pipeline import augment
from alexnet.pipeline.paper import CROP_SIZE, MAX_CROP_OFFSET, PCA_ALPHA_STD


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)


def spec_sample(
    img: np.ndarray, dx: int, dy: int, flip: bool, alpha: np.ndarray, normalize: str = "mean"
) -> np.ndarray:
    """docs/design.md's four steps, literally, in float64: crop, flip, lighting in pixel units, normalise."""
    x = img[dy : dy + CROP_SIZE, dx : dx + CROP_SIZE].astype(np.float64)
    if flip:
        x = x[:, ::-1]
    x = x + 255 * EIGVEC @ (alpha * np.array(PCA.eigval))  # δ = eigvec·(α ⊙ λ)·255, λ on the 0–1 scale
    x = x - 255 * np.array(PCA.mean)  # §2: the mean on the 0–255 scale
    if normalize == "std":
        x = x / (255 * np.array(PCA.std))
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("normalize", ["mean", "std"])
@pytest.mark.parametrize("dx, dy, flip", [(0, 0, False), (32, 0, True), (0, 32, False), (7, 23, True), (16, 16, False)])
def test_train_sample_is_the_spec(image, dx, dy, flip, normalize):
    alpha = np.array([0.15, -0.05, 0.2])
    out = augment.train_sample(torch.from_numpy(image), dx, dy, flip, torch.tensor(alpha), PCA, normalize)
    assert out.dtype == torch.float32 and out.shape == (3, 224, 224) and out.is_contiguous()
    atol = 2e-5 if normalize == "std" else 2e-5 * 255  # float32 rounding, in the output's units
    np.testing.assert_allclose(out.numpy(), spec_sample(image, dx, dy, flip, alpha, normalize), atol=atol)


def test_default_is_the_papers_mean_subtraction(image):
    """§2: raw 0–255 values minus the per-channel mean, nothing divided; the std mode is that over 255·std."""
    t = torch.from_numpy(image)
    mean = augment.val_sample(t, PCA)
    np.testing.assert_allclose(
        mean.numpy(), image[16:240, 16:240].transpose(2, 0, 1) - 255 * np.array(PCA.mean)[:, None, None], atol=1e-4
    )
    std = augment.val_sample(t, PCA, "std")
    np.testing.assert_allclose(std.numpy(), mean.numpy() / (255 * np.array(PCA.std))[:, None, None], atol=1e-5)
    with pytest.raises(ValueError, match="normalize"):
        augment.normalise_constants(PCA, "unit")


def test_channels_last_normalise_keeps_nhwc_and_values(image):
    windows = torch.from_numpy(np.stack([image, image[::-1].copy()]))[:, :224, :224].contiguous()
    mean, std = (torch.tensor(v) for v in augment.normalise_constants(PCA))
    nhwc = augment.normalise_with(windows, mean, std, channels_last=True)
    assert nhwc.shape == (2, 3, 224, 224) and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nhwc, augment.normalise_with(windows, mean, std))


def test_batched_normalise_matches_per_sample(image):
    rng = np.random.default_rng(1)
    images = torch.from_numpy(np.stack([image, image[::-1].copy()]))[:, :224, :224]
    alpha = torch.from_numpy(rng.normal(0, 0.1, (2, 3)).astype(np.float32))
    batch = augment.normalise(images, augment.lighting_shift(alpha, PCA), PCA)
    for i in range(2):
        one = augment.normalise(images[i], augment.lighting_shift(alpha[i], PCA), PCA)
        torch.testing.assert_close(batch[i], one)


def test_validation_crops(image):
    t = torch.from_numpy(image)
    assert torch.equal(augment.center_crop(t), t[16:240, 16:240])
    crops = augment.ten_crops(t)
    assert crops.shape == (10, 224, 224, 3)
    expected = [t[:224, :224], t[:224, 32:], t[32:, :224], t[32:, 32:], t[16:240, 16:240]]
    for i, window in enumerate(expected):
        assert torch.equal(crops[i], window)
        assert torch.equal(crops[5 + i], window.flip(1))
    norm = augment.ten_crop_sample(t, PCA)
    assert norm.shape == (10, 3, 224, 224)
    np.testing.assert_allclose(norm[4].numpy(), spec_sample(image, 16, 16, False, np.zeros(3)), atol=5e-3)
    torch.testing.assert_close(augment.val_sample(t, PCA), norm[4])


def test_lighting_shift_covariance():
    """δ = eigvec·(α ⊙ eigval) with α ~ N(0, 0.1²) has covariance eigvec·diag((0.1·eigval)²)·eigvecᵀ."""
    alpha = torch.from_numpy(np.random.default_rng(2).normal(0, PCA_ALPHA_STD, (200_000, 3)))
    shift = augment.lighting_shift(alpha, PCA).double().numpy()
    expected = EIGVEC @ np.diag((PCA_ALPHA_STD * np.array(PCA.eigval)) ** 2) @ EIGVEC.T
    np.testing.assert_allclose(np.cov(shift.T), expected, rtol=0.02, atol=1e-7)
    assert np.abs(shift.mean(axis=0)).max() < 1e-4


def test_draws_follow_the_spec():
    rng = np.random.default_rng(3)
    draws = [augment.draw_train(rng) for _ in range(20_000)]
    offsets = np.array([d[:2] for d in draws]).ravel()
    assert offsets.min() == 0 and offsets.max() == MAX_CROP_OFFSET
    assert chisquare(np.bincount(offsets, minlength=33)).pvalue > 1e-3
    assert abs(np.mean([d[2] for d in draws]) - 0.5) < 0.015
    alpha = np.stack([d[3] for d in draws])
    assert alpha.dtype == np.float32
    np.testing.assert_allclose(alpha.std(axis=0), PCA_ALPHA_STD, rtol=0.03)


def test_crop_positions_give_exact_offsets():
    """DALI's anchor is round(pos · (256 − 224)); k/32 is exact in binary, so every offset is hit exactly."""
    assert [round(augment.crop_position(k) * MAX_CROP_OFFSET) for k in range(33)] == list(range(33))
    assert augment.crop_position(augment.CENTER_OFFSET) == 0.5

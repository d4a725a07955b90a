"""The augmentation spec of docs/design.md, written once: the reference every loader is tested against.

Every function takes its random draws as arguments (crop offsets, flip bit, lighting α), so a test
can fix them and a loader can draw them however it likes. Images are uint8 `H×W×3` torch tensors
(RGB, as decoded); outputs are channels first. The torch loader runs these functions as they are;
the DALI loader builds its graph from the same constants (`crop_position`, `TEN_CROP_OFFSETS`,
`lighting_matrix`, `normalise_constants`).

Normalisation (`normalize`, one of `NORMALIZE_MODES`): "mean", the default, is §2's: subtract the
training set's mean from each pixel on the 0–255 scale, nothing else. We subtract the per-channel
mean of `pca.json` (three numbers), not the per-pixel 256×256 mean image Krizhevsky's code used:
the loaders then apply it as a constant inside their fused finishing step (DALI's
`crop_mirror_normalize`, the numba kernel, `DeviceStep`), with no mean image to store, crop and flip
alongside every window, and on centre-cropped photographs the mean image is close to flat, so the
two differ by a few levels at most. "std" also divides by the per-channel std (unit-std inputs).
Both are the same arithmetic, (x − mean) / std, with std = 1 for "mean" (`normalise_constants`).

PCA lighting (§4.1) is in pixel units: δ = eigvec · (α ⊙ λ) · 255 on the 0–255 scale, with the
eigen-decomposition of the 0–1-scale covariance (λ ≈ [0.2175, 0.0188, 0.0045] on ImageNet); that is
fb.resnet.torch's convention and does not depend on the normalisation mode. Two facts go with it:
Krizhevsky's code instead scaled α by √λ on raw pixels (δ = eigvec · (α ⊙ √λ)), and the printed
formula eigvec · (α ⊙ λ) gives another shift for every pixel scale (λ grows as the square of it), so
"the paper's lighting" is only defined once the scale is chosen.

Lighting and normalisation are one step: adding the shift δ and then subtracting the mean is
subtracting (mean − δ), so the shift is folded into a per-sample mean. That is how DALI's
`crop_mirror_normalize` applies it too, which makes the two agree to float rounding.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from alexnet.pipeline.paper import CROP_SIZE, FLIP_PROBABILITY, MAX_CROP_OFFSET, NORMALIZE_MODES, PCA_ALPHA_STD
from alexnet.pipeline.store.pca_file import PcaStats

Normalize = Literal["mean", "std"]

CENTER_OFFSET = MAX_CROP_OFFSET // 2
# The paper's ten test crops: the four corners and the centre, as (dx, dy), then the same five
# mirrored. (torchvision's TenCrop crops the mirrored *image*, so its mirrored corners come in
# another order; the softmax average does not care.)
FIVE_CROP_OFFSETS = (
    (0, 0),
    (MAX_CROP_OFFSET, 0),
    (0, MAX_CROP_OFFSET),
    (MAX_CROP_OFFSET, MAX_CROP_OFFSET),
    (CENTER_OFFSET, CENTER_OFFSET),
)
TEN_CROP_OFFSETS = tuple((dx, dy, flip) for flip in (False, True) for dx, dy in FIVE_CROP_OFFSETS)


def crop(image: torch.Tensor, dx: int, dy: int, size: int = CROP_SIZE) -> torch.Tensor:
    """The size×size window whose top-left pixel is column dx, row dy (a view, no copy)."""
    return image[..., dy : dy + size, dx : dx + size, :]


def hflip(image: torch.Tensor) -> torch.Tensor:
    """Mirror left↔right (the W axis of ...×H×W×C)."""
    return image.flip(-2)


def lighting_matrix(pca: PcaStats) -> np.ndarray:
    """eigvec · diag(eigval): the 3×3 map from α to the RGB shift δ, on the 0–1 scale."""
    return np.asarray(pca.eigvec, dtype=np.float64) * np.asarray(pca.eigval, dtype=np.float64)


def lighting_shift(alpha: torch.Tensor, pca: PcaStats) -> torch.Tensor:
    """δ = eigvec · (α ⊙ eigval) for each row of α (…×3), on the 0–1 scale (§4.1)."""
    m = torch.as_tensor(lighting_matrix(pca), dtype=torch.float32, device=alpha.device)
    return alpha.to(torch.float32) @ m.T


def check_normalize(normalize: str) -> None:
    """Refuse a normalisation mode other than `NORMALIZE_MODES`."""
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize {normalize!r}: choose one of {', '.join(NORMALIZE_MODES)}")


def normalise_constants(pca: PcaStats, normalize: Normalize = "mean") -> tuple[list[float], list[float]]:
    """The (mean, divisor) per channel on the 0–255 scale, as the decoders' pixels are.

    "mean": the dataset mean and 1 (§2, no division); "std": the dataset mean and std.
    """
    check_normalize(normalize)
    mean = [255.0 * m for m in pca.mean]
    return mean, [255.0 * s for s in pca.std] if normalize == "std" else [1.0, 1.0, 1.0]


def normalise(
    images: torch.Tensor, shift: torch.Tensor | None, pca: PcaStats, normalize: Normalize = "mean"
) -> torch.Tensor:
    """(x + 255·δ − 255·mean) / divisor, as float32 channels first (divisor 1 or 255·std, `normalise_constants`).

    `images` is uint8 …×H×W×3; `shift` is δ (…×3, matching the leading dims, 0–1 scale) or None
    for no lighting (validation).
    """
    mean, std = (
        torch.tensor(v, dtype=torch.float32, device=images.device) for v in normalise_constants(pca, normalize)
    )
    if shift is not None:
        mean = mean - 255.0 * shift.to(images.device, torch.float32)
    return normalise_with(images, mean, std)


def normalise_with(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """(x − mean) / std as float32 channels first: the arithmetic of `normalise`, with its constants given.

    `mean` is [3] or per sample […, 3] (the lighting folded in), `std` [3], both float32 on the
    images' device and on the 0–255 scale. The result is contiguous, or with `channels_last` keeps
    the channels innermost in memory: the channels-first view of the H×W×3 input, which for a
    [B, 3, H, W] batch is torch's `channels_last` format, at no extra cost (one pass either way).
    """
    layout = torch.preserve_format if channels_last else torch.contiguous_format
    x = images.movedim(-1, -3).to(torch.float32, memory_format=layout)  # one pass: type and layout
    return x.sub_(mean[..., None, None]).div_(std[:, None, None])


def train_sample(
    image: torch.Tensor,
    dx: int,
    dy: int,
    flip: bool,
    alpha: torch.Tensor,
    pca: PcaStats,
    normalize: Normalize = "mean",
) -> torch.Tensor:
    """One training input (3×224×224 float32) from a 256×256 image and its draws: crop, flip, lighting, normalise."""
    window = crop(image, dx, dy)
    return normalise(hflip(window) if flip else window, lighting_shift(alpha, pca), pca, normalize)


def center_crop(image: torch.Tensor) -> torch.Tensor:
    """The central 224×224 window (offset 16 in each axis)."""
    return crop(image, CENTER_OFFSET, CENTER_OFFSET)


def ten_crops(image: torch.Tensor) -> torch.Tensor:
    """10×224×224×3 uint8 in `TEN_CROP_OFFSETS` order: the five crops, then their mirrors."""
    return torch.stack(
        [hflip(crop(image, dx, dy)) if flip else crop(image, dx, dy) for dx, dy, flip in TEN_CROP_OFFSETS]
    )


def val_sample(image: torch.Tensor, pca: PcaStats, normalize: Normalize = "mean") -> torch.Tensor:
    """The validation input: the normalised centre crop, 3×224×224."""
    return normalise(center_crop(image), None, pca, normalize)


def ten_crop_sample(image: torch.Tensor, pca: PcaStats, normalize: Normalize = "mean") -> torch.Tensor:
    """The paper's test-time input: ten normalised crops, 10×3×224×224."""
    return normalise(ten_crops(image), None, pca, normalize)


def draw_train(rng: np.random.Generator) -> tuple[int, int, bool, np.ndarray]:
    """One sample's draws: dx, dy uniform over 0..32, a fair flip, and α ~ N(0, 0.1²) per channel."""
    dx, dy = (int(v) for v in rng.integers(0, MAX_CROP_OFFSET + 1, size=2))
    flip = bool(rng.random() < FLIP_PROBABILITY)
    alpha = rng.normal(0.0, PCA_ALPHA_STD, size=3).astype(np.float32)
    return dx, dy, flip, alpha


def crop_position(offset: int) -> float:
    """DALI's normalised crop position for a pixel offset: DALI's anchor is round(pos · 32), so k/32 gives k exactly."""
    return offset / MAX_CROP_OFFSET

"""The augmentation spec of docs/design.md, written once: the reference every loader is tested against.

Every function takes its random draws as arguments (crop offsets, flip bit, lighting α), so a test
can fix them and a loader can draw them however it likes. Images are uint8 `H×W×3` torch tensors
(RGB, as decoded); outputs are channels first. The torch loader runs these functions as they are;
the DALI loader builds its graph from the same constants (`crop_position`, `TEN_CROP_OFFSETS`,
`lighting_matrix`, `normalise_constants`).

Lighting and normalisation are one step: adding the shift δ and then subtracting the mean is
subtracting (mean − δ), so the shift is folded into a per-sample mean. That is how DALI's
`crop_mirror_normalize` applies it too, which makes the two agree to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from alexnet.pipeline.paper import CROP_SIZE, FLIP_PROBABILITY, MAX_CROP_OFFSET, PCA_ALPHA_STD
from alexnet.pipeline.store.pca_file import PcaStats

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


def normalise_constants(pca: PcaStats) -> tuple[list[float], list[float]]:
    """The dataset mean and std per channel on the 0–255 scale, as the decoders' pixels are."""
    return [255.0 * m for m in pca.mean], [255.0 * s for s in pca.std]


def normalise(images: torch.Tensor, shift: torch.Tensor | None, pca: PcaStats) -> torch.Tensor:
    """(x + 255·δ − 255·mean) / (255·std), as float32 channels first.

    `images` is uint8 …×H×W×3; `shift` is δ (…×3, matching the leading dims, 0–1 scale) or None
    for no lighting (validation).
    """
    mean, std = (torch.tensor(v, dtype=torch.float32, device=images.device) for v in normalise_constants(pca))
    if shift is not None:
        mean = mean - 255.0 * shift.to(images.device, torch.float32)
    return normalise_with(images, mean, std)


def normalise_with(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x − mean) / std as float32 channels first: the arithmetic of `normalise`, with its constants given.

    `mean` is [3] or per sample […, 3] (the lighting folded in), `std` [3], both float32 on the
    images' device and on the 0–255 scale.
    """
    x = images.movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format)  # one pass: type and layout
    return x.sub_(mean[..., None, None]).div_(std[:, None, None])


def train_sample(image: torch.Tensor, dx: int, dy: int, flip: bool, alpha: torch.Tensor, pca: PcaStats) -> torch.Tensor:
    """One training input (3×224×224 float32) from a 256×256 image and its draws: crop, flip, lighting, normalise."""
    window = crop(image, dx, dy)
    return normalise(hflip(window) if flip else window, lighting_shift(alpha, pca), pca)


def center_crop(image: torch.Tensor) -> torch.Tensor:
    """The central 224×224 window (offset 16 in each axis)."""
    return crop(image, CENTER_OFFSET, CENTER_OFFSET)


def ten_crops(image: torch.Tensor) -> torch.Tensor:
    """10×224×224×3 uint8 in `TEN_CROP_OFFSETS` order: the five crops, then their mirrors."""
    return torch.stack(
        [hflip(crop(image, dx, dy)) if flip else crop(image, dx, dy) for dx, dy, flip in TEN_CROP_OFFSETS]
    )


def val_sample(image: torch.Tensor, pca: PcaStats) -> torch.Tensor:
    """The validation input: the normalised centre crop, 3×224×224."""
    return normalise(center_crop(image), None, pca)


def ten_crop_sample(image: torch.Tensor, pca: PcaStats) -> torch.Tensor:
    """The paper's test-time input: ten normalised crops, 10×3×224×224."""
    return normalise(ten_crops(image), None, pca)


def draw_train(rng: np.random.Generator) -> tuple[int, int, bool, np.ndarray]:
    """One sample's draws: dx, dy uniform over 0..32, a fair flip, and α ~ N(0, 0.1²) per channel."""
    dx, dy = (int(v) for v in rng.integers(0, MAX_CROP_OFFSET + 1, size=2))
    flip = bool(rng.random() < FLIP_PROBABILITY)
    alpha = rng.normal(0.0, PCA_ALPHA_STD, size=3).astype(np.float32)
    return dx, dy, flip, alpha


def crop_position(offset: int) -> float:
    """DALI's normalised crop position for a pixel offset: DALI's anchor is round(pos · 32), so k/32 gives k exactly."""
    return offset / MAX_CROP_OFFSET

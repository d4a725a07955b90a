"""The torch and FFCV loaders' last step, on the batch's device: PCA lighting and normalisation.

Both loaders hand over uint8 windows (four times fewer bytes than float32 to copy) and finish
them here, in one batched pass (`augment.normalise_with`, the reference's own arithmetic). The
constants (mean, std, and the lighting map 255·eigvec·diag(eigval)) are made on the device once,
when the loader is built, not per batch. DALI does the same step inside its graph.
"""

from __future__ import annotations

import torch

from alexnet.pipeline.augment import lighting_matrix, normalise_constants, normalise_with
from alexnet.pipeline.loaders.contract import LoaderConfig
from alexnet.pipeline.store.pca_file import PcaStats


class DeviceStep:
    """`step(images, alpha)`: uint8 …×H×W×3 windows and their α (…×3, or None for no lighting) → float …×3×H×W.

    The loader's `normalize` mode picks the constants; with `channels_last` the float result keeps
    the windows' NHWC memory order (the channels-first view of it: torch's `channels_last`), which
    costs nothing, since the one pass that makes floats writes that order anyway.
    """

    def __init__(self, pca: PcaStats, config: LoaderConfig) -> None:
        device, dtype = config.device, config.dtype
        self.channels_last = config.channels_last
        mean, std = normalise_constants(pca, config.normalize)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.lighting_t = torch.tensor(255.0 * lighting_matrix(pca).T, dtype=torch.float32, device=device)
        self.dtype = dtype

    def __call__(self, images: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        mean = self.mean if alpha is None else self.means(alpha)
        return normalise_with(images, mean, self.std, self.channels_last).to(self.dtype)

    def means(self, alpha: torch.Tensor) -> torch.Tensor:
        """Each sample's mean with its lighting shift folded in (mean − 255·eigvec·(α ⊙ λ)): N×3 float32 from α (N×3)."""
        return self.mean - alpha.to(self.mean.device, torch.float32) @ self.lighting_t


def pinned_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor onto `device`, asynchronously: pinned first on a GPU (a non-blocking copy from
    pageable memory is staged and synchronous for the host); as it is on the CPU.

    `pin_memory()` takes its block from torch's caching host allocator, which records the copy's
    stream on it, so the block is reused for a later batch only once this copy has run.
    """
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)

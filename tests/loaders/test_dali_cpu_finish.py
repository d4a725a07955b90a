"""The DALI CPU graph's numba finishing kernel against the reference normalisation, on its own.

The loader tests check it inside the graph on 224 windows; here it runs as plain numba on odd
sizes, both mirror settings and a lighting shift, so a layout or indexing slip shows up directly.
"""

import numba
import numpy as np
import pytest
import torch
from shard_data import PCA

from alexnet.pipeline import augment
from alexnet.pipeline.loaders.dali_cpu_finish import finish_sample, finish_sample_hwc


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
@pytest.mark.parametrize("normalize", ["mean", "std"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("height, width", [(224, 224), (7, 13)])
def test_kernel_equals_reference(flip, height, width, normalize, layout):
    rng = np.random.default_rng(height * width + flip)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = torch.tensor(rng.normal(0.0, 0.1, 3), dtype=torch.float32)
    mean, std = (np.asarray(v) for v in augment.normalise_constants(PCA, normalize))
    shifted_mean = mean - 255.0 * augment.lighting_shift(alpha, PCA).numpy()
    shape, kernel = ((3, height, width), finish_sample) if layout == "CHW" else ((height, width, 3), finish_sample_hwc)
    out = np.full(shape, np.nan, np.float32)
    numba.njit(kernel)(
        out, image, shifted_mean.astype(np.float32), (1.0 / std).astype(np.float32), np.array([int(flip)], np.int32)
    )
    window = torch.from_numpy(image)
    expected = augment.normalise(
        augment.hflip(window) if flip else window, augment.lighting_shift(alpha, PCA), PCA, normalize
    )
    expected = expected.numpy() if layout == "CHW" else expected.permute(1, 2, 0).numpy()
    atol = 1e-4 if normalize == "std" else 1e-4 * 255  # the same relative rounding, in levels
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)

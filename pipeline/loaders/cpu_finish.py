"""The CPU's finishing kernels: mirror, lighting, normalisation and float32 layout of a uint8 window in one pass.

Written once, run by two loaders on the CPU: DALI's graph (`dali_cpu_finish`, through
`numba_function`) and the FFCV loader (`ffcv_loader`, after FFCV's decoder, in its own parallel
numba kernel). They are plain Python functions, so each runner compiles them its own way.

Each sample's mean comes with the lighting shift δ already folded in (mean − δ), so
output = (pixel − mean) · (1/std), the reference's value to float rounding (std is 1 under the
default "mean" normalisation). `finish_sample` writes CHW, `finish_sample_hwc` HWC (for
channels_last, which torch then views as channels first without a copy).
"""

from __future__ import annotations

import numpy as np


def finish_sample(out: np.ndarray, image: np.ndarray, mean: np.ndarray, scale: np.ndarray, flip: np.ndarray) -> None:
    """out[c, y, x] = (image[y, x′, c] − mean[c]) · scale[c], x′ = x or its mirror: 3×H×W float32 from H×W×3 uint8.

    Each row is read as one flat run of bytes (3·W contiguous: LLVM widens it with vector
    instructions; indexing `image[y, x, c]` instead halves the speed), then de-interleaved.
    """
    height, width = image.shape[0], image.shape[1]
    rows = image.reshape(height, 3 * width)
    m0, m1, m2 = mean[0], mean[1], mean[2]
    s0, s1, s2 = scale[0], scale[1], scale[2]
    row = np.empty(3 * width, np.float32)
    mirrored = flip[0] != 0
    for y in range(height):
        pixels = rows[y]
        for k in range(3 * width):
            row[k] = pixels[k]
        r, g, b = out[0, y], out[1, y], out[2, y]
        if mirrored:
            for x in range(width):
                k = 3 * (width - 1 - x)
                r[x] = (row[k] - m0) * s0
                g[x] = (row[k + 1] - m1) * s1
                b[x] = (row[k + 2] - m2) * s2
        else:
            for x in range(width):
                r[x] = (row[3 * x] - m0) * s0
                g[x] = (row[3 * x + 1] - m1) * s1
                b[x] = (row[3 * x + 2] - m2) * s2


def finish_sample_hwc(
    out: np.ndarray, image: np.ndarray, mean: np.ndarray, scale: np.ndarray, flip: np.ndarray
) -> None:
    """out[y, x, c] = (image[y, x′, c] − mean[c]) · scale[c], x′ = x or its mirror: H×W×3 float32 from H×W×3 uint8."""
    height, width = image.shape[0], image.shape[1]
    rows = image.reshape(height, 3 * width)
    outs = out.reshape(height, 3 * width)
    m0, m1, m2 = mean[0], mean[1], mean[2]
    s0, s1, s2 = scale[0], scale[1], scale[2]
    mirrored = flip[0] != 0
    for y in range(height):
        pixels, o = rows[y], outs[y]
        for x in range(width):
            k = 3 * (width - 1 - x) if mirrored else 3 * x
            o[3 * x] = (np.float32(pixels[k]) - m0) * s0
            o[3 * x + 1] = (np.float32(pixels[k + 1]) - m1) * s1
            o[3 * x + 2] = (np.float32(pixels[k + 2]) - m2) * s2

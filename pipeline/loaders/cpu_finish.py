"""The CPU's finishing kernels: mirror, lighting, normalisation and float32 layout of a uint8 window in one pass.

Written once, run by two loaders on the CPU: DALI's graph (`dali_cpu_finish`, through
`numba_function`, on the window DALI cropped) and the FFCV loader (`ffcv_loader`, in its own
parallel numba kernel, on the window at (dx, dy) of FFCV's full decoded image, read in place).
`finish_window`/`finish_window_hwc` are the compiled kernels; `finish_sample`/`finish_sample_hwc`
are DALI's plain-Python run functions around them (DALI compiles those itself).

Each sample's mean comes with the lighting shift δ already folded in (mean − δ), so
output = (pixel − mean) · (1/std), the reference's value to float rounding (std is 1 under the
default "mean" normalisation). `finish_sample` writes CHW, `finish_sample_hwc` HWC (for
channels_last, which torch then views as channels first without a copy).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def finish_window(
    out: np.ndarray, image: np.ndarray, dx: int, dy: int, mean: np.ndarray, scale: np.ndarray, mirrored: bool
) -> None:
    """out[c, y, x] = (image[dy + y, dx + x′, c] − mean[c]) · scale[c], x′ = x or its mirror: the
    3×H×W float32 window (H, W from `out`) at column dx, row dy of a C-contiguous uint8 image.

    Each row is read as one flat run of bytes (3·W contiguous: LLVM widens it with vector
    instructions; indexing `image[y, x, c]` instead halves the speed), then de-interleaved. The
    row is sliced before it is indexed, so every index counts up from 0 (see `_window` in
    `ffcv_loader`: an index numba cannot prove non-negative stops the vectorising).
    """
    height, width = out.shape[1], out.shape[2]
    rows = image.reshape(image.shape[0], 3 * image.shape[1])
    m0, m1, m2 = mean[0], mean[1], mean[2]
    s0, s1, s2 = scale[0], scale[1], scale[2]
    row = np.empty(3 * width, np.float32)
    for y in range(height):
        pixels = rows[dy + y, 3 * dx : 3 * (dx + width)]
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


@numba.njit(cache=True, nogil=True)
def finish_window_hwc(
    out: np.ndarray, image: np.ndarray, dx: int, dy: int, mean: np.ndarray, scale: np.ndarray, mirrored: bool
) -> None:
    """out[y, x, c] = (image[dy + y, dx + x′, c] − mean[c]) · scale[c]: `finish_window` written H×W×3."""
    height, width = out.shape[0], out.shape[1]
    rows = image.reshape(image.shape[0], 3 * image.shape[1])
    outs = out.reshape(height, 3 * width)
    m0, m1, m2 = mean[0], mean[1], mean[2]
    s0, s1, s2 = scale[0], scale[1], scale[2]
    for y in range(height):
        pixels, o = rows[dy + y, 3 * dx : 3 * (dx + width)], outs[y]
        for x in range(width):
            k = 3 * (width - 1 - x) if mirrored else 3 * x
            o[3 * x] = (np.float32(pixels[k]) - m0) * s0
            o[3 * x + 1] = (np.float32(pixels[k + 1]) - m1) * s1
            o[3 * x + 2] = (np.float32(pixels[k + 2]) - m2) * s2


def finish_sample(out: np.ndarray, image: np.ndarray, mean: np.ndarray, scale: np.ndarray, flip: np.ndarray) -> None:
    """out[c, y, x] = (image[y, x′, c] − mean[c]) · scale[c], x′ = x or its mirror: 3×H×W float32 from H×W×3 uint8."""
    finish_window(out, image, 0, 0, mean, scale, flip[0] != 0)


def finish_sample_hwc(
    out: np.ndarray, image: np.ndarray, mean: np.ndarray, scale: np.ndarray, flip: np.ndarray
) -> None:
    """out[y, x, c] = (image[y, x′, c] − mean[c]) · scale[c], x′ = x or its mirror: H×W×3 float32 from H×W×3 uint8."""
    finish_window_hwc(out, image, 0, 0, mean, scale, flip[0] != 0)

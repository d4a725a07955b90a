"""The DALI graph's last step on the CPU: mirror, lighting, normalisation and CHW float32 in one pass.

On a GPU `crop_mirror_normalize` does this in one fused kernel. DALI's CPU version of it costs a
large share of a JPEG decode, and the loader's goal is to run close to plain decoding; this numba
kernel does the same arithmetic several times faster (figures in `docs/benchmarks.md`): it widens
one row of interleaved RGB to float32, then writes the three channel rows (reversed when
mirrored), which LLVM vectorises. It runs inside the graph as DALI's
`numba_function` operator, so DALI's threads and memory pool run it like any other operator.
The kernels themselves are in `cpu_finish` (no DALI import), which the FFCV loader runs too.

Each sample's mean comes from the graph with the lighting shift δ already folded in (mean − δ,
the same node the GPU graph gives `crop_mirror_normalize`), so output = (pixel − mean) · (1/std),
the reference's value to float rounding (std is 1 under the default "mean" normalisation).

Two layouts: `finish_sample` writes CHW (the default), `finish_sample_hwc` HWC for a loader asked
for channels_last, whose batch torch then views as channels-first `channels_last` without a copy.
The HWC kernel is the same arithmetic written back in the input's own interleaved order.
"""

from __future__ import annotations

import functools
from typing import Any

from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode
from nvidia.dali.plugin.numba import NumbaFunction

from alexnet.pipeline.loaders.cpu_finish import finish_sample, finish_sample_hwc


def same_shape(outs: Any, ins: Any) -> None:
    """numba_function's setup for the HWC kernel: every output sample has its input's H×W×3 shape."""
    for i in range(len(outs[0])):
        for d in range(3):
            outs[0][i][d] = ins[0][i][d]


def channels_first_shape(outs: Any, ins: Any) -> None:
    """numba_function's setup: every output sample is 3×H×W for an H×W×3 input sample."""
    for i in range(len(outs[0])):
        outs[0][i][0] = ins[0][i][2]
        outs[0][i][1] = ins[0][i][0]
        outs[0][i][2] = ins[0][i][1]


@functools.cache
def _operator(channels_last: bool) -> NumbaFunction:
    """One compiled operator per layout and process: numba compiles it in about 2 s, and pipelines are rebuilt every epoch."""
    return NumbaFunction(
        run_fn=finish_sample_hwc if channels_last else finish_sample,
        setup_fn=same_shape if channels_last else channels_first_shape,
        out_types=[types.FLOAT],
        in_types=[types.UINT8, types.FLOAT, types.FLOAT, types.INT32],
        outs_ndim=[3],
        ins_ndim=[3, 1, 1, 1],
        device="cpu",
    )


def finish_on_cpu(images: Any, mean: Any, std: list[float], flip: Any = None, channels_last: bool = False) -> Any:
    """Mirror + normalise + float32 of uint8 H×W×3 windows, written CHW (or HWC with `channels_last`).

    `mean` is a per-sample DALI node of 3 floats (the lighting folded in) or a constant list;
    `std` the divisor per channel; `flip` an int32 scalar node, or None for no mirroring.
    """
    if not isinstance(mean, DataNode):
        mean = fn.constant(fdata=list(mean), shape=[3])
    scale = fn.constant(fdata=[1.0 / v for v in std], shape=[3])
    flip = fn.constant(idata=[0], shape=[1]) if flip is None else fn.reshape(flip, shape=[1])
    return _operator(channels_last)(images, mean, scale, flip)

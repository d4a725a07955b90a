"""The loaders, run every epoch: `make_loader(kind, ...)` over prepared shards, one contract for all (`contract`).

`torch_loader` (the PyTorch DataLoader baseline), `dali_loader` (with its CPU finishing kernel,
`dali_cpu_finish`) and `ffcv_loader`; each is imported only when asked for.
"""

from alexnet.pipeline.loaders.contract import LOADER_KINDS, Loader, LoaderConfig, make_loader

__all__ = ["LOADER_KINDS", "Loader", "LoaderConfig", "make_loader"]

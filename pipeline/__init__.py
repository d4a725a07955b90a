"""The data side: the spec (`paper`, `augment`), the on-disk contract (`store`), the run-once tools
(`offline`), the loaders run every epoch (`loaders`) and the measuring code (`bench`).

`from alexnet.pipeline import make_loader, LOADER_KINDS` is the stable entry point.
"""

from alexnet.pipeline.loaders import LOADER_KINDS, Loader, make_loader

__all__ = ["LOADER_KINDS", "Loader", "make_loader"]

"""Where `export-ffcv` puts the FFCV files and how FFCV is imported: shared by the export and the FFCV loader.

`OUT/ffcv/<split>.beton` holds the shard JPEGs byte for byte; `OUT/ffcv/<split>-raw.beton` the
decoded pixels. The manifest's `"ffcv"` entry records each beton written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Mode = Literal["jpg", "raw"]
MODES: tuple[str, ...] = ("jpg", "raw")
FFCV_DIR = "ffcv"
MANIFEST_KEY = "ffcv"
INSTALL_HINT = "apt-get install pkg-config libturbojpeg0-dev libopencv-dev, then pip install -e '.[ffcv]'"


class FfcvMissing(ImportError):
    """FFCV (or a library it needs) cannot be imported."""


def import_ffcv() -> None:
    """Import FFCV's writer and loader once, or say what is missing and how to install it.

    Importing FFCV sets torch's and numba's process-wide thread counts to 1 (its `Compiler`
    does so at import); they are put back, so that merely importing it slows nothing down.
    """
    import numba
    import torch

    threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        import ffcv.fields  # noqa: F401  (imports cv2 and the compiled libffcv too)
        import ffcv.loader  # noqa: F401
    except ImportError as e:
        raise FfcvMissing(f"FFCV cannot be imported ({e}); install it: {INSTALL_HINT}") from e
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])


def beton_name(split: str, mode: Mode) -> str:
    """`train.beton` (stored JPEGs) or `train-raw.beton` (pixels): both modes can sit side by side."""
    return f"{split}.beton" if mode == "jpg" else f"{split}-{mode}.beton"


def beton_path(data: Path, split: str, mode: Mode) -> Path:
    return data / FFCV_DIR / beton_name(split, mode)


def export_hint(data: Path, mode: Mode) -> str:
    return f"alexnet-tools export-ffcv --data {data}" + (" --raw" if mode == "raw" else "")

"""Crash-safe files and RNG snapshots: what a checkpoint needs beyond state_dicts."""

import importlib
import json
import os
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(f)` on `path.tmp`, fsync, rename over `path`: a reader sees the old file or the new one.

    On any failure (a full disk, a signal) the temporary file is removed and the old `path` kept.
    The compute side's one atomic writer (`alexnet.pipeline.store.atomic` is the data side's).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` atomically."""
    write_atomic(path, lambda f: torch.save(obj, f))


def write_json_atomic(obj: Any, path: Path) -> None:
    """The same for a JSON document."""
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2, default=str).encode()))


def rng_state(devices: Iterable[torch.device]) -> dict[str, Any]:
    """torch's CPU generator, the CUDA generators of `devices`, python's random, and numpy's global one
    when numpy is loaded (model/ does not import it; a loader in the same process may use it)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    state["cuda"] = {
        i: torch.cuda.get_rng_state(i) for i in sorted({d.index or 0 for d in devices if d.type == "cuda"})
    }
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        state["numpy"] = numpy.random.get_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what rng_state saved."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    for i, s in state["cuda"].items():
        torch.cuda.set_rng_state(s, i)
    if "numpy" in state:
        importlib.import_module("numpy").random.set_state(state["numpy"])

"""Crash-safe files and RNG snapshots: what a checkpoint needs beyond state_dicts."""

import importlib
import json
import os
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, fsync, then rename: a reader sees the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(obj: Any, path: Path) -> None:
    """The same for a JSON document."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state(devices: Iterable[torch.device]) -> dict[str, Any]:
    """torch's CPU generator, the CUDA generators of `devices`, python's random, and numpy's global one
    when numpy is loaded (model/ does not import it; a loader in the same process may use it)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    state["cuda"] = {i: torch.cuda.get_rng_state(i) for i in sorted({d.index or 0 for d in devices if d.type == "cuda"})}
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

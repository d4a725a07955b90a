"""Crash-safe files, RNG snapshots and background checkpoint writes: what a checkpoint needs beyond state_dicts."""

import importlib
import json
import os
import pickle
import random
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch


class WriteFailed(OSError):
    """A file could not be written (a full disk, a file-size limit); the message is one line."""


class _RecordingFile:
    """A file whose first write error is kept: torch.save reports one only as an unrelated RuntimeError."""

    def __init__(self, f: BinaryIO) -> None:
        self.file, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(f)` on `path.tmp`, fsync, rename over `path`: a reader sees the old file or the new one.

    On any failure (a full disk, a signal) the temporary file is removed and the old `path` kept; an
    operating-system error while writing becomes `WriteFailed`, one line naming the file.
    The compute side's one atomic writer (`alexnet.pipeline.store.atomic` is the data side's).
    """
    tmp = path.with_name(path.name + ".tmp")
    recording = None
    try:
        with open(tmp, "wb") as f:
            recording = _RecordingFile(f)
            write(recording)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else recording.error if recording is not None else None
        if cause is None:
            raise
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        raise WriteFailed(f"{path}: could not write ({cause.strerror or cause}); {tmp.name} removed, {kept}") from None


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` atomically, without the zip records' CRC-32s.

    torch.load never reads them (a tensor with a flipped byte loads silently with or without one), and
    computing them took half of a checkpoint's save time, on the saver thread beside training: 0.6 →
    0.3 s for a 455 MB last.pt (docs/benchmarks.md, "Test suite"). The option is process-wide, so the
    caller's setting is put back.
    """
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        write_atomic(path, lambda f: torch.save(obj, f))
    finally:
        torch.serialization.set_crc32_options(crc32)


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


def finite(t: torch.Tensor) -> bool:
    """Whether every element is finite, from the extremes: aminmax propagates a nan to both and an inf
    is one of them, and it reads the tensor once without the full-size mask of isfinite (15× faster)."""
    return t.numel() == 0 or all(bool(v.isfinite()) for v in torch.aminmax(t))


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding a nan or an inf (checked on a CPU copy, before saving)."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not finite(t)]


def detached(obj: Any, copy: bool = True) -> Any:
    """`obj` with every tensor copied to the CPU (dicts, lists and tuples rebuilt), so that training can
    go on changing the originals while the copy is written. With `copy=False` (nothing will change them
    before the write ends) a tensor already on the CPU is taken as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=copy)
    if isinstance(obj, Mapping):
        return {k: detached(v, copy) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(detached(v, copy) for v in obj)
    return obj


class BackgroundSaver:
    """Writes checkpoints on one background thread, one at a time, so the training step does not wait
    for torch.save and fsync. `save` takes a snapshot that is already detached (see `detached`); a
    failure of one write is raised by the next `save` or by `wait`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _write(self, obj: Any, path: Path) -> None:
        try:
            save_atomic(obj, path)
        except BaseException as e:
            self._error = e

    def save(self, obj: Any, path: Path, wait: bool = False) -> None:
        """Write `obj` to `path` after the previous write ends; with `wait`, return when it is on disk."""
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(obj, path), name=f"save {path.name}", daemon=False)
        self._thread.start()
        if wait:
            self.wait()

    def join(self) -> None:
        """Block until the write in flight (if any) is done, without raising its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait(self) -> None:
        """Block until the write in flight (if any) is done; raise its error."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class CheckpointError(Exception):
    """A checkpoint that cannot be used: damaged, or another run's; the message is one line naming the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def read_checkpoint(path: Path, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """A checkpoint (`last.pt` or `best.pt`), checked before a tensor of it is read.

    The file is memory-mapped, so reading it costs the pickled record only; its tensors are read
    when copied out (`load_state_dict`; `detached` for what must outlive the file). A file that is
    empty, truncated or not a checkpoint, and (with `model`) one whose tensors are not this
    network's (another class count or layout), raise CheckpointError.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(path, "damaged (an empty file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        what = "truncated" if "central directory" in str(e) else "not a torch checkpoint"
        raise CheckpointError(path, f"damaged ({what})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
        raise CheckpointError(path, "damaged (no model weights in it)")
    if model is not None:
        check_fits(path, ckpt["model"], model.state_dict())
    return ckpt


def check_fits(path: Path, saved: Mapping[str, Any], mine: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights of another network than `mine`: other tensor names, or other shapes (the first named)."""
    if saved.keys() != mine.keys():
        missing = sorted(set(mine) - set(saved)) or sorted(set(saved) - set(mine))
        raise CheckpointError(path, f"another run's checkpoint: its tensors are not this network's ({missing[0]})")
    theirs, ours = class_count(saved), class_count(mine)
    if theirs != ours:
        raise CheckpointError(path, f"another run's checkpoint: a {theirs}-class network, this run has {ours} classes")
    for name, tensor in mine.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                path,
                f"another run's checkpoint: {name} is {list(saved[name].shape)} there, "
                f"{list(tensor.shape)} in this run (another class count or layout)",
            )


def class_count(weights: Mapping[str, Any]) -> int:
    """The outputs of an AlexNet's last layer (summed over the towers' columns) in a state_dict."""
    return sum(v.shape[0] for k, v in weights.items() if k.endswith("fc8.bias"))

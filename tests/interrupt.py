"""Watching a running `alexnet-train` (its last logged step) and stopping an in-process one the way a scheduler would."""

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def logged_step(run: Path) -> int:
    """The last train step `run`'s metrics.jsonl records (0 before the first); a line still being written is not read."""
    path = run / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []  # whole lines only
    return max((r["step"] for r in map(json.loads, lines) if r["kind"] == "train"), default=0)


@contextmanager
def signal_at_step(run: Path, step: int, signum: int = signal.SIGTERM) -> Iterator[None]:
    """Send this process `signum` once `run` has logged train step `step` or a later one, while the block runs.

    The trainer inside the block handles the signal like alexnet-train's own process does (its handler
    is installed for the run), so in-process runs stop as a killed job would, without a process start.
    """
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if logged_step(run) >= step:
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()

"""What every benchmark measures with: wall time and the CPU time of the whole process tree, and best-of-rounds.

CPU time is read from /proc for this process and every live descendant (threads, DataLoader
workers, pool workers), each with the CPU time of its own finished children, so work done by a
pool that has already been closed is counted too. Images per CPU-second is the figure that a
noisy shared machine disturbs least.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CLOCK_TICK = 0.01  # the kernel counts CPU time in ticks; a shorter span reads as 0 or one tick


@dataclass(frozen=True)
class Measurement:
    """One timed run: how many images in how long, and the CPU it took."""

    images: int
    seconds: float
    cpu_seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_cores(self) -> float:
        """Average number of cores busy during the run."""
        return self.cpu_seconds / self.seconds

    @property
    def images_per_cpu_s(self) -> float | None:
        """Images per CPU-second: the cost per image, whatever else the machine was doing (None below a clock tick)."""
        return self.images / self.cpu_seconds if self.cpu_seconds >= CLOCK_TICK else None

    def as_dict(self) -> dict[str, float | None]:
        return {
            **asdict(self),
            "images_per_s": self.images_per_s,
            "cpu_cores": self.cpu_cores,
            "images_per_cpu_s": self.images_per_cpu_s,
        }


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of one live process: its threads and its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def tree_cpu_seconds() -> float:
    """CPU seconds of this process, every live descendant, and the finished children of each; os.times() without /proc."""
    if not Path("/proc/self/task").is_dir():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            total += _proc_cpu_seconds(pid)
            todo += _children(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
    return total


class Stopwatch:
    """Wall and process-tree CPU time from `start()` to `stop(images)`."""

    def start(self) -> None:
        self.cpu, self.wall = tree_cpu_seconds(), time.perf_counter()

    def stop(self, images: int) -> Measurement:
        wall = time.perf_counter() - self.wall
        return Measurement(images, wall, tree_cpu_seconds() - self.cpu)


def measure(count: Callable[[Any], int], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Measurement]:
    """Run fn once; its value and a Measurement of `count(value)` images over the call."""
    watch = Stopwatch()
    watch.start()
    value = fn(*args, **kwargs)
    return value, watch.stop(count(value))


def best_of(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, Any]:
    """Each run's fastest result (by `images_per_s`) over `rounds` rounds, the runs interleaved so that
    a burst of load elsewhere on a shared machine slows one round of every row, not every round of one."""
    best: dict[str, Any] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            result = run()
            if name not in best or result.images_per_s > best[name].images_per_s:
                best[name] = result
    return best

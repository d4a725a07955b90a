"""One owner per run folder: an exclusive lock on `RUN/run.lock`, held for the whole run.

The lock file names its holder (PID and host), so a second process trying the same folder (a
SLURM requeue, or the printed resume command while the first run is still stopping) refuses in one
line saying who holds it. The operating system drops the lock when its holder dies, so a lock left
behind by a killed process never blocks: the file stays, the lock does not.

The lock is a POSIX record lock (`fcntl.lockf`), not a `flock`: a flock belongs to the open file,
which the DataLoader's forked workers inherit, so a SIGKILLed trainer's orphaned workers would
hold it until they notice and exit; a record lock belongs to the process alone. (Within one
process a record lock never conflicts with itself: the guard is between processes.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "run.lock"


class RunFolderBusy(Exception):
    """Another live process holds the run folder; the message is one line naming it."""


def holder(lock: Path) -> str:
    """Who the lock file says holds it ("PID 123 on host"), as far as the file tells."""
    try:
        pid, host = lock.read_text().split()[:2]
    except (OSError, ValueError):
        return "another process"
    return f"PID {pid} on {host}"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN_DIR's lock while the block runs (creating the folder); RunFolderBusy when another process has it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise RunFolderBusy(
                f"{run_dir}: in use by {holder(path)} (it holds {path}); wait for that run to stop, "
                "or stop it, before training into this folder"
            ) from None
        # Ours now: say who holds it (written only under the lock, so the holder never reads a half line).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock

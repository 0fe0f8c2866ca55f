"""One live run per run folder: a lock file naming the host and process that holds it.

Two runs writing one folder interleave their logs and checkpoints (e.g. ``accelerate launch
--multi_gpu`` without the stage's ``--cpu`` on a machine with no GPU starts independent
single-process runs). The run's main process holds a POSIX record lock on ``RUN_DIR/run.lock``
for its lifetime; the kernel drops it when the process ends, however it ends, so a stale file
from a killed run never blocks the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
    """Another live process is training into the same run folder (the message names it)."""


class RunLock:
    """``acquire()`` takes the folder or raises :class:`RunLockedError`; ``release()`` gives it back.
    Re-acquiring from the process that holds it succeeds (record locks belong to the process)."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunLockedError(f"{self.path.parent} is in use by {self.holder()}; stop that run first "
                                 "or train into another --out") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def holder(self) -> str:
        """Who holds the lock, as written in the lock file ("host H, process P, since T")."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        return (f"host {info.get('host', '?')}, process {info.get('pid', '?')}, "
                f"since {info.get('since', '?')}")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

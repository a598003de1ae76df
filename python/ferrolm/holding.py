"""Holds between processes: a lock file (`fcntl.flock`, holding the holder's process id) that
one process at a time may hold, so a second `ferrolm` asking for the same run directory or
labelling database is refused, told which process has it. Where fcntl is missing (Windows),
nothing is held."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable, Optional


def hold(path: Path, busy: Callable[[str], Exception]) -> Optional[IO]:
    """Takes the lock file `path` (created if missing) for this process and returns it; raises
    `busy(holder's process id)` if another process holds it. Give it back with `let_go`."""
    try:
        import fcntl
    except ImportError:
        return None
    while True:
        lock = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise busy(owner) from None
        # The holder removes the file when it lets go: a lock taken on a file removed meanwhile holds nothing.
        if path.exists() and os.path.samestat(os.fstat(lock.fileno()), path.stat()):
            break
        lock.close()
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def let_go(lock: Optional[IO]) -> None:
    """Gives back a lock `hold` returned."""
    if lock is not None:
        Path(lock.name).unlink(missing_ok=True)  # while still held, so no other process holds it meanwhile
        lock.close()  # closing the file releases its lock

"""Run locks: one run at a time on a journal, or on an audited pair of stores.

An flock on a lock file, taken without waiting: a second run is refused at
once (LockedError), never queued behind the first. The holder writes its
pid into the file so that the refusal can name it. The kernel drops the
lock when the process ends, however it ends: a crash leaves nothing to
clean up.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from restore import private
from restore.errors import CannotRunError, LockedError


def take(path: Path, what: str, refused: Callable[[str], str]) -> int:
    """Hold the lock at ``path``: the open descriptor; closing it releases the lock.

    ``refused(holder pid)`` words the LockedError raised when another process
    holds it; a lock file that cannot be made raises CannotRunError naming ``what``.
    """
    try:
        private.make_dirs(path.parent)
        fd = private.open_fd(path, os.O_RDWR)
    except OSError as exc:
        raise CannotRunError(
            f"cannot take {what} {path}: {exc.strerror or exc}; this run did nothing") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockedError(refused(holder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextmanager
def held(path: Path, what: str, refused: Callable[[str], str]) -> Iterator[None]:
    """``take`` for the length of a ``with`` block."""
    fd = take(path, what, refused)
    try:
        yield
    finally:
        os.close(fd)


def is_held(path: Path) -> bool:
    """Whether some process holds the lock at ``path`` now (one that holds none: False)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False

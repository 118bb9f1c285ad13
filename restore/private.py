"""What mailrestore writes about mail is the running user's alone: 0600 files, 0700 directories.

The catalog holds the recipients, Message-IDs, received times and sizes of
every archived message; the journal, plans, reports, locks and charts name
users and messages too. Any local account could learn who received what and
when from them, so every such file is created 0600 and every directory
created for them 0700, whatever the umask (Dovecot keeps its index files
private the same way). Directories that exist already are left as they are.
Restored mail is none of this: targets give it the owner and mode of the
mailbox it goes into.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_dirs(path: str | Path) -> None:
    """Create directory ``path`` and its missing parents, each 0700; raises OSError."""
    missing = []
    here = Path(path)
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue        # another process made it just now: its own, not ours to change
        os.chmod(directory, DIR_MODE)   # the umask may have taken bits away


def create_file(path: str | Path) -> None:
    """Make sure file ``path`` exists and is 0600, for a library (SQLite) to open; raises OSError.

    A file of ours that is readable by others (made by an earlier version) is made private.
    """
    os.close(open_fd(path, os.O_RDWR))


def open_text(path: str | Path, newline: str | None = None) -> IO[str]:
    """``path`` opened for writing UTF-8 text, emptied, created 0600; raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        _tighten(fd)
        return open(fd, "w", encoding="utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        raise


def open_fd(path: str | Path, flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` of a private file; raises OSError."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        _tighten(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _tighten(fd: int) -> None:
    st = os.fstat(fd)
    if st.st_mode & 0o777 != FILE_MODE and st.st_uid == os.geteuid():
        os.fchmod(fd, FILE_MODE)

"""IMAP keywords in a Maildir, as Dovecot stores them: ``dovecot-keywords`` and a letter.

Each Maildir folder may hold a ``dovecot-keywords`` file of ``"N NAME"``
lines: keyword NAME is the letter ``a`` + N (N from 0 to 25) in the info
part of a message's file name (``:2,Sa``). Dovecot reads the file again
when its mtime changes, and when it needs a new keyword takes the lowest
free N and rewrites the file under its lock ``dovecot-keywords.lock``: it
creates the lock exclusively, writes the new contents into it and renames
it over the file. The same is done here, so Dovecot and mailrestore can
add keywords to one folder at the same time without losing either's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

KEYWORDS_FILE = "dovecot-keywords"
LOCK_FILE = KEYWORDS_FILE + ".lock"
MAX_KEYWORDS = 26
# Dovecot breaks a keywords lock untouched for two minutes: its holder died.
STALE_LOCK = 120.0
LOCK_POLL = 0.05


class KeywordsFull(Exception):
    """All 26 letters of a folder's ``dovecot-keywords`` are taken."""


def parse(text: bytes) -> dict[str, int]:
    """Keyword -> index, read as Dovecot reads the file (it skips lines it cannot use)."""
    found: dict[str, int] = {}
    used: set[int] = set()
    for line in text.decode("utf-8", "replace").splitlines():
        number, sep, name = line.partition(" ")
        if not sep or not name or not number.isdigit():
            continue
        index = int(number)
        if index < MAX_KEYWORDS and name not in found and index not in used:
            found[name] = index
            used.add(index)
    return found


def letter(index: int) -> str:
    return chr(ord("a") + index)


def keyword_letters(folder_fd: int, keywords: Iterable[str], mode: int,
                    give_away: Callable[[int], None]) -> dict[str, str]:
    """The letter of each of ``keywords`` in the folder open as ``folder_fd``.

    Keywords the file lacks are added to it, each at the lowest free index,
    the file written atomically with ``mode`` and handed to ``give_away``
    (the mailbox's owner) before it replaces the old one. Raises
    ``KeywordsFull`` when no letter is left, OSError when the file cannot be
    read or written.
    """
    wanted = list(dict.fromkeys(keywords))
    known = parse(_read(folder_fd)[0])
    if any(name not in known for name in wanted):
        known = _add(folder_fd, wanted, mode, give_away)
    return {name: letter(known[name]) for name in wanted}


def _read(folder_fd: int) -> tuple[bytes, float]:
    """The file's bytes and mtime; empty when there is none yet."""
    try:
        fd = os.open(KEYWORDS_FILE, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder_fd)
    except FileNotFoundError:
        return b"", 0.0
    with open(fd, "rb") as fh:
        return fh.read(), os.fstat(fd).st_mtime


def _add(folder_fd: int, wanted: list[str], mode: int,
         give_away: Callable[[int], None]) -> dict[str, int]:
    lock = _lock(folder_fd, mode)
    renamed = False
    try:
        text, mtime = _read(folder_fd)    # again, under the lock: it may have grown meanwhile
        known = parse(text)
        free = [i for i in range(MAX_KEYWORDS) if i not in known.values()]
        lines = []
        for name in wanted:
            if name in known:
                continue
            if not free:
                raise KeywordsFull(f"{KEYWORDS_FILE}: all {MAX_KEYWORDS} keyword letters are "
                                   f"taken, none left for {name!r}")
            known[name] = free.pop(0)
            lines.append(f"{known[name]} {name}\n")
        if lines:
            if text and not text.endswith(b"\n"):
                text += b"\n"
            data = memoryview(text + "".join(lines).encode("ascii"))
            while data:
                data = data[os.write(lock, data):]
            os.fchmod(lock, mode)
            give_away(lock)
            # Dovecot notices a change by the mtime alone: it must move on, even within a second.
            stamp = max(time.time(), mtime + 1)
            os.utime(lock, (stamp, stamp))
            os.fsync(lock)
            os.rename(LOCK_FILE, KEYWORDS_FILE, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            renamed = True
            os.fsync(folder_fd)
        return known
    finally:
        os.close(lock)
        if not renamed:     # once renamed, a lock file there is someone else's
            _drop_lock(folder_fd)


def _lock(folder_fd: int, mode: int) -> int:
    """Create the lock file exclusively, waiting while another holds it (breaking a stale one)."""
    while True:
        try:
            return os.open(LOCK_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode,
                           dir_fd=folder_fd)
        except FileExistsError:
            try:
                age = time.time() - os.stat(LOCK_FILE, dir_fd=folder_fd,
                                            follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if age > STALE_LOCK:
                _drop_lock(folder_fd)
            else:
                time.sleep(LOCK_POLL)


def _drop_lock(folder_fd: int) -> None:
    """Remove the lock if it is still there (a rename has consumed it when the write succeeded)."""
    try:
        os.unlink(LOCK_FILE, dir_fd=folder_fd)
    except FileNotFoundError:
        pass

"""Maildir files by directory descriptor: what delivery and undo do on disk.

A folder's open ``tmp/``, ``new/`` and ``cur/``; a batch staged in ``tmp/``
and linked into place; ``syncfs``, which makes a whole group durable at
once; giving what root creates the owner of the Maildir; and the small
stat, list, read and unlink calls relative to a directory descriptor, so
that no path is resolved twice.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from restore.targets.base import Outcome, Staged

MAILDIRFOLDER = "maildirfolder"
OUTSIDE_ROOT = "path leaves the mail root"


def real_path(fd: int, fallback: str) -> str:
    """Where an open directory really is (after symlinks), without a race on the path."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)


def _syncfs() -> Any:
    """libc's syncfs(2): one call makes every file of a file system durable (Linux)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
    return function


SYNCFS = _syncfs()


def syncfs(fd: int) -> None:
    """Make durable everything written to the file system ``fd`` is on."""
    if SYNCFS is None or SYNCFS(fd) != 0:
        code = ctypes.get_errno() if SYNCFS is not None else errno.ENOSYS
        raise OSError(code, os.strerror(code))


@dataclass
class Folder:
    """Open directory descriptors of one folder, and the mode of its new files."""

    path: str
    fd: int
    tmp: int
    new: int
    cur: int
    file_mode: int
    letters: dict[str, str] = field(default_factory=dict)   # keyword -> its dovecot-keywords letter
    dev: int = 0

    def close(self) -> None:
        for fd in (self.tmp, self.new, self.cur, self.fd):
            os.close(fd)


@dataclass
class StagedBatch(Staged):
    """Files written into one folder's tmp/, to be linked by ``MaildirTarget.commit``.

    It holds its own copies of the directory descriptors: the session that
    staged it may be closed (a retry, the user's last batch) before the commit.
    """

    size: int
    path: str
    outcomes: list[Outcome | None]
    # (position, tmp name, name in new/ or cur/, into cur/, warning)
    files: list[tuple[int, str, str, bool, str]] = field(default_factory=list)
    tmp: int = -1
    new: int = -1
    cur: int = -1
    dev: int = 0

    def link(self) -> set[int]:
        """Link every file into place; the directories linked into."""
        linked = set()
        for position, name, final, into_cur, warning in self.files:
            directory = self.cur if into_cur else self.new
            try:
                os.link(name, final, src_dir_fd=self.tmp, dst_dir_fd=directory,
                        follow_symlinks=False)
            except FileExistsError:
                self.outcomes[position] = Outcome(ok=False,
                                                  reason=f"{final} exists: name clash, refused")
            except OSError as exc:
                self.outcomes[position] = Outcome(ok=False, reason=f"{name}: {exc.strerror}")
            else:
                self.outcomes[position] = Outcome(ok=True, target_id=final, warning=warning)
                linked.add(directory)
            unlink_quietly(name, self.tmp)
        return linked

    def close(self) -> None:
        for fd in (self.tmp, self.new, self.cur):
            if fd >= 0:
                os.close(fd)
        self.tmp = self.new = self.cur = -1

    def results(self) -> list[Outcome]:
        return [outcome or Outcome(ok=False, reason="not written") for outcome in self.outcomes]



def copy_owner(fd: int, template: os.stat_result) -> None:
    """Give a new file or directory the owner of the Maildir (only root may)."""
    if os.geteuid() == 0:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (template.st_uid, template.st_gid):
            os.fchown(fd, template.st_uid, template.st_gid)



def mark_maildirfolder(folder_fd: int, owner: os.stat_result) -> bool:
    """Make the empty ``maildirfolder`` file Maildir++ readers look for; True if it is new."""
    try:
        fd = os.open(MAILDIRFOLDER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     stat.S_IMODE(owner.st_mode) & 0o666, dir_fd=folder_fd)
    except FileExistsError:
        return False
    try:
        copy_owner(fd, owner)
    finally:
        os.close(fd)
    return True


def exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def listdir(dir_fd: int) -> Iterator[str]:
    try:
        yield from os.listdir(dir_fd)
    except OSError:
        return


def read(name: str, dir_fd: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None
    with open(fd, "rb") as fh:
        return fh.read()


def unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass

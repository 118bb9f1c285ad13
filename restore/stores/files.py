"""What the file stores (maildir, mbox, eml) share: a confined root, a walk, a reader.

Everything a file store reads must lie under its root once symlinks are
resolved: a symlink pointing elsewhere (``/etc/shadow``, another tenant's
mail) is reported, never followed. Refs coming back from a plan file are
checked the same way, so an edited plan cannot make ``inject`` read outside
the archive.

Walks go one directory at a time (``os.scandir``), in sorted name order so
that reports are stable, and skip hidden entries (names starting with
``.``), where mail software keeps index, lock and temporary files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from restore.errors import StoreError, UnreadableItem
from restore.stores.compression import CorruptData, read_all
from restore.stores.sniff import not_a_message_reason

OUTSIDE_ROOT = "symlink pointing outside the store root"


@dataclass(frozen=True, slots=True)
class Found:
    """A regular file to read."""

    rel: str
    path: str
    stat: os.stat_result


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry that cannot be read; ``rel`` is relative to the store root."""

    rel: str
    reason: str


def stamp(st: os.stat_result) -> str:
    """Size and modification time: what changes whenever a file's bytes change."""
    return f"{st.st_size}:{st.st_mtime_ns}"


class StoreRoot:
    """The directory a file store is confined to."""

    def __init__(self, path: str, spec: str):
        self.path = os.path.abspath(path)
        if not os.path.isdir(self.path):
            what = "does not exist" if not os.path.lexists(self.path) else "is not a directory"
            raise StoreError(f"{spec}: {self.path} {what}")
        self.real = os.path.realpath(self.path)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.path).replace(os.sep, "/")

    def contains(self, path: str) -> bool:
        """Whether ``path``, symlinks resolved, lies under the root."""
        real = os.path.realpath(path)
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)

    def entry_problem(self, entry: os.DirEntry[str]) -> str | None:
        """Why a directory entry must not be followed, or None."""
        if entry.is_symlink():
            if not os.path.exists(entry.path):
                return "broken symlink"
            if not self.contains(entry.path):
                return OUTSIDE_ROOT
        return None

    def locate(self, ref: str) -> str:
        """The absolute path a ref names; raises UnreadableItem if it leaves the root."""
        parts = ref.split("/")
        if not ref or "\x00" in ref or ref.startswith("/") or ".." in parts or "" in parts:
            raise UnreadableItem(ref, "not a path inside the store")
        path = os.path.join(self.path, *parts)
        if not os.path.lexists(path):
            raise UnreadableItem(ref, "no such file")
        if not self.contains(path):
            raise UnreadableItem(ref, OUTSIDE_ROOT)
        return path

    def examine(self, path: str) -> Found | Refused:
        """One file named directly (not found by a walk)."""
        rel = self.rel(path)
        if os.path.islink(path) and not self.contains(path):
            return Refused(rel, OUTSIDE_ROOT)
        try:
            st = os.stat(path)
        except OSError as exc:
            return Refused(rel, failure_reason(exc))
        return Found(rel, path, st) if stat.S_ISREG(st.st_mode) else Refused(rel, "not a regular file")

    def walk(self, directory: str | None = None) -> Iterator[Found | Refused]:
        """Regular files under ``directory`` (default: the root), recursively."""
        seen: set[tuple[int, int]] = set()
        yield from self._walk(directory or self.path, seen)

    def _walk(self, directory: str, seen: set[tuple[int, int]]) -> Iterator[Found | Refused]:
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop inside the root
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            yield Refused(self.rel(directory), f"cannot list directory: {failure_reason(exc)}")
            return
        for entry in entries:
            problem = self.entry_problem(entry)
            if problem:
                yield Refused(self.rel(entry.path), problem)
                continue
            try:
                st = entry.stat()
            except OSError as exc:
                yield Refused(self.rel(entry.path), failure_reason(exc))
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk(entry.path, seen)
            elif stat.S_ISREG(st.st_mode):
                yield Found(self.rel(entry.path), entry.path, st)
            else:
                yield Refused(self.rel(entry.path), "not a regular file")


def failure_reason(exc: CorruptData | OSError) -> str:
    """What to tell the administrator about a failed read."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def read_message(path: str, where: str) -> bytes:
    """One message file's bytes, decompressed; raises UnreadableItem with the reason."""
    try:
        data = read_all(path)
    except (CorruptData, OSError) as exc:
        raise UnreadableItem(where, failure_reason(exc)) from None
    reason = not_a_message_reason(data)
    if reason:
        raise UnreadableItem(where, reason)
    return data

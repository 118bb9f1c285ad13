"""What the file stores (maildir, mbox, eml) share: a confined root, a walk, a reader.

Everything a file store reads must lie under its root once symlinks are
resolved: a symlink pointing elsewhere (``/etc/shadow``, another tenant's
mail) is reported, never followed. Refs coming back from a plan file are
checked the same way, so an edited plan cannot make ``inject`` read outside
the archive.

Walks go one directory at a time (``os.scandir``), in sorted name order so
that reports are stable, and skip hidden entries (names starting with
``.``), where mail software keeps index, lock and temporary files.

A file name that is not UTF-8 is read like any other; the refs and
locations it gets are its text (``mailnames.name_text``: ``bad\\xffname.eml``),
and a ref leads back to the exact file.
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from restore.errors import StoreError, UnreadableItem
from restore.mailnames import fs_name, is_inside, name_text
from restore.stores.base import Unit, too_large
from restore.stores.compression import READ_SIZE, CorruptData, decompress
from restore.stores.sniff import HEADER_FIELD, HEADER_SCAN, not_a_message_reason

OUTSIDE_ROOT = "symlink pointing outside the store root"
NOT_INSIDE = "not a path inside the store"
NO_HEADER_BLOCK = "not a message (no header block)"    # as ``sniff`` words it


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


# Covers file systems that keep times in whole seconds, and a little clock skew.
RACY_SECONDS = 2


def directory_stamp(st: os.stat_result) -> str | None:
    """What changes whenever a directory's entries change; None while it may still change unseen.

    A directory changed in the last ``RACY_SECONDS`` gets no stamp: a change
    within the same clock tick as the stamp would not move it.
    """
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_SECONDS * 1_000_000_000:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def root_and_file(path: str, spec: str) -> tuple[StoreRoot, str | None]:
    """The root a store is confined to, and the one file it names when PATH is a file."""
    if os.path.isfile(path):
        path = os.path.realpath(path)  # the file named is trusted, wherever it lives
        return StoreRoot(os.path.dirname(path), spec), os.path.basename(path)
    return StoreRoot(path, spec), None


class StoreRoot:
    """The directory a file store is confined to."""

    def __init__(self, path: str, spec: str):
        self.path = os.path.abspath(path)
        if not os.path.isdir(self.path):
            what = "does not exist" if not os.path.lexists(self.path) else "is not a directory"
            raise StoreError(f"{spec}: {self.path} {what}")
        self.real = os.path.realpath(self.path)
        self._real_dirs: dict[str, str] = {}

    def rel(self, path: str) -> str:
        """``path`` relative to the root, as text (``mailnames.name_text``): what refs hold."""
        return name_text(os.path.relpath(path, self.path).replace(os.sep, "/"))

    def path_of(self, rel: str) -> str:
        """The path of a listed entry's ``rel`` (checked when it was listed)."""
        return os.path.join(self.path, fs_name(rel))

    def contains(self, path: str) -> bool:
        """Whether ``path``, symlinks resolved, lies under the root."""
        directory, name = os.path.split(path)
        real_dir = self._real_dirs.get(directory)
        if real_dir is None:
            # Directories are resolved once (a plan re-opens thousands of items in each).
            if len(self._real_dirs) > 10_000:
                self._real_dirs.clear()
            real_dir = self._real_dirs[directory] = os.path.realpath(directory)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_dir, name)
        return is_inside(real, self.real)

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
        parts = fs_name(ref).split("/")
        if not ref or "\x00" in ref or ref.startswith("/") or ".." in parts or "" in parts:
            raise UnreadableItem(ref, NOT_INSIDE)
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
        if not stat.S_ISREG(st.st_mode):
            return Refused(rel, "not a regular file")
        return Found(rel, path, st)

    def walk(self, directory: str | None = None) -> Iterator[Found | Refused]:
        """Regular files under ``directory`` (default: the root), recursively."""
        seen: set[tuple[int, int]] = set()
        directory = directory or self.path
        yield from self._walk(directory, self.rel(directory), seen)

    def _walk(self, directory: str, rel: str,
              seen: set[tuple[int, int]]) -> Iterator[Found | Refused]:
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop inside the root
                return
            seen.add((st.st_dev, st.st_ino))
            names = sorted_listing(directory)
        except OSError as exc:
            yield Refused(rel, f"cannot list directory: {failure_reason(exc)}")
            return
        prefix = "" if rel == "." else rel + "/"
        for name in names:
            path = os.path.join(directory, name)
            found = self.examine_listed(path, prefix + name_text(name))
            if isinstance(found, str):
                yield from self._walk(path, found, seen)
            else:
                yield found

    def examine_listed(self, path: str, rel: str) -> Found | Refused | str:
        """A listed entry: a file to read, a refusal, or (its rel) a directory to enter."""
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if not os.path.exists(path):
                    return Refused(rel, "broken symlink")
                if not self.contains(path):
                    return Refused(rel, OUTSIDE_ROOT)
                st = os.stat(path)
        except OSError as exc:
            return Refused(rel, failure_reason(exc))
        if stat.S_ISDIR(st.st_mode):
            return rel
        if stat.S_ISREG(st.st_mode):
            return Found(rel, path, st)
        return Refused(rel, "not a regular file")


# Names sorted as objects at a time; a larger directory is sorted in runs of this many.
SORT_RUN = 4096


def sorted_names(names: Iterable[str]) -> Iterator[str]:
    """``names`` (a directory's listing) but hidden ones, in sorted order; listed at the call.

    Held as text, not as objects: a name as a str object costs ~100 bytes,
    as text ~40. The largest directories, an hour of a big gateway's
    archive (~50,000 files) or a busy user's cur/, would otherwise raise
    the heap by megabytes that it keeps for the rest of the run. Runs of
    SORT_RUN names are sorted and joined by NULs (no file name holds one),
    then merged.
    """
    runs: list[str] = []
    run: list[str] = []
    for name in names:
        if name.startswith("."):
            continue
        run.append(name)
        if len(run) == SORT_RUN:
            run.sort()
            runs.append("\0".join(run))
            run = []
    run.sort()
    if not runs:
        return iter(run)
    if run:
        runs.append("\0".join(run))
    return heapq.merge(*map(_names_in, runs))


def sorted_listing(directory: str | int) -> Iterator[str]:
    """A directory's (a path or an open descriptor) names but hidden ones, sorted; listed now."""
    with os.scandir(directory) as entries:
        return sorted_names(entry.name for entry in entries)


def _names_in(run: str) -> Iterator[str]:
    start = 0
    while (end := run.find("\0", start)) >= 0:
        yield run[start:end]
        start = end + 1
    yield run[start:]


def failure_reason(exc: CorruptData | OSError) -> str:
    """What to tell the administrator about a failed read."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def read_message(path: str, where: str, limit: int) -> bytes:
    """One message file's bytes, decompressed; raises UnreadableItem with the reason."""
    return read_message_file(path, where, limit)[0]


def read_message_file(path: str, where: str, limit: int, *, follow_symlinks: bool = True
                      ) -> tuple[bytes, os.stat_result]:
    """A message file's bytes, decompressed, and the file's stat; raises UnreadableItem.

    The file is read whole with bare system calls (the bulk of a scan); a
    compressed one is then decompressed in memory. More than ``limit`` bytes
    (decompressed) is ``too_large``, found without holding more than that.
    Without ``follow_symlinks`` a symlink is refused (``ELOOP``), unread, so
    that the caller can vet it.
    """
    try:
        read = _read_plain(path, 0 if follow_symlinks else os.O_NOFOLLOW, limit)
        if read is None:
            raise UnreadableItem(where, too_large(limit))
        raw, st = read
        data = decompress(raw, limit)
        if data is None:
            raise UnreadableItem(where, too_large(limit))
    except (CorruptData, OSError) as exc:
        raise UnreadableItem(where, failure_reason(exc)) from None
    reason = _not_a_message_reason(data)
    if reason:
        raise UnreadableItem(where, reason)
    return data, st


def _not_a_message_reason(data: bytes) -> str | None:
    """``sniff.not_a_message_reason``, without scanning the whole header block when it need not.

    When the data starts with a non-blank byte and holds no NUL where a
    header block could be, only its first line (its second, after a From_
    line) can decide the verdict: whether it opens with a header field.
    """
    if data[:1].strip() and data.find(b"\x00", 0, HEADER_SCAN) < 0:
        start = 0
        if data.startswith(b"From "):
            start = data.find(b"\n") + 1
            if not start:
                return NO_HEADER_BLOCK
        # The field pattern cannot match across a line end: matching from ``start`` is the
        # line's verdict.
        return None if HEADER_FIELD.match(data, start) else NO_HEADER_BLOCK
    return not_a_message_reason(data)


def _read_plain(path: str, flags: int, limit: int) -> tuple[bytes, os.stat_result] | None:
    """Opened as ``compression.open_regular`` does: read-only, never blocking on a FIFO.

    None, unread, when the file holds more than ``limit`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptData("not a regular file")
        if st.st_size > limit:
            return None
        # The whole file in one call, and one byte more to see whether it grew since the fstat.
        data = os.read(fd, st.st_size + 1)
        if len(data) == st.st_size:   # all of it: a message file is written once, never grown
            return data, st
        chunks, size = [data], len(data)
        while chunk := os.read(fd, READ_SIZE):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return None
        return b"".join(chunks), st
    finally:
        os.close(fd)


# Files asked of the kernel ahead of the one being read. A cold disk serves
# many requests at once far faster than one after another (a reader that
# waits for each file keeps one request in flight).
READ_AHEAD = 32
# Linux: posix_fadvise, and preadv's RWF_NOWAIT to tell whether a file is cached.
_CAN_READ_AHEAD = hasattr(os, "posix_fadvise") and hasattr(os, "RWF_NOWAIT")


def read_ahead(units: Iterable[Unit], root: StoreRoot) -> Iterator[Unit]:
    """``units`` in order; while their files are not cached, each asked for READ_AHEAD units early.

    Whether to ask is decided per batch from the first file: a warm store
    costs one probe per batch, not a system call or three per file.
    """
    units = list(units)
    paths = [root.path_of(unit.path) if unit.path else "" for unit in units]
    if not _CAN_READ_AHEAD or len(units) < 2 or not _uncached(next(filter(None, paths), "")):
        yield from units
        return
    window: deque[Unit] = deque()
    for unit, path in zip(units, paths, strict=True):
        if path:
            _advise(path)
        window.append(unit)
        if len(window) > READ_AHEAD:
            yield window.popleft()
    yield from window


def _open_quietly(path: str) -> int | None:
    """A descriptor for a hint only: no symlink followed, never blocking on a FIFO."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def _uncached(path: str) -> bool:
    """Whether the start of the file at ``path`` had to be read from the disk.

    A read with RWF_NOWAIT that finds nothing cached still starts reading the file in.
    """
    fd = _open_quietly(path) if path else None
    if fd is None:
        return False
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _advise(path: str) -> None:
    """Start reading the file at ``path`` into the page cache, without waiting for it."""
    fd = _open_quietly(path)
    if fd is None:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass    # not a regular file: reading it reports why
    finally:
        os.close(fd)
